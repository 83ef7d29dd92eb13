//! What goes into the guest: the initramfs (busybox, the init script, the
//! refscope binaries, real mkfs tools with their libraries, the kernel's
//! modules) and the per-boot settings the init script reads.

use std::{
    collections::BTreeSet,
    fs,
    io::BufWriter,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::{
    Align, Fs, MemmapOn, NsMode, PmemKind, VmConfig,
    kernels::{Kernel, read_module},
    modules::uncompressed_path,
    newc::Newc,
};

/// The guest's init script.
const INIT: &str = include_str!("init.sh");

/// Shell helpers every guest script sources (`. /lib/refscope/guest.sh`).
const GUEST_LIB: &str = include_str!("guest-lib.sh");

/// Where the guest finds them.
pub const GUEST_LIB_PATH: &str = "/lib/refscope/guest.sh";

/// Directories created in every guest.
const DIRS: &[&str] = &[
    "bin",
    "sbin",
    "etc",
    "etc/refscope",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "root",
    "mnt",
    "mnt/dax",
    "share",
    "boot",
    "lib",
    "lib/modules",
    "lib/refscope",
];

/// Modules this boot loads, in the order the guest should ask for them
/// (dependencies are added by the module index).
pub fn wanted_modules(cfg: &VmConfig) -> Vec<&'static str> {
    let mut want = vec!["virtio_pci", "virtio_console"];
    if cfg.mode == NsMode::Fsdax {
        want.push(match cfg.fs {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
        });
    }
    if cfg.share.is_some() {
        want.extend(["9p", "9pnet_virtio"]);
    }
    // Drivers before the bus that brings the region, so namespaces bind as
    // they appear.
    want.push("nd_pmem");
    if cfg.mode == NsMode::Devdax {
        want.extend(["dax_pmem", "device_dax"]);
    }
    want.push(match cfg.pmem {
        PmemKind::Memmap => "nd_e820",
        PmemKind::Nvdimm => "nfit",
    });
    want
}

/// `/etc/refscope/vm.conf`, sourced by the init script.
pub fn vm_conf(cfg: &VmConfig, kernel: &Kernel, interactive: bool) -> String {
    let vars: [(&str, String); 10] = [
        ("VM_KERNEL", kernel.label.clone()),
        ("VM_RELEASE", kernel.release.clone().unwrap_or_default()),
        (
            "VM_PMEM",
            match cfg.pmem {
                PmemKind::Memmap => "memmap",
                PmemKind::Nvdimm => "nvdimm",
            }
            .into(),
        ),
        (
            "VM_MODE",
            match cfg.mode {
                NsMode::Fsdax => "fsdax",
                NsMode::Devdax => "devdax",
            }
            .into(),
        ),
        (
            "VM_FS",
            match cfg.fs {
                Fs::Ext4 => "ext4",
                Fs::Xfs => "xfs",
            }
            .into(),
        ),
        (
            "VM_ALIGN",
            match cfg.align {
                Align::K4 => "4096",
                Align::M2 => "2097152",
                Align::G1 => "1073741824",
            }
            .into(),
        ),
        (
            "VM_MEMMAP_ON",
            match cfg.memmap_on {
                MemmapOn::Pmem => "pmem",
                MemmapOn::Ram => "ram",
            }
            .into(),
        ),
        ("VM_SHARE", u8::from(cfg.share.is_some()).to_string()),
        ("VM_INTERACTIVE", u8::from(interactive).to_string()),
        ("VM_PMEM_MIB", cfg.pmem_mib.to_string()),
    ];
    let mut text = String::from("# Written by `cargo xtask vm`; read by /init.\n");
    for (k, v) in vars {
        text.push_str(&format!("{k}={}\n", shell_quote(&v)));
    }
    text
}

/// `/etc/refscope/command`: the user's command, exactly as given.
pub fn command_script(argv: &[String]) -> String {
    let words: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!("exec {}\n", words.join(" "))
}

/// Quote for a POSIX shell: `'...'`, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Everything the initramfs needs besides the kernel-specific parts.
pub struct Contents<'a> {
    pub kernel: &'a Kernel,
    /// Module names to load, in order.
    pub load: &'a [String],
    pub conf: String,
    /// `None` for an interactive shell.
    pub command: Option<String>,
    /// Extra executables, installed as `/bin/<file name>`.
    pub binaries: &'a [PathBuf],
}

