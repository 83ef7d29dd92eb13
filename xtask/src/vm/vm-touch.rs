//! vm-touch: map a file and touch every page of the mapping.
//!
//! A guest helper for the VM harness's own tests and for poking at DAX by
//! hand (the scenario workloads live in tests/workload). xtask compiles this
//! single file with `rustc` into a static binary and installs it as
//! `/bin/vm-touch` in every guest. It uses only std and declares the few
//! libc functions it needs, so it builds without a crate.
//!
//! Usage: vm-touch FILE MIB [--read] [--private] [--hold SECS]
//!
//! A regular file is created and allocated (fallocate) to MIB MiB; a device
//! (/dev/daxX.Y) is used as it is. The first MIB MiB are mapped at a
//! 2 MiB-aligned address (so a DAX file on a 2 MiB-aligned namespace can be
//! mapped with PMDs), and every 4 KiB page is written (or read with
//! `--read`). With `--hold` the mapping stays for SECS seconds before the
//! program unmaps and exits.

use std::{
    env,
    ffi::{c_int, c_long, c_void},
    fs::OpenOptions,
    os::fd::AsRawFd,
    process::ExitCode,
    thread,
    time::Duration,
};

const PROT_NONE: c_int = 0;
const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const MAP_SHARED: c_int = 0x01;
const MAP_PRIVATE: c_int = 0x02;
const MAP_FIXED: c_int = 0x10;
const MAP_ANONYMOUS: c_int = 0x20;
const PMD: usize = 2 << 20;
const PAGE: usize = 4096;

unsafe extern "C" {
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: c_long)
    -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn fallocate(fd: c_int, mode: c_int, offset: c_long, len: c_long) -> c_int;
}

fn fail(msg: String) -> ExitCode {
    eprintln!("vm-touch: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (mut read, mut private, mut hold) = (false, false, 0u64);
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--read" => read = true,
            "--private" => private = true,
            "--hold" => match it.next().and_then(|s| s.parse().ok()) {
                Some(s) => hold = s,
                None => return fail("--hold needs a number of seconds".into()),
            },
            _ => pos.push(a.clone()),
        }
    }
    let [file, mib] = pos.as_slice() else {
        return fail("usage: vm-touch FILE MIB [--read] [--private] [--hold SECS]".into());
    };
    let Ok(mib) = mib.parse::<usize>() else {
        return fail(format!("MIB must be a number, not `{mib}`"));
    };
    let len = mib << 20;
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(!file.starts_with("/dev/"))
        .truncate(false)
        .open(file)
    {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open {file}: {e}")),
    };
    let fd = f.as_raw_fd();
    // SAFETY: plain syscalls on a file descriptor we own; the mapping is
    // only accessed within [base, base + len) while it exists.
    unsafe {
        let regular = f.metadata().is_ok_and(|m| m.is_file());
        if regular && fallocate(fd, 0, 0, len as c_long) != 0 {
            return fail(format!("fallocate {file}: {}", std::io::Error::last_os_error()));
        }
        // Reserve len + 2 MiB, then map the file at the first 2 MiB boundary.
        let reserve = mmap(std::ptr::null_mut(), len + PMD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if reserve as isize == -1 {
            return fail(format!("mmap reserve: {}", std::io::Error::last_os_error()));
        }
        let aligned = (reserve as usize).next_multiple_of(PMD) as *mut c_void;
        let flags = MAP_FIXED | if private { MAP_PRIVATE } else { MAP_SHARED };
        let prot = if read { PROT_READ } else { PROT_READ | PROT_WRITE };
        let base = mmap(aligned, len, prot, flags, fd, 0);
        if base as isize == -1 {
            return fail(format!("mmap {file}: {}", std::io::Error::last_os_error()));
        }
        let p = base as *mut u8;
        let mut sum = 0u64;
        for off in (0..len).step_by(PAGE) {
            if read {
                sum = sum.wrapping_add(u64::from(p.add(off).read_volatile()));
            } else {
                p.add(off).write_volatile((off / PAGE) as u8);
            }
        }
        println!(
            "vm-touch: {} {mib} MiB of {file} at {base:p}, {} pages (sum {sum})",
            if read { "read" } else { "wrote" },
            len / PAGE
        );
        if hold > 0 {
            thread::sleep(Duration::from_secs(hold));
        }
        munmap(base, len);
    }
    ExitCode::SUCCESS
}
