//! Downloading pinned Debian packages with an isolated apt configuration.
//!
//! The host's own apt sources are never used or touched: xtask keeps a
//! `sources.list`, package lists and a partial-download area of its own under
//! the cache directory and points `apt-get` at them with `-o Dir::...`
//! options. That works unprivileged, on any Debian-family host (Ubuntu too),
//! whatever suites the host lists, and always for the amd64 architecture the
//! guest needs.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::util::{self, Progress, Unit, note, step};

/// The keyring that signs Debian's archive (package `debian-archive-keyring`).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// Bytes (the Size field of the archive's Packages index): the
    /// download's progress line and its estimate.
    #[serde(default)]
    pub size: Option<u64>,
}

impl Package {
    /// The file name `apt-get download` gives the package.
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_amd64.deb",
            self.name,
            self.version.replace(':', "%3a")
        )
    }
}

/// An apt-get confined to `root` (its own sources, lists and caches).
pub struct Apt {
    root: PathBuf,
    updated: bool,
}

impl Apt {
    /// Set up (or reuse) the isolated apt tree under `root` for `sources`,
    /// given as `(archive URL, suite)` pairs. Changing the sources drops the
    /// old package lists so the next download refreshes them.
    pub fn new(root: &Path, sources: &[(String, String)]) -> anyhow::Result<Self> {
        if !util::have("apt-get") {
            bail!(
                "apt-get is not available: the pinned kernels are Debian packages fetched with apt-get \
                 (any Debian or Ubuntu host works). Elsewhere, boot your own kernel with \
                 `cargo xtask vm --kernel PATH/bzImage [--modules DIR]`"
            );
        }
        if !Path::new(KEYRING).is_file() {
            bail!(
                "{KEYRING} is missing: it verifies Debian's archive. Install it with \
                 `apt-get install debian-archive-keyring` (or run `cargo xtask setup`)"
            );
        }
        for dir in ["lists/partial", "archives/partial", "cache", "state"] {
            let dir = root.join(dir);
            fs::create_dir_all(&dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let mut list = String::from("# Written by `cargo xtask vm` from xtask/kernels.json.\n");
        for (archive, suite) in sources {
            list.push_str(&format!(
                "deb [signed-by={KEYRING}] {archive} {suite} main\n"
            ));
        }
        let path = root.join("sources.list");
        if fs::read_to_string(&path).ok().as_deref() != Some(list.as_str()) {
            // New sources: forget the old lists.
            let lists = root.join("lists");
            for entry in fs::read_dir(&lists)
                .with_context(|| format!("failed to list {}", lists.display()))?
                .flatten()
            {
                if entry.path().is_file() {
                    let _ = fs::remove_file(entry.path());
                }
            }
            fs::write(&path, list)
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        Ok(Self {
            root: root.to_owned(),
            updated: false,
        })
    }

    fn apt_get(&self) -> Command {
        let r = |p: &str| self.root.join(p).display().to_string();
        let mut cmd = Command::new("apt-get");
        let opts = [
            format!("Dir::Etc::sourcelist={}", r("sources.list")),
            "Dir::Etc::sourceparts=-".into(),
            "Dir::Etc::preferences=/dev/null".into(),
            "Dir::Etc::preferencesparts=-".into(),
            format!("Dir::State={}", r("state")),
            format!("Dir::State::Lists={}", r("lists")),
            "Dir::State::status=/dev/null".into(),
            format!("Dir::Cache={}", r("cache")),
            format!("Dir::Cache::Archives={}", r("archives")),
            "APT::Architecture=amd64".into(),
            "APT::Architectures=amd64".into(),
            "Debug::NoLocking=1".into(),
        ];
        cmd.arg("-q");
        for opt in opts {
            cmd.arg("-o").arg(opt);
        }
        if util::is_root() {
            // As root apt drops to `_apt` for downloads, which cannot write
            // into a root-owned cache; stay root instead of warning about it.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    fn have_lists(&self) -> bool {
        fs::read_dir(self.root.join("lists")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("Packages"))
        })
    }

    fn update(&mut self) -> anyhow::Result<()> {
        step("refreshing the package lists for the pinned kernels (isolated apt config)");
        util::output(self.apt_get().arg("update")).with_context(|| {
            format!(
                "apt-get update failed for the kernel sources in {}; check network access to deb.debian.org",
                self.root.join("sources.list").display()
            )
        })?;
        self.updated = true;
        Ok(())
    }

    /// Download `pkg` into `dir` (unless a copy with the right hash is
    /// there) and return its path. The hash is always checked.
    pub fn fetch(&mut self, pkg: &Package, dir: &Path) -> anyhow::Result<PathBuf> {
        let dest = dir.join(pkg.file_name());
        if dest.is_file() {
            if sha256_file(&dest)? == pkg.sha256 {
                return Ok(dest);
            }
            note(format!(
                "{} does not match its pinned SHA-256; downloading it again",
                dest.display()
            ));
            fs::remove_file(&dest)
                .with_context(|| format!("failed to remove {}", dest.display()))?;
        }
        if !self.have_lists() {
            self.update()?;
        }
        let partial = dir.join(format!(".partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)
            .with_context(|| format!("failed to create {}", partial.display()))?;
        step(format!(
            "downloading {}={}{} (once; cached)",
            pkg.name,
            pkg.version,
            pkg.size
                .map(|s| format!(", {:.0} MB", s as f64 / 1e6))
                .unwrap_or_default()
        ));
        let spec = format!("{}={}", pkg.name, pkg.version);
        let mut result = self.download(&spec, &partial, pkg.size);
        if result.is_err() && !self.updated {
            // The lists may predate the pinned version: refresh once, retry.
            self.update()?;
            result = self.download(&spec, &partial, pkg.size);
        }
        if let Err(err) = result {
            bail!(
                "could not download {spec}: {err:#}\n\
                 The pinned version may have left the archive (security suites keep only the \
                 newest build). Pin a current version in xtask/kernels.json (see docs/vm.md), or \
                 fetch the file from https://snapshot.debian.org/binary/{}/ into {}",
                pkg.name,
                dir.display()
            );
        }
        let got = partial.join(pkg.file_name());
        if !got.is_file() {
            bail!(
                "apt-get download {spec} succeeded but {} is not there",
                got.display()
            );
        }
        let hash = sha256_file(&got)?;
        if hash != pkg.sha256 {
            let _ = fs::remove_file(&got);
            bail!(
                "SHA-256 mismatch for {}: expected {} (xtask/kernels.json), got {hash}. The file \
                 was deleted. If the archive really changed the package, update the pin; \
                 otherwise retry (a proxy or mirror may have served a bad copy)",
                pkg.file_name(),
                pkg.sha256
            );
        }
        fs::rename(&got, &dest)
            .with_context(|| format!("failed to move {} to {}", got.display(), dest.display()))?;
        let _ = fs::remove_dir_all(&partial);
        Ok(dest)
    }
}

impl Apt {
    /// `apt-get download spec` into `dir`, with a progress line from the
    /// bytes arriving there (apt's own is silent without a terminal).
    fn download(&self, spec: &str, dir: &Path, size: Option<u64>) -> anyhow::Result<()> {
        let log_path = dir.with_extension("log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let mut cmd = self.apt_get();
        cmd.arg("download")
            .arg(spec)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to run {}", util::display(&cmd)))?;
        // About 4 MB/s from Debian's mirrors, as seen here.
        let guess = Duration::from_secs(size.map_or(60, |s| s / 4_000_000 + 5));
        let mut progress = Progress::new(spec.to_owned(), Unit::Bytes, guess);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            progress.update(bytes_under(dir), size);
            std::thread::sleep(Duration::from_millis(250));
        };
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let _ = fs::remove_file(&log_path);
        if !status.success() {
            bail!(
                "{} failed: {status}\n{}",
                util::display(&cmd),
                text.trim_end()
            );
        }
        progress.finish();
        Ok(())
    }
}

/// Bytes in the files under `dir` (one level of subdirectories, where apt
/// keeps partial downloads).
fn bytes_under(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("failed to read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_file_names_follow_apt() {
        let p = Package {
            name: "linux-image-6.12.117+deb12-amd64".into(),
            version: "6.12.117-1~deb12u1".into(),
            sha256: String::new(),
            size: None,
        };
        assert_eq!(
            p.file_name(),
            "linux-image-6.12.117+deb12-amd64_6.12.117-1~deb12u1_amd64.deb"
        );
        let epoch = Package {
            version: "1:2.0-1".into(),
            ..p
        };
        assert!(epoch.file_name().contains("_1%3a2.0-1_"));
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
