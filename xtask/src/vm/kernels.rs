//! The guest kernels: the pinned list (`xtask/kernels.json`), fetching and
//! unpacking the Debian packages into the cache, and user-supplied kernels.
//!
//! Cache layout, per pinned kernel (`<cache>/vm/kernels/<tag>/`):
//!
//! ```text
//! vmlinuz  config  System.map          from the package (System.map is a stub on Debian)
//! lib/modules/<release>/...            only the modules the guest may load, decompressed,
//!                                      with depmod's metadata restricted to them
//! kernel.json                          written last: what this directory was made from
//! ```
//!
//! The downloaded `.deb` files stay in `<cache>/vm/debs/` so that changing the
//! module set does not download again.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{
    apt::{Apt, Package},
    modules::{ModuleIndex, uncompressed_path},
};
use crate::util::{self, note, step, workspace_root};

/// Every module a guest may load, whatever the options (the per-boot choice
/// is in `guest::wanted_modules`). Dependencies and soft dependencies are
/// added by depmod's data; names that are built into a kernel are skipped.
pub const GUEST_MODULES: &[&str] = &[
    // The command's stdout/stderr/control channel (modules on 6.1 only).
    "virtio_pci",
    "virtio_console",
    // Persistent memory: memmap= regions, ACPI NFIT (QEMU nvdimm), the pmem
    // block driver, device-dax.
    "nd_e820",
    "nfit",
    "nd_pmem",
    "nd_btt",
    "dax_pmem",
    "device_dax",
    // Filesystems.
    "ext4",
    "xfs",
    // The host share.
    "9p",
    "9pnet_virtio",
];

/// Bump when the cache layout or the extraction changes.
const LAYOUT: u32 = 1;

/// `xtask/kernels.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelList {
    #[serde(rename = "_comment", default)]
    _comment: Option<String>,
    pub default: String,
    pub kernels: Vec<KernelSpec>,
}

/// One pinned kernel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Short name used on the command line (`6.12`).
    pub tag: String,
    /// `uname -r` of the kernel (`6.12.117+deb12-amd64`).
    pub release: String,
    /// Debian archive URL and suite the packages come from.
    pub archive: String,
    pub suite: String,
    pub packages: Vec<Package>,
}

impl KernelList {
    /// The checked-in list.
    pub fn load() -> anyhow::Result<Self> {
        let path = workspace_root().join("xtask/kernels.json");
        let text = fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid kernel list {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let list: Self = serde_json::from_str(text)?;
        let mut tags = BTreeSet::new();
        for k in &list.kernels {
            if !tags.insert(k.tag.as_str()) {
                bail!("kernel tag `{}` appears twice", k.tag);
            }
            if k.tag == "all" || k.tag.contains('/') {
                bail!("kernel tag `{}` is reserved or not a plain name", k.tag);
            }
            if k.release.is_empty() || k.release.contains('/') {
                bail!("kernel `{}` has an invalid release `{}`", k.tag, k.release);
            }
            if k.packages.is_empty() {
                bail!("kernel `{}` lists no packages", k.tag);
            }
            for p in &k.packages {
                let hex = p.sha256.len() == 64
                    && p.sha256
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
                if !hex {
                    bail!(
                        "package {} of kernel `{}`: sha256 must be 64 lowercase hex digits",
                        p.name,
                        k.tag
                    );
                }
            }
        }
        if !tags.contains(list.default.as_str()) {
            bail!("default kernel `{}` is not in the list", list.default);
        }
        Ok(list)
    }

    pub fn get(&self, tag: &str) -> anyhow::Result<&KernelSpec> {
        self.kernels.iter().find(|k| k.tag == tag).with_context(|| {
            format!(
                "unknown kernel `{tag}`: pinned kernels are {}; `all` runs each; a path boots your own bzImage",
                self.tags().join(", ")
            )
        })
    }

    pub fn tags(&self) -> Vec<&str> {
        self.kernels.iter().map(|k| k.tag.as_str()).collect()
    }
}

/// A kernel ready to boot.
#[derive(Debug)]
pub struct Kernel {
    /// What to call it in messages and tables (`6.12`, or the image's name).
    pub label: String,
    /// `uname -r`, when known (always for pinned kernels and when a modules
    /// directory was given).
    pub release: Option<String>,
    pub image: PathBuf,
    pub config: Option<PathBuf>,
    pub system_map: Option<PathBuf>,
    pub modules: Option<Modules>,
}

/// A kernel's loadable modules.
#[derive(Debug)]
pub struct Modules {
    /// `.../lib/modules/<release>`.
    pub dir: PathBuf,
    pub index: ModuleIndex,
}

/// What a cache directory was made from.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    layout: u32,
    release: String,
    packages: Vec<String>,
    modules: Vec<String>,
}

