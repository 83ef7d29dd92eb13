//! vm-pty: run a command on a pseudo-terminal of its own.
//!
//! A guest helper for the VM harness's tests of `refscope live`, which
//! needs a terminal (the guest command's stdio are virtio ports). Like
//! vm-touch, xtask compiles this single std-only file with `rustc` and
//! installs it as `/bin/vm-pty`.
//!
//! Usage: vm-pty [--size COLSxROWS] [--hangup-file PATH] [--log FILE] -- CMD ARGS...
//!
//! CMD runs in a new session whose controlling terminal is the pty's
//! slave, as its stdin and stdout; its stderr is ours. What it draws is
//! read (and kept in --log, else discarded) so it never blocks on a full
//! terminal. Once --hangup-file exists, the master side is closed: the
//! kernel hangs the terminal up (SIGHUP to the session), as when an SSH
//! connection drops. Exits with CMD's status (128+N if a signal killed it).

use std::{
    env,
    ffi::{CStr, c_char, c_int, c_ulong, c_void},
    fs::{File, OpenOptions},
    io::Write,
    os::{
        fd::FromRawFd,
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::PathBuf,
    process::{Command, ExitCode},
};

const O_RDWR: c_int = 2;
const O_NOCTTY: c_int = 0o400;
const TIOCSWINSZ: c_ulong = 0x5414;
const TIOCSCTTY: c_ulong = 0x540e;
const POLLIN: i16 = 1;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;

#[repr(C)]
struct Winsize {
    rows: u16,
    cols: u16,
    xpixel: u16,
    ypixel: u16,
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

unsafe extern "C" {
    fn posix_openpt(flags: c_int) -> c_int;
    fn grantpt(fd: c_int) -> c_int;
    fn unlockpt(fd: c_int) -> c_int;
    fn ptsname_r(fd: c_int, buf: *mut c_char, len: usize) -> c_int;
    fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
    fn setsid() -> c_int;
    fn poll(fds: *mut PollFd, n: c_ulong, timeout_ms: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, len: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

fn fail(msg: String) -> ExitCode {
    eprintln!("vm-pty: {msg}");
    ExitCode::from(125)
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (mut cols, mut rows) = (80u16, 24u16);
    let (mut hangup, mut log) = (None::<PathBuf>, None::<PathBuf>);
    let mut it = args.iter();
    let mut cmd = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size" => {
                let v = it.next().cloned().unwrap_or_default();
                match v.split_once('x').map(|(c, r)| (c.parse(), r.parse())) {
                    Some((Ok(c), Ok(r))) => (cols, rows) = (c, r),
                    _ => return fail(format!("--size wants COLSxROWS, not {v:?}")),
                }
            }
            "--hangup-file" => hangup = it.next().map(PathBuf::from),
            "--log" => log = it.next().map(PathBuf::from),
            "--" => {
                cmd.extend(it.by_ref().cloned());
                break;
            }
            other => return fail(format!("unknown option {other}")),
        }
    }
    if cmd.is_empty() {
        return fail(
            "usage: vm-pty [--size COLSxROWS] [--hangup-file PATH] [--log FILE] -- CMD ARGS...".into(),
        );
    }

    // SAFETY: plain libc calls on the fd they return; buffers are sized.
    let (master, slave_path) = unsafe {
        let fd = posix_openpt(O_RDWR | O_NOCTTY);
        // The command must not inherit the master: closing ours would then
        // not hang the terminal up.
        if fd < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 || grantpt(fd) != 0 || unlockpt(fd) != 0
        {
            return fail(format!("no pty: {}", std::io::Error::last_os_error()));
        }
        let mut buf = [0 as c_char; 128];
        if ptsname_r(fd, buf.as_mut_ptr(), buf.len()) != 0 {
            return fail(format!("ptsname: {}", std::io::Error::last_os_error()));
        }
        let ws = Winsize {
            rows,
            cols,
            xpixel: 0,
            ypixel: 0,
        };
        ioctl(fd, TIOCSWINSZ, &ws as *const Winsize);
        let path = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
        (fd, path)
    };
    let slave = match OpenOptions::new().read(true).write(true).open(&slave_path) {
        Ok(f) => f,
        Err(e) => return fail(format!("{slave_path}: {e}")),
    };
    let (stdin, stdout) = match (slave.try_clone(), slave.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return fail("cannot duplicate the pty".into()),
    };
    let mut command = Command::new(&cmd[0]);
    command.args(&cmd[1..]).stdin(stdin).stdout(stdout);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if setsid() < 0 || ioctl(0, TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot run {}: {e}", cmd[0])),
    };
    // Only the command keeps the slave open.
    drop(command);
    drop(slave);

    let mut log = log.and_then(|p| File::create(p).ok());
    let mut open = true;
    let mut buf = [0u8; 65536];
    let status = loop {
        if open {
            let mut p = PollFd {
                fd: master,
                events: POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; the buffer is ours.
            let ready = unsafe { poll(&mut p, 1, 100) };
            if ready > 0 {
                let n = unsafe { read(master, buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    if let Some(l) = &mut log {
                        let _ = l.write_all(&buf[..n as usize]);
                    }
                } else {
                    // EIO: every slave fd is closed (the command is gone).
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            if hangup.as_ref().is_some_and(|h| h.exists()) {
                // SAFETY: our fd, closed once.
                unsafe { close(master) };
                open = false;
            }
        } else {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return fail(format!("wait: {e}")),
        }
    };
    if open {
        // SAFETY: our fd, still open.
        drop(unsafe { File::from_raw_fd(master) });
    }
    let _ = std::io::stderr().flush();
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(s)) => ExitCode::from(128 + s as u8),
        _ => ExitCode::FAILURE,
    }
}
