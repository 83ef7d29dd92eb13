//! Running QEMU: the command line, the channels to the guest, and the
//! watchdog that turns a wedged guest into a failure instead of a hang.
//!
//! Channels (batch mode), each a unix socket QEMU connects to at start-up:
//!
//! | socket        | guest side                            | host side                        |
//! |---------------|---------------------------------------|----------------------------------|
//! | `console`     | ttyS0: kernel console, init messages  | scanned for splats, kept as log  |
//! | `stdout`      | virtio port `refscope.stdout`         | copied to our stdout             |
//! | `stderr`      | virtio port `refscope.stderr`         | copied to our stderr             |
//! | `control`     | virtio port `refscope.control`        | start time, taint, exit status   |
//!
//! Keeping the command's output off the console means a splat never lands in
//! the middle of it, and a command printing `BUG:` is not mistaken for one.

use std::{
    ffi::OsString,
    io::{self, BufRead as _, BufReader, Read as _},
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    PmemKind, VmConfig,
    console::{Incident, IncidentKind, Scanner},
};

/// Where the `memmap=` region starts in guest-physical memory.
pub const MEMMAP_OFFSET_MIB: u64 = 1024;

/// The accelerator a run actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcg => "tcg",
            Self::Kvm => "kvm",
        }
    }
}

/// Everything needed to start QEMU once.
pub struct Launch<'a> {
    pub cfg: &'a VmConfig,
    pub image: &'a Path,
    pub initramfs: &'a Path,
    /// Holds the sockets; short path (unix socket paths are limited).
    pub run_dir: &'a Path,
    pub accel: Accel,
    pub interactive: bool,
}

/// The kernel command line.
pub fn cmdline(cfg: &VmConfig, accel: Accel) -> String {
    // loglevel=5 shows warnings (WARN splats print at KERN_WARNING) and
    // worse, and hides the info chatter that slows an emulated UART.
    // panic=-1 reboots at once on panic; QEMU's -no-reboot turns that into
    // an exit.
    let mut args = vec![
        "console=ttyS0,115200".to_owned(),
        "loglevel=5".into(),
        "panic=-1".into(),
    ];
    if cfg.pmem == PmemKind::Memmap {
        args.push(format!("memmap={}M!{}M", cfg.pmem_mib, MEMMAP_OFFSET_MIB));
    }
    if accel == Accel::Tcg {
        // An emulated CPU on a busy host can stop for seconds; don't report
        // that as a stall or lockup (real ones still show, later).
        args.push("rcupdate.rcu_cpu_stall_timeout=60".into());
        args.push("watchdog_thresh=30".into());
    }
    args.extend(cfg.append.iter().cloned());
    args.join(" ")
}