/// Write the initramfs (uncompressed newc: the kernel unpacks it fastest,
/// and TCG makes decompression slow).
pub fn write_initramfs(contents: &Contents<'_>, out: &Path) -> anyhow::Result<()> {
    let file =
        fs::File::create(out).with_context(|| format!("failed to create {}", out.display()))?;
    let mut ar = Archive {
        newc: Newc::new(BufWriter::new(file)),
        dirs: BTreeSet::new(),
        files: BTreeSet::new(),
    };
    for dir in DIRS {
        ar.dir(dir)?;
    }
    ar.file("init", 0o755, INIT.as_bytes())?;
    ar.file(&GUEST_LIB_PATH[1..], 0o644, GUEST_LIB.as_bytes())?;
    ar.file("etc/refscope/vm.conf", 0o644, contents.conf.as_bytes())?;
    ar.file(
        "etc/refscope/command",
        0o644,
        contents.command.as_deref().unwrap_or("").as_bytes(),
    )?;
    ar.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    ar.file("etc/group", 0o644, b"root:x:0:\n")?;
    if Path::new("/etc/mke2fs.conf").is_file() {
        ar.host_file("etc/mke2fs.conf", Path::new("/etc/mke2fs.conf"), 0o644)?;
    }

    // busybox at /bin/busybox: the init script's interpreter.
    let busybox = find_tool("busybox", "busybox-static")?;
    ar.executable("bin/busybox", &busybox)?;
    // The rest of the applets are linked by /init (`busybox --install`).
    ar.symlink("bin/sh", "busybox")?;
    // Real mkfs tools: busybox's mke2fs applet cannot make ext4 (-t).
    ar.executable("sbin/mke2fs", &find_tool("mke2fs", "e2fsprogs")?)?;
    ar.executable("sbin/mkfs.xfs", &find_tool("mkfs.xfs", "xfsprogs")?)?;
    ar.symlink("sbin/mkfs.ext4", "mke2fs")?;
    for bin in contents.binaries {
        let name = bin
            .file_name()
            .with_context(|| format!("{} has no file name", bin.display()))?
            .to_string_lossy()
            .into_owned();
        ar.executable(&format!("bin/{name}"), bin)?;
    }

    let kernel = contents.kernel;
    if let Some(rel) = &kernel.release {
        if let Some(config) = &kernel.config {
            ar.host_file(&format!("boot/config-{rel}"), config, 0o644)?;
        }
        if let Some(map) = &kernel.system_map {
            ar.host_file(&format!("boot/System.map-{rel}"), map, 0o644)?;
        }
    }
    let mut load_list = String::new();
    if let Some(modules) = &kernel.modules {
        let rel = kernel
            .release
            .as_deref()
            .context("a kernel with modules needs a release name")?;
        let base = format!("lib/modules/{rel}");
        let names: BTreeSet<String> = contents.load.iter().cloned().collect();
        for name in &names {
            let path = modules
                .index
                .path(name)
                .with_context(|| format!("module {name} is not in {}", modules.dir.display()))?;
            let data = read_module(&modules.dir.join(path))?;
            ar.file(&format!("{base}/{}", uncompressed_path(path)), 0o644, &data)?;
        }
        ar.file(
            &format!("{base}/modules.dep"),
            0o644,
            modules.index.subset_dep(&names).as_bytes(),
        )?;
        for name in contents.load {
            let path = modules.index.path(name).context("module vanished")?;
            load_list.push_str(uncompressed_path(path));
            load_list.push('\n');
        }
    }
    ar.file("etc/refscope/modules", 0o644, load_list.as_bytes())?;
    ar.newc
        .finish()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .with_context(|| format!("failed to write {}", out.display()))?;
    Ok(())
}

/// A newc archive that creates parent directories on demand and copies
/// host executables with the shared libraries they need.
struct Archive<W: std::io::Write> {
    newc: Newc<W>,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
}

impl<W: std::io::Write> Archive<W> {
    fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.newc
            .dir(path, 0o755)
            .with_context(|| format!("failed to add /{path} to the initramfs"))?;
        self.dirs.insert(path.to_owned());
        Ok(())
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> anyhow::Result<()> {
        if !self.files.insert(path.to_owned()) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.newc
            .file(path, perm, data)
            .with_context(|| format!("failed to add /{path} to the initramfs"))
    }

    fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        if !self.files.insert(path.to_owned()) {
            return Ok(());
        }
        self.newc
            .symlink(path, target)
            .with_context(|| format!("failed to add /{path} to the initramfs"))
    }

    fn host_file(&mut self, path: &str, host: &Path, perm: u32) -> anyhow::Result<()> {
        let data = fs::read(host).with_context(|| format!("failed to read {}", host.display()))?;
        self.file(path, perm, &data)
    }

    /// An executable plus, if it is dynamically linked, its libraries at the
    /// paths the host's loader found them (so the guest's loader finds them
    /// there too).
    fn executable(&mut self, path: &str, host: &Path) -> anyhow::Result<()> {
        self.host_file(path, host, 0o755)?;
        for lib in shared_libraries(host)? {
            let guest = lib.to_string_lossy().trim_start_matches('/').to_owned();
            self.host_file(&guest, &lib, 0o755)?;
        }
        Ok(())
    }
}

/// A host tool by name, from PATH or the sbin directories.
fn find_tool(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "`{name}` is not installed; the guest needs it (package `{package}`; run `cargo xtask setup`)"
            )
        })
}

/// The shared libraries `exe` loads, by asking the host's `ldd`.
fn shared_libraries(exe: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .with_context(|| format!("failed to run ldd on {}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static executables: "not a dynamic executable" (exit 1).
        let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
        if all.contains("not a dynamic executable") || all.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", exe.display(), all.trim());
    }
    parse_ldd(&text).with_context(|| format!("cannot copy the libraries of {}", exe.display()))
}

/// Library paths from `ldd` output.
pub fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") || line.is_empty() {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("library {} not found on the host", name.trim());
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\
\tlinux-vdso.so.1 (0x00007ffc2d5f5000)
\tlibext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x00007f4c9a1c0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f4c99fdf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f4c9a27a000)
";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libext2fs.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn commands_are_quoted_for_sh() {
        assert_eq!(shell_quote("grep"), "grep");
        assert_eq!(shell_quote(" /mnt/dax "), "' /mnt/dax '");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(
            command_script(&[
                "sh".into(),
                "-c".into(),
                "grep \" /mnt/dax \" /proc/mounts".into()
            ]),
            "exec sh -c 'grep \" /mnt/dax \" /proc/mounts'\n"
        );
    }
}
