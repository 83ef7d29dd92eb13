//! `cargo xtask vm`: its options, and running them on one kernel or all.

use super::*;

#[derive(Debug, Parser)]
pub struct Options {
    /// Kernel: a pinned tag (6.1, 6.12, 7.3; default 6.12), `all`, or the
    /// path of your own bzImage.
    #[arg(long, value_name = "TAG|all|PATH")]
    pub kernel: Option<String>,
    /// With --kernel PATH: its modules directory (.../lib/modules/RELEASE,
    /// with modules.dep).
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// Filesystem on the pmem device.
    #[arg(long, value_enum, default_value_t)]
    pub fs: Fs,
    /// Namespace alignment: 2m lets DAX map 2 MiB pages (PMDs).
    #[arg(long, value_enum, default_value_t)]
    pub align: Align,
    /// How persistent memory is presented to the guest.
    #[arg(long, value_enum, default_value_t)]
    pub pmem: PmemKind,
    /// fsdax: filesystem at /mnt/dax; devdax: /dev/daxX.Y, no filesystem.
    #[arg(long, value_enum, default_value_t)]
    pub mode: NsMode,
    /// Where the namespace's struct pages live.
    #[arg(long, value_enum, default_value_t)]
    pub memmap_on: MemmapOn,
    /// Size of the persistent memory, MiB.
    #[arg(long, value_name = "MiB", default_value_t = 512)]
    pub pmem_size: u64,
    /// Host directory to mount read-write at /share in the guest.
    #[arg(long, value_name = "DIR")]
    pub share: Option<PathBuf>,
    /// Guest RAM, MiB (the memmap= region is carved out of it).
    #[arg(long, value_name = "MiB", default_value_t = 2048)]
    pub memory: u64,
    /// Guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// QEMU CPU model (default: max,la57=off under TCG, host under KVM).
    #[arg(long, value_name = "MODEL")]
    pub cpu: Option<String>,
    /// Give up (and fail) after this many seconds, boot included.
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub timeout: u64,
    /// Seconds a guest may go on after a panic/oops/stall before it is killed.
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub grace: u64,
    /// Accelerator: auto uses KVM only if a probe boot works (cached).
    #[arg(long, value_enum, default_value_t)]
    pub accel: AccelChoice,
    /// Extra kernel command-line parameter (repeatable).
    #[arg(long, value_name = "PARAM")]
    pub append: Vec<String>,
    /// A kernel oops is the expected outcome: pass if one happens.
    #[arg(long)]
    pub expect_oops: bool,
    /// Show the kernel console while the guest runs (on stderr).
    #[arg(long)]
    pub console: bool,
    /// Do not build refscope and the workload first; use what the target
    /// directory has.
    #[arg(long)]
    pub no_build: bool,
    /// The command to run in the guest; none starts a shell on the console.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `cargo xtask vm`.
pub fn run_cli(opts: &Options) -> anyhow::Result<ExitCode> {
    let list = KernelList::load()?;
    let kernel_arg = opts.kernel.clone().unwrap_or_else(|| list.default.clone());
    let choices: Vec<KernelChoice> = if kernel_arg == "all" {
        list.tags()
            .into_iter()
            .map(|t| KernelChoice::Pinned(t.to_owned()))
            .collect()
    } else if list.get(&kernel_arg).is_ok() {
        vec![KernelChoice::Pinned(kernel_arg.clone())]
    } else if kernel_arg.contains('/') || Path::new(&kernel_arg).is_file() {
        vec![KernelChoice::Custom {
            image: PathBuf::from(&kernel_arg),
            modules: opts.modules.clone(),
        }]
    } else {
        // Let the list explain what exists.
        list.get(&kernel_arg)?;
        unreachable!("an unknown tag is an error");
    };
    if opts.modules.is_some() && !matches!(choices.as_slice(), [KernelChoice::Custom { .. }]) {
        bail!("--modules goes with --kernel PATH (pinned kernels bring their own modules)");
    }
    let command = (!opts.command.is_empty()).then(|| opts.command.clone());
    if command.is_none() && choices.len() > 1 {
        bail!("--kernel all needs a command (`-- CMD`); the interactive shell boots one kernel");
    }

    let binaries = guest_binaries(opts.no_build)?;
    let mut results = Vec::new();
    for kernel in choices {
        let cfg = VmConfig {
            fs: opts.fs,
            align: opts.align,
            pmem: opts.pmem,
            mode: opts.mode,
            memmap_on: opts.memmap_on,
            pmem_mib: opts.pmem_size,
            memory_mib: opts.memory,
            cpus: opts.cpus,
            cpu: opts.cpu.clone(),
            share: opts
                .share
                .as_ref()
                .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())),
            binaries: binaries.clone(),
            timeout: Duration::from_secs(opts.timeout),
            grace: Duration::from_secs(opts.grace),
            accel: opts.accel,
            append: opts.append.clone(),
            echo_console: opts.console,
            ..VmConfig::new(kernel.clone(), command.clone())
        };
        let label = match &kernel {
            KernelChoice::Pinned(t) => t.clone(),
            KernelChoice::Custom { image, .. } => image.display().to_string(),
        };
        step(format!(
            "kernel {label}: {}, pmem from {}, align {}, struct pages in {}{}",
            match cfg.mode {
                NsMode::Fsdax => format!("{} with DAX at /mnt/dax", value_name(cfg.fs)),
                NsMode::Devdax => "device-dax".into(),
            },
            value_name(cfg.pmem),
            value_name(cfg.align),
            value_name(cfg.memmap_on),
            if command.is_none() {
                ", interactive shell"
            } else {
                ""
            }
        ));
        let outcome = run(&cfg)?;
        if command.is_none() {
            return Ok(ExitCode::from(
                outcome.exit_status.unwrap_or(1).clamp(0, 255) as u8,
            ));
        }
        match (outcome.boot_secs, outcome.guest_uptime_secs) {
            (Some(b), Some(u)) => note(format!(
                "{}: boot-to-command {b:.1} s (guest uptime {u:.1} s), total {:.1} s, accel {}",
                outcome.kernel, outcome.total_secs, outcome.accel
            )),
            _ => note(format!(
                "{}: the command never started; total {:.1} s, accel {}",
                outcome.kernel, outcome.total_secs, outcome.accel
            )),
        }
        for i in &outcome.incidents {
            if let Some(why) = outcome.ignored_artifact(i) {
                note(format!("ignored ({why}): {}", i.headline()));
            }
        }
        if outcome.verdict(opts.expect_oops).is_err() {
            eprint!("{}", outcome.failure_report(opts.expect_oops));
        } else if opts.expect_oops {
            for i in outcome
                .incidents
                .iter()
                .filter(|i| i.kind == IncidentKind::Oops)
            {
                note(format!("expected oops seen: {}", i.headline()));
            }
        }
        results.push(outcome);
    }
    if results.len() > 1 {
        eprint!("{}", table(&results, opts.expect_oops));
    }
    let code = results
        .iter()
        .map(|o| o.exit_code(opts.expect_oops))
        .find(|&c| c != 0)
        .unwrap_or(0);
    Ok(ExitCode::from(code))
}