/// QEMU's arguments.
pub fn args(l: &Launch<'_>) -> Vec<OsString> {
    let cfg = l.cfg;
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    let sock = |name: &str| opt_value(&l.run_dir.join(format!("{name}.sock")));

    push(&[
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
    ]);
    match l.accel {
        // No 5-level paging: most machines in the field use 4 levels, and
        // it is cheaper to emulate. `--cpu max` gets it back.
        Accel::Tcg => push(&[
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            cfg.cpu.as_deref().unwrap_or("max,la57=off"),
        ]),
        Accel::Kvm => push(&[
            "-accel",
            "kvm",
            "-cpu",
            cfg.cpu.as_deref().unwrap_or("host"),
        ]),
    }
    let smp = cfg.cpus.to_string();
    push(&["-smp", &smp]);
    match cfg.pmem {
        PmemKind::Memmap => {
            let mem = format!("{}M", cfg.memory_mib);
            push(&["-machine", "pc", "-m", &mem]);
        }
        PmemKind::Nvdimm => {
            // A label-less NVDIMM from host RAM, described to the guest by
            // an ACPI NFIT; it shows up as region0/namespace0.0 like the
            // memmap= region does.
            let mem = format!(
                "{}M,slots=2,maxmem={}M",
                cfg.memory_mib,
                cfg.memory_mib + cfg.pmem_mib
            );
            let backend = format!("memory-backend-ram,id=nvmem0,size={}M", cfg.pmem_mib);
            push(&["-machine", "pc,nvdimm=on", "-m", &mem]);
            push(&[
                "-object",
                &backend,
                "-device",
                "nvdimm,id=nvdimm0,memdev=nvmem0",
            ]);
        }
    }
    let image = l.image.display().to_string();
    let initrd = l.initramfs.display().to_string();
    let append = cmdline(cfg, l.accel);
    push(&["-kernel", &image, "-initrd", &initrd, "-append", &append]);

    if l.interactive {
        // The console is the user's terminal; Ctrl-A x quits.
        push(&["-serial", "mon:stdio"]);
    } else {
        let con = format!("socket,id=con,path={}", sock("console"));
        push(&["-chardev", &con, "-serial", "chardev:con"]);
        push(&["-device", "virtio-serial-pci,id=vser0"]);
        for (id, name) in [
            ("out", "refscope.stdout"),
            ("err", "refscope.stderr"),
            ("ctl", "refscope.control"),
        ] {
            let chardev = format!("socket,id={id},path={}", sock(id));
            let port = format!("virtserialport,bus=vser0.0,chardev={id},name={name}");
            push(&["-chardev", &chardev, "-device", &port]);
        }
    }
    if let Some(dir) = &cfg.share {
        let fsdev = format!(
            "local,id=share0,path={},security_model=none",
            opt_value(dir)
        );
        push(&[
            "-fsdev",
            &fsdev,
            "-device",
            "virtio-9p-pci,fsdev=share0,mount_tag=refscope",
        ]);
    }
    a
}

/// A path inside a QEMU `key=value,...` option: commas are doubled.
fn opt_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// A message from the guest's init on the control port.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// The command is about to start; the guest's uptime in seconds.
    Start(f64),
    /// `/proc/sys/kernel/tainted` after the command.
    Taint(u64),
    /// The command's exit status.
    Exit(i32),
    /// Setup failed before the command could run.
    Error(String),
}

pub fn parse_control(line: &str) -> Option<Control> {
    let (word, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    match word {
        "start" => rest.trim().parse().ok().map(Control::Start),
        "taint" => rest.trim().parse().ok().map(Control::Taint),
        "exit" => rest.trim().parse().ok().map(Control::Exit),
        "error" => Some(Control::Error(rest.trim().to_owned())),
        _ => None,
    }
}

/// What a batch run produced, before interpretation.
#[derive(Debug, Default)]
pub struct RawRun {
    pub console: String,
    pub incidents: Vec<Incident>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Control messages with the time since QEMU started.
    pub control: Vec<(Duration, Control)>,
    pub qemu_status: Option<ExitStatus>,
    pub qemu_output: String,
    pub timed_out: bool,
    /// The watchdog killed the guest this long after a fatal incident.
    pub killed_after_grace: bool,
    /// QEMU itself reported a fatal error (e.g. KVM emulation failure).
    pub qemu_fatal: Option<String>,
    pub elapsed: Duration,
}

enum Event {
    Incident(IncidentKind),
    Control(Control),
    QemuFatal(String),
}

/// Options of the supervision that are not part of the guest.
pub struct Watch {
    pub timeout: Duration,
    pub grace: Duration,
    /// Copy the command's stdout/stderr to ours as it arrives.
    pub echo_output: bool,
    /// Copy the kernel console to our stderr as it arrives.
    pub echo_console: bool,
}

fn qemu_binary() -> anyhow::Result<&'static str> {
    const QEMU: &str = "qemu-system-x86_64";
    if !crate::util::have(QEMU) {
        bail!("{QEMU} is not installed (package `qemu-system-x86`); run `cargo xtask setup`");
    }
    Ok(QEMU)
}

/// Boot with the user's terminal as the console; returns QEMU's status.
pub fn run_interactive(l: &Launch<'_>) -> anyhow::Result<ExitStatus> {
    let mut cmd = Command::new(qemu_binary()?);
    cmd.args(args(l));
    cmd.status()
        .with_context(|| format!("failed to run {}", crate::util::display(&cmd)))
}