impl Stamp {
    fn for_spec(spec: &KernelSpec) -> Self {
        Self {
            layout: LAYOUT,
            release: spec.release.clone(),
            packages: spec.packages.iter().map(|p| p.sha256.clone()).collect(),
            modules: GUEST_MODULES.iter().map(|m| (*m).to_owned()).collect(),
        }
    }
}

fn vm_cache() -> anyhow::Result<PathBuf> {
    Ok(util::cache_dir()?.join("vm"))
}

/// A pinned kernel, downloaded and unpacked on first use.
pub fn pinned(list: &KernelList, spec: &KernelSpec) -> anyhow::Result<Kernel> {
    let dir = vm_cache()?.join("kernels").join(&spec.tag);
    let want = Stamp::for_spec(spec);
    let stamp_path = dir.join("kernel.json");
    let have: Option<Stamp> = fs::read_to_string(&stamp_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if have.as_ref() != Some(&want) {
        unpack(list, spec, &dir, &want)?;
    }
    load_cached(spec, &dir)
}

fn load_cached(spec: &KernelSpec, dir: &Path) -> anyhow::Result<Kernel> {
    let modules_dir = dir.join("lib/modules").join(&spec.release);
    let read = |name: &str| fs::read_to_string(modules_dir.join(name)).unwrap_or_default();
    let index = ModuleIndex::parse(
        &read("modules.dep"),
        &read("modules.softdep"),
        &read("modules.alias"),
        &read("modules.builtin"),
    );
    let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    Ok(Kernel {
        label: spec.tag.clone(),
        release: Some(spec.release.clone()),
        image: dir.join("vmlinuz"),
        config: optional("config"),
        system_map: optional("System.map"),
        modules: Some(Modules {
            dir: modules_dir,
            index,
        }),
    })
}

/// Download, verify, unpack and trim one pinned kernel into `dir`.
fn unpack(list: &KernelList, spec: &KernelSpec, dir: &Path, stamp: &Stamp) -> anyhow::Result<()> {
    let cache = vm_cache()?;
    let debs_dir = cache.join("debs");
    fs::create_dir_all(&debs_dir)
        .with_context(|| format!("failed to create {}", debs_dir.display()))?;
    // One isolated apt tree for all suites in the list.
    let sources: Vec<(String, String)> = list
        .kernels
        .iter()
        .map(|k| (k.archive.clone(), k.suite.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut apt = Apt::new(&cache.join("apt"), &sources)?;
    let debs = spec
        .packages
        .iter()
        .map(|p| apt.fetch(p, &debs_dir))
        .collect::<anyhow::Result<Vec<_>>>()?;

    step(format!("unpacking kernel {} ({})", spec.tag, spec.release));
    if !util::have("dpkg-deb") {
        bail!("dpkg-deb is needed to unpack the kernel packages (package `dpkg`)");
    }
    // Per-process scratch names: two xtasks unpacking at once don't collide.
    let pid = std::process::id();
    let staging = cache.join(format!("kernels/.staging-{}-{pid}", spec.tag));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)
        .with_context(|| format!("failed to create {}", staging.display()))?;
    let _cleanup = RemoveOnDrop(staging.clone());
    for deb in &debs {
        util::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&staging))
            .with_context(|| format!("failed to unpack {}", deb.display()))?;
    }
    let rel = &spec.release;
    // Newer packages install under /usr/lib/modules; depmod (kmod < 31)
    // only looks in /lib/modules, so move the tree there.
    let modroot = staging.join("lib/modules").join(rel);
    let usr_modroot = staging.join("usr/lib/modules").join(rel);
    if !modroot.exists() && usr_modroot.exists() {
        fs::create_dir_all(staging.join("lib/modules"))?;
        fs::rename(&usr_modroot, &modroot).with_context(|| {
            format!(
                "failed to move {} to {}",
                usr_modroot.display(),
                modroot.display()
            )
        })?;
    }
    let find = |candidates: &[PathBuf]| candidates.iter().find(|p| p.is_file()).cloned();
    let image = find(&[
        staging.join(format!("boot/vmlinuz-{rel}")),
        modroot.join("vmlinuz"),
    ])
    .with_context(|| {
        format!(
            "no kernel image (boot/vmlinuz-{rel} or lib/modules/{rel}/vmlinuz) in the packages of kernel {}; \
             is `release` right in xtask/kernels.json?",
            spec.tag
        )
    })?;
    let config = find(&[
        staging.join(format!("boot/config-{rel}")),
        modroot.join("config"),
    ]);
    let system_map = find(&[
        staging.join(format!("boot/System.map-{rel}")),
        modroot.join("System.map"),
    ]);

    let index = depmod(&staging, rel)?;
    let order = index.load_order(GUEST_MODULES);
    if !order.missing.is_empty() {
        bail!(
            "kernel {} has neither a module nor a built-in for: {} (see GUEST_MODULES in xtask/src/vm/kernels.rs)",
            spec.tag,
            order.missing.join(", ")
        );
    }
    let keep: BTreeSet<String> = order.order.iter().cloned().collect();

    // Assemble the new cache directory next to the old one, then swap.
    let tmp = dir.with_extension(format!("tmp-{pid}"));
    let _ = fs::remove_dir_all(&tmp);
    // Gone after the rename below; removes a half-built one on error.
    let _tmp_cleanup = RemoveOnDrop(tmp.clone());
    let tmp_mods = tmp.join("lib/modules").join(rel);
    fs::create_dir_all(&tmp_mods)
        .with_context(|| format!("failed to create {}", tmp_mods.display()))?;
    copy(&image, &tmp.join("vmlinuz"))?;
    if let Some(config) = &config {
        copy(config, &tmp.join("config"))?;
    }
    if let Some(map) = &system_map {
        copy(map, &tmp.join("System.map"))?;
    }
    for name in &keep {
        let rel_path = index.path(name).context("module vanished from the index")?;
        let data = read_module(&modroot.join(rel_path))?;
        let out = tmp_mods.join(uncompressed_path(rel_path));
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&out, data).with_context(|| format!("failed to write {}", out.display()))?;
    }
    let restricted = index.restricted(&keep);
    let [dep, softdep, alias, builtin] = restricted.to_files();
    for (name, text) in [
        ("modules.dep", dep),
        ("modules.softdep", softdep),
        ("modules.alias", alias),
        ("modules.builtin", builtin),
    ] {
        fs::write(tmp_mods.join(name), text)?;
    }
    fs::write(
        tmp.join("kernel.json"),
        serde_json::to_string_pretty(stamp)?,
    )?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)
        .with_context(|| format!("failed to move {} to {}", tmp.display(), dir.display()))?;
    note(format!(
        "kernel {}: {} modules kept: {}",
        spec.tag,
        keep.len(),
        order.order.join(" ")
    ));
    Ok(())
}