/// An option value as spelled on the command line.
fn value_name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// Per-kernel result table.
fn table(results: &[VmOutcome], expect_oops: bool) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{:<8} {:<6} {:>5} {:>12} {:>8}  notes",
        "kernel", "result", "exit", "boot-to-cmd", "total"
    );
    for o in results {
        let verdict = o.verdict(expect_oops);
        let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.1}s"));
        let _ = writeln!(
            t,
            "{:<8} {:<6} {:>5} {:>12} {:>8}  {}",
            o.kernel,
            if verdict.is_ok() { "PASS" } else { "FAIL" },
            o.exit_status.map_or("-".into(), |c| c.to_string()),
            secs(o.boot_secs),
            secs(Some(o.total_secs)),
            verdict.err().unwrap_or_default()
        );
    }
    t
}

/// The tag of the default kernel (xtask/kernels.json).
pub fn default_kernel() -> anyhow::Result<String> {
    Ok(KernelList::load()?.default)
}

/// refscope and the workload for /bin, built unless `no_build`. Either
/// way the refscope must have its eBPF programs ([`build::check_programs`]).
pub fn guest_binaries(no_build: bool) -> anyhow::Result<Vec<PathBuf>> {
    if !no_build {
        let b = build::build().context("building refscope for the guest failed")?;
        return Ok(vec![b.refscope, b.workload]);
    }
    let dir = util::release_dir();
    let mut found = Vec::new();
    for name in ["refscope", "refscope-workload"] {
        let p = dir.join(name);
        if !p.is_file() {
            bail!(
                "--no-build: {} is not built; run without --no-build (or `cargo xtask build`)",
                p.display()
            );
        }
        found.push(p);
    }
    build::check_programs(&found[0])
        .context("--no-build: the refscope in the target directory cannot trace")?;
    Ok(found)
}
