//! What one guest boot is: its kernel, persistent memory, namespace,
//! filesystem, size, command and limits.

use super::*;

/// Filesystem made on the pmem device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Fs {
    #[default]
    Ext4,
    Xfs,
}

/// Namespace (and with it the largest page-table entry) alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Align {
    /// 4 KiB pages only.
    #[default]
    #[value(name = "4k")]
    K4,
    /// 2 MiB: DAX mappings can use PMDs.
    #[value(name = "2m")]
    M2,
    /// 1 GiB: device-dax can map PUDs (needs --mode devdax, and more than
    /// 2 GiB of pmem: the pfn info block takes the first GiB).
    #[value(name = "1g")]
    G1,
}

/// How the guest gets persistent memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PmemKind {
    /// `memmap=SIZE!OFFSET` on the kernel command line (nd_e820).
    #[default]
    Memmap,
    /// A QEMU `-device nvdimm` described by an ACPI NFIT (nfit).
    Nvdimm,
}

/// What the namespace becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum NsMode {
    /// A pmem block device with a DAX filesystem at /mnt/dax.
    #[default]
    Fsdax,
    /// A device-dax character device, /dev/daxX.Y (no filesystem).
    Devdax,
}

/// Where the namespace's `struct page` array lives (pfn/dax `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum MemmapOn {
    /// On the device itself.
    #[default]
    Pmem,
    /// In ordinary RAM.
    Ram,
}

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AccelChoice {
    /// KVM if a probe boot under KVM succeeds on this host (cached), else TCG.
    #[default]
    Auto,
    Tcg,
    Kvm,
}

/// Which kernel to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// A tag from xtask/kernels.json.
    Pinned(String),
    /// Your own bzImage and, optionally, its `lib/modules/<release>`.
    Custom {
        image: PathBuf,
        modules: Option<PathBuf>,
    },
}

/// One guest boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: KernelChoice,
    pub fs: Fs,
    pub align: Align,
    pub pmem: PmemKind,
    pub mode: NsMode,
    pub memmap_on: MemmapOn,
    pub pmem_mib: u64,
    pub memory_mib: u64,
    pub cpus: u32,
    /// QEMU CPU model; default `max,la57=off` (TCG) or `host` (KVM).
    pub cpu: Option<String>,
    /// Host directory mounted read-write at /share.
    pub share: Option<PathBuf>,
    /// The command; `None` starts a shell on the console.
    pub command: Option<Vec<String>>,
    /// Run the command on the console, attached to our terminal like the
    /// shell (for TUIs), instead of on separate channels. The outcome then
    /// has no exit status, incidents or boot time.
    pub tty: bool,
    /// Executables installed as `/bin/<file name>`.
    pub binaries: Vec<PathBuf>,
    /// Wall-clock limit for the whole run, boot included.
    pub timeout: Duration,
    /// How long a guest may go on after a panic, oops, stall or lockup
    /// before it is killed.
    pub grace: Duration,
    pub accel: AccelChoice,
    /// Extra kernel command-line parameters.
    pub append: Vec<String>,
    /// Copy the command's output to ours while it runs.
    pub echo_output: bool,
    /// Copy the kernel console to our stderr while it runs.
    pub echo_console: bool,
}

impl VmConfig {
    /// The defaults of `cargo xtask vm`.
    pub fn new(kernel: KernelChoice, command: Option<Vec<String>>) -> Self {
        Self {
            kernel,
            fs: Fs::default(),
            align: Align::default(),
            pmem: PmemKind::default(),
            mode: NsMode::default(),
            memmap_on: MemmapOn::default(),
            pmem_mib: 512,
            memory_mib: 2048,
            cpus: 2,
            cpu: None,
            share: None,
            command,
            tty: false,
            binaries: Vec::new(),
            timeout: Duration::from_secs(300),
            grace: Duration::from_secs(5),
            accel: AccelChoice::default(),
            append: Vec::new(),
            echo_output: true,
            echo_console: false,
        }
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.pmem_mib < 16 || !self.pmem_mib.is_multiple_of(2) {
            bail!("--pmem-size must be an even number of MiB, at least 16");
        }
        if self.pmem == PmemKind::Memmap && self.memory_mib < MEMMAP_OFFSET_MIB + self.pmem_mib {
            bail!(
                "--memory {} is too small: the memmap= region sits at {MEMMAP_OFFSET_MIB} MiB and is {} MiB, \
                 so --memory must be at least {}",
                self.memory_mib,
                self.pmem_mib,
                MEMMAP_OFFSET_MIB + self.pmem_mib
            );
        }
        if self.cpus == 0 {
            bail!("--cpus must be at least 1");
        }
        if let Some(dir) = &self.share
            && !dir.is_dir()
        {
            bail!("--share {}: not a directory", dir.display());
        }
        if self.command.as_ref().is_some_and(Vec::is_empty) {
            bail!("empty command after --");
        }
        Ok(())
    }
}