/// Run depmod on an unpacked tree and read its results.
fn depmod(root: &Path, release: &str) -> anyhow::Result<ModuleIndex> {
    if !util::have("depmod") && !Path::new("/sbin/depmod").is_file() {
        bail!(
            "depmod is needed to order the guest's modules (package `kmod`; run `cargo xtask setup`)"
        );
    }
    let depmod = if util::have("depmod") {
        "depmod"
    } else {
        "/sbin/depmod"
    };
    util::output(Command::new(depmod).arg("-b").arg(root).arg(release))
        .context("depmod failed on the unpacked kernel")?;
    let dir = root.join("lib/modules").join(release);
    read_index(&dir)
}

fn read_index(dir: &Path) -> anyhow::Result<ModuleIndex> {
    let dep = fs::read_to_string(dir.join("modules.dep")).with_context(|| {
        format!(
            "{} has no modules.dep; run `depmod -b <root> <release>` on it (or pass the directory \
             `make modules_install` created)",
            dir.display()
        )
    })?;
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    Ok(ModuleIndex::parse(
        &dep,
        &read("modules.softdep"),
        &read("modules.alias"),
        &read("modules.builtin"),
    ))
}

/// A module file's contents, decompressed.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some(("xz", "xz-utils"))
    } else if name.ends_with(".ko.zst") {
        Some(("zstd", "zstd"))
    } else if name.ends_with(".ko.gz") {
        Some(("gzip", "gzip"))
    } else {
        None
    };
    match tool {
        None => fs::read(path).with_context(|| format!("failed to read {}", path.display())),
        Some((tool, package)) => {
            if !util::have(tool) {
                bail!(
                    "`{tool}` is needed to decompress {} (package `{package}`)",
                    path.display()
                );
            }
            Ok(util::output(Command::new(tool).arg("-dc").arg(path))?.stdout)
        }
    }
}

