//! vm-runas: run a command as another user, with chosen capabilities.
//!
//! A guest helper for the VM harness's tests of refscope without root or
//! with only some of the capabilities tracing needs (busybox has no
//! `setpriv --reuid`, and `su` drops every capability). Like vm-touch,
//! xtask compiles this single std-only file with `rustc` and installs it
//! as `/bin/vm-runas`.
//!
//! Usage: vm-runas UID [--caps NAME,NAME...] -- CMD ARGS...
//!
//! Run as root. Sets the real, effective and saved uid and gid to UID (no
//! supplementary groups) and gives CMD exactly the listed capabilities
//! (permitted, effective and ambient, so they survive exec); names are
//! like `bpf`, `perfmon`, `syslog`, `sys_admin`.

use std::{
    env,
    ffi::c_int,
    os::unix::process::CommandExt,
    process::{Command, ExitCode},
};

const PR_SET_KEEPCAPS: c_int = 8;
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_RAISE: c_int = 2;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

unsafe extern "C" {
    fn prctl(option: c_int, a: u64, b: u64, c: u64, d: u64) -> c_int;
    fn setgroups(n: usize, list: *const u32) -> c_int;
    fn setresgid(r: u32, e: u32, s: u32) -> c_int;
    fn setresuid(r: u32, e: u32, s: u32) -> c_int;
    fn capset(h: *mut CapHeader, d: *const CapData) -> c_int;
}

const CAPS: &[(&str, u32)] = &[
    ("chown", 0),
    ("dac_override", 1),
    ("dac_read_search", 2),
    ("kill", 5),
    ("setgid", 6),
    ("setuid", 7),
    ("net_admin", 12),
    ("ipc_lock", 14),
    ("sys_ptrace", 19),
    ("sys_admin", 21),
    ("sys_resource", 24),
    ("syslog", 34),
    ("perfmon", 38),
    ("bpf", 39),
];

fn fail(msg: String) -> ExitCode {
    eprintln!("vm-runas: {msg}");
    ExitCode::from(125)
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(uid) = args.first().and_then(|u| u.parse::<u32>().ok()) else {
        return fail("usage: vm-runas UID [--caps NAME,NAME...] -- CMD ARGS...".into());
    };
    let mut caps: Vec<u32> = Vec::new();
    let mut it = args[1..].iter();
    let mut cmd = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--caps" => {
                for name in it.next().map(String::as_str).unwrap_or("").split(',') {
                    let name = name.trim().trim_start_matches("cap_").to_ascii_lowercase();
                    if name.is_empty() {
                        continue;
                    }
                    match CAPS.iter().find(|(n, _)| *n == name) {
                        Some((_, c)) => caps.push(*c),
                        None => return fail(format!("unknown capability {name}")),
                    }
                }
            }
            "--" => {
                cmd.extend(it.by_ref().cloned());
                break;
            }
            other => return fail(format!("unknown option {other}")),
        }
    }
    if cmd.is_empty() {
        return fail("no command".into());
    }
    let mut data = [CapData::default(); 2];
    for &c in &caps {
        let d = &mut data[(c / 32) as usize];
        let bit = 1 << (c % 32);
        d.effective |= bit;
        d.permitted |= bit;
        d.inheritable |= bit;
    }
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        if prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
            || setgroups(0, std::ptr::null()) != 0
            || setresgid(uid, uid, uid) != 0
            || setresuid(uid, uid, uid) != 0
        {
            return fail(format!("cannot become uid {uid}: {}", std::io::Error::last_os_error()));
        }
        let mut h = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        if capset(&mut h, data.as_ptr()) != 0 {
            return fail(format!("capset: {}", std::io::Error::last_os_error()));
        }
        for &c in &caps {
            if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE as u64, u64::from(c), 0, 0) != 0 {
                return fail(format!("ambient cap {c}: {}", std::io::Error::last_os_error()));
            }
        }
    }
    let err = Command::new(&cmd[0]).args(&cmd[1..]).exec();
    fail(format!("cannot run {}: {err}", cmd[0]))
}