/// Boot, run the command, watch the console; never hangs past
/// `watch.timeout` (plus a moment to collect the output).
pub fn run_batch(l: &Launch<'_>, watch: &Watch) -> anyhow::Result<RawRun> {
    let listeners = ["console", "out", "err", "ctl"]
        .map(|name| {
            let path = l.run_dir.join(format!("{name}.sock"));
            let _ = std::fs::remove_file(&path);
            UnixListener::bind(&path)
                .with_context(|| format!("failed to listen on {}", path.display()))
        })
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let [console_l, out_l, err_l, ctl_l]: [UnixListener; 4] = listeners
        .try_into()
        .map_err(|_| anyhow::anyhow!("listener count"))?;

    let mut cmd = Command::new(qemu_binary()?);
    cmd.args(args(l))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start {}", crate::util::display(&cmd)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Event>();
    let mut raw = RawRun::default();

    thread::scope(|s| -> anyhow::Result<()> {
        // QEMU's own stdout/stderr: kept for error messages.
        let qemu_out = child.stdout.take().context("no QEMU stdout")?;
        let qemu_err = child.stderr.take().context("no QEMU stderr")?;
        let q1 = s.spawn(move || read_all(qemu_out));
        let tx_q = tx.clone();
        let q2 = s.spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(qemu_err).lines().map_while(Result::ok) {
                if line.contains("KVM internal error") || line.contains("kvm run failed") {
                    let _ = tx_q.send(Event::QemuFatal(line.clone()));
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });

        let tx_c = tx.clone();
        let stop_c = stop.clone();
        let echo_console = watch.echo_console;
        let console = s.spawn(move || {
            let mut log = String::new();
            let mut scanner = Scanner::default();
            if let Some(stream) = accept(&console_l, &stop_c) {
                for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                    let line = String::from_utf8_lossy(&line);
                    if echo_console {
                        eprintln!("{line}");
                    }
                    if let Some(kind) = scanner.feed(&line) {
                        let _ = tx_c.send(Event::Incident(kind));
                    }
                    log.push_str(&line);
                    log.push('\n');
                }
            }
            (log, scanner.into_incidents())
        });

        let echo = watch.echo_output;
        let stop_o = stop.clone();
        let out = s.spawn(move || pump(&out_l, &stop_o, echo.then(io::stdout)));
        let stop_e = stop.clone();
        let err = s.spawn(move || pump(&err_l, &stop_e, echo.then(io::stderr)));

        let tx_ctl = tx.clone();
        let stop_ctl = stop.clone();
        let ctl = s.spawn(move || {
            if let Some(stream) = accept(&ctl_l, &stop_ctl) {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(msg) = parse_control(&line) {
                        let _ = tx_ctl.send(Event::Control(msg));
                    }
                }
            }
        });
        drop(tx);

        let supervised = supervise(&mut child, &rx, started, watch, &mut raw);
        if supervised.is_err() {
            kill(&mut child);
            let _ = child.wait();
        }
        // Readers still waiting for a connection give up now.
        stop.store(true, Ordering::Relaxed);

        let (log, incidents) = console.join().unwrap_or_default();
        raw.console = log;
        raw.incidents = incidents;
        raw.stdout = out.join().unwrap_or_default();
        raw.stderr = err.join().unwrap_or_default();
        let _ = ctl.join();
        // Control messages that arrived after the loop ended.
        while let Ok(ev) = rx.try_recv() {
            if let Event::Control(c) = ev {
                raw.control.push((started.elapsed(), c));
            }
        }
        raw.qemu_output = q1.join().unwrap_or_default() + &q2.join().unwrap_or_default();
        supervised
    })?;
    raw.elapsed = started.elapsed();
    Ok(raw)
}