/// Removes a scratch directory however the function using it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("failed to copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// A kernel the user built: `image` (bzImage) and optionally the modules
/// directory `make modules_install` wrote (`.../lib/modules/<release>`).
pub fn custom(image: &Path, modules: Option<&Path>) -> anyhow::Result<Kernel> {
    if !image.is_file() {
        bail!(
            "kernel image {} does not exist (--kernel takes 6.1, 6.12, 7.3, all, or a bzImage path)",
            image.display()
        );
    }
    let label = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "custom".into());
    let modules = match modules {
        None => None,
        Some(dir) => {
            let index = read_index(dir)?;
            Some(Modules {
                dir: dir.to_owned(),
                index,
            })
        }
    };
    let release = modules
        .as_ref()
        .and_then(|m| m.dir.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let config = modules
        .as_ref()
        .map(|m| m.dir.join("build/.config"))
        .filter(|p| p.is_file());
    Ok(Kernel {
        label,
        release,
        image: image.to_owned(),
        config,
        system_map: None,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{
      "default": "6.12",
      "kernels": [
        { "tag": "6.12", "release": "6.12.117+deb12-amd64",
          "archive": "http://deb.debian.org/debian-security", "suite": "bookworm-security",
          "packages": [ { "name": "linux-image-6.12.117+deb12-amd64", "version": "6.12.117-1~deb12u1",
                          "sha256": "803d36a7cda13355ae8152122470288b2636f19f1cb58162dd9d8b408af9b1b4" } ] }
      ]
    }"#;

    #[test]
    fn parses_the_list() {
        let list = KernelList::parse(LIST).unwrap();
        assert_eq!(list.default, "6.12");
        let k = list.get("6.12").unwrap();
        assert_eq!(k.packages[0].version, "6.12.117-1~deb12u1");
        assert!(list.get("5.10").is_err());
    }

    #[test]
    fn the_checked_in_list_is_valid() {
        let list = KernelList::load().unwrap();
        assert_eq!(list.tags(), ["6.1", "6.12", "7.3"]);
        assert_eq!(list.get("7.3").unwrap().packages.len(), 3);
    }

    #[test]
    fn rejects_bad_lists() {
        let bad_hash = LIST.replace("803d36a7", "803D36A7");
        assert!(KernelList::parse(&bad_hash).is_err());
        let bad_default = LIST.replace(r#""default": "6.12""#, r#""default": "9.9""#);
        assert!(KernelList::parse(&bad_default).is_err());
        let unknown_field = LIST.replace(r#""suite""#, r#""suit": "x", "suite""#);
        assert!(KernelList::parse(&unknown_field).is_err());
        let reserved = LIST.replace(r#""tag": "6.12""#, r#""tag": "all""#);
        assert!(KernelList::parse(&reserved).is_err());
    }
}