/// Wait for QEMU to exit, killing it on timeout, after the grace period
/// that follows a fatal incident, or on a fatal QEMU error.
fn supervise(
    child: &mut Child,
    rx: &mpsc::Receiver<Event>,
    started: Instant,
    watch: &Watch,
    raw: &mut RawRun,
) -> anyhow::Result<()> {
    let deadline = started + watch.timeout;
    let mut grace_end: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Incident(kind)) if kind.is_fatal() => {
                let end = Instant::now() + watch.grace;
                grace_end = Some(grace_end.map_or(end, |g| g.min(end)));
            }
            Ok(Event::Incident(_)) => {}
            Ok(Event::Control(c)) => raw.control.push((started.elapsed(), c)),
            Ok(Event::QemuFatal(line)) => {
                raw.qemu_fatal = Some(line);
                kill(child);
            }
            Err(_) => {}
        }
        if let Some(status) = child.try_wait().context("failed to wait for QEMU")? {
            raw.qemu_status = Some(status);
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            raw.timed_out = true;
            kill(child);
        } else if grace_end.is_some_and(|g| now >= g) {
            raw.killed_after_grace = true;
            kill(child);
        }
    }
}

fn kill(child: &mut Child) {
    // Our own child, by handle: SIGKILL, then reap in the loop.
    let _ = child.kill();
}

/// Accept QEMU's connection on `listener`, or give up once `stop` is set
/// (QEMU exited without connecting).
fn accept(listener: &UnixListener, stop: &AtomicBool) -> Option<UnixStream> {
    listener.set_nonblocking(true).ok()?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).ok()?;
                return Some(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
}

/// Copy everything from the channel into a buffer and, if given, `echo`.
fn pump<W: io::Write>(listener: &UnixListener, stop: &AtomicBool, mut echo: Option<W>) -> Vec<u8> {
    let mut all = Vec::new();
    let Some(mut stream) = accept(listener, stop) else {
        return all;
    };
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if let Some(w) = echo.as_mut() {
                    let _ = w.write_all(&buf[..n]);
                    let _ = w.flush();
                }
            }
        }
    }
    all
}

fn read_all(mut r: impl io::Read) -> String {
    let mut s = Vec::new();
    let _ = r.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_paths_are_escaped() {
        assert_eq!(opt_value(Path::new("/tmp/a,b")), "/tmp/a,,b");
    }

    #[test]
    fn control_messages() {
        assert_eq!(parse_control("start 7.25"), Some(Control::Start(7.25)));
        assert_eq!(parse_control("exit 1\n"), Some(Control::Exit(1)));
        assert_eq!(parse_control("taint 512"), Some(Control::Taint(512)));
        assert_eq!(
            parse_control("error mount -o dax /dev/pmem0 failed"),
            Some(Control::Error("mount -o dax /dev/pmem0 failed".into()))
        );
        assert_eq!(parse_control("exit x"), None);
        assert_eq!(parse_control("hello"), None);
    }

    #[test]
    fn command_line_has_memmap_and_tcg_tuning() {
        let mut cfg = VmConfig::new(super::super::KernelChoice::Pinned("6.12".into()), None);
        cfg.append = vec!["foo=1".into()];
        let line = cmdline(&cfg, Accel::Tcg);
        assert!(line.contains("console=ttyS0"));
        assert!(line.contains("memmap=512M!1024M"));
        assert!(line.contains("rcupdate.rcu_cpu_stall_timeout=60"));
        assert!(line.ends_with("foo=1"));
        assert!(!line.contains("quiet"));
        cfg.pmem = PmemKind::Nvdimm;
        assert!(!cmdline(&cfg, Accel::Kvm).contains("memmap"));
    }

    #[test]
    fn nvdimm_adds_a_dimm() {
        let mut cfg = VmConfig::new(super::super::KernelChoice::Pinned("6.12".into()), None);
        cfg.pmem = PmemKind::Nvdimm;
        let l = Launch {
            cfg: &cfg,
            image: Path::new("/k"),
            initramfs: Path::new("/i"),
            run_dir: Path::new("/r"),
            accel: Accel::Tcg,
            interactive: false,
        };
        let a: Vec<String> = args(&l)
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let joined = a.join(" ");
        assert!(joined.contains("-machine pc,nvdimm=on"));
        assert!(joined.contains("-m 2048M,slots=2,maxmem=2560M"));
        assert!(joined.contains("-device nvdimm,id=nvdimm0,memdev=nvmem0"));
        assert!(joined.contains("name=refscope.control"));
    }
}
