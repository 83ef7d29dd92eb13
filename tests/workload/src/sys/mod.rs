//! Thin, safe-ish wrappers over the system calls the scenarios use: mappings,
//! test files, FIEMAP, pipes and vmsplice, process_vm_readv, raw io_uring,
//! loop devices, signals, child processes and sysfs/procfs lookups.

mod child;
mod files;
mod ipc;
mod loopdev;
mod mapping;
mod mounts;
mod signals;
mod sysfs;

pub use self::{
    child::*, files::*, ipc::*, loopdev::*, mapping::*, mounts::*, signals::*, sysfs::*,
};

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{
            ffi::OsStrExt as _,
            fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _},
        },
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    json::Obj,
    util::{PAGE_SIZE, PMD_SIZE, align_up, errno_name},
};

/// `{"errno": N, "error": "NAME", "message": "..."}` for an io::Error.
pub fn err_obj(e: &io::Error) -> Obj {
    let code = e.raw_os_error().unwrap_or(0);
    Obj::new()
        .with("errno", code)
        .with("error", errno_name(code))
        .with("message", e.to_string())
}

/// CLOCK_MONOTONIC in nanoseconds (the clock `bpf_ktime_get_ns` uses, so
/// workload and trace timestamps compare directly).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn getpid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

/// Write all of `buf` to `fd` (stdout lines go out with one write when they
/// fit a pipe buffer, so lines from parent and child do not interleave).
pub fn write_all_fd(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Kernel release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::{files::FIEMAP_EXTENT_UNWRITTEN, signals::hex_into};

    #[test]
    fn mountinfo_parsing() {
        let text = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
61 27 259:0 / /mnt/dax rw,relatime - ext4 /dev/pmem0 rw,dax=always
62 27 0:40 / /mnt/my\\040dir rw - tmpfs tmpfs rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].dev, (259, 0));
        assert_eq!(m[2].fstype, "ext4");
        assert_eq!(m[2].source, "/dev/pmem0");
        assert_eq!(m[2].super_options, "rw,dax=always");
        assert_eq!(m[3].mount_point, "/mnt/my dir");
        assert_eq!(
            pick_mount(&m, "/mnt/dax/file").unwrap().source,
            "/dev/pmem0"
        );
        assert_eq!(pick_mount(&m, "/mnt/dax").unwrap().source, "/dev/pmem0");
        assert_eq!(pick_mount(&m, "/mnt/daxx/f").unwrap().source, "/dev/vda");
        assert_eq!(pick_mount(&m, "/proc/self").unwrap().fstype, "proc");
    }

    #[test]
    fn extents() {
        let e = [
            Extent {
                logical: 0,
                physical: 0x20_0000,
                length: 0x20_0000,
                flags: 0,
            },
            Extent {
                logical: 0x20_0000,
                physical: 0x90_0000,
                length: 0x1000,
                flags: FIEMAP_EXTENT_UNWRITTEN,
            },
        ];
        assert_eq!(physical_of(&e, 0x1000), Some(0x20_1000));
        assert_eq!(physical_of(&e, 0x20_0000), Some(0x90_0000));
        assert_eq!(physical_of(&e, 0x20_1000), None);
        assert!(e[1].unwritten());
        assert!(!e[0].unwritten());
    }

    #[test]
    fn hex_formatting() {
        let mut b = [0u8; 18];
        assert_eq!(hex_into(0, &mut b), b"0x0");
        assert_eq!(hex_into(0x7f00_dead_beef, &mut b), b"0x7f00deadbeef");
        assert_eq!(hex_into(u64::MAX, &mut b), b"0xffffffffffffffff");
    }

    #[test]
    fn fs_names() {
        assert_eq!(fs_name(0xEF53), "ext4");
        assert_eq!(fs_name(0x5846_5342), "xfs");
        assert_eq!(fs_name(0x1234), "0x1234");
    }

    #[test]
    fn aligned_anon_mapping() {
        let m = Mapping::anon(3 * PAGE_SIZE, PMD_SIZE).unwrap();
        assert_eq!(m.addr() % PMD_SIZE, 0);
        m.touch(2, true);
        assert_eq!(m.touch(2, false), 2u8 ^ 0x5a | 1);
    }

    #[test]
    fn placed_file_mapping_moves_with_mremap() {
        let path = std::env::temp_dir().join(format!("refscope-wl-mremap-{}", getpid()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        f.set_len(4 * PAGE_SIZE as u64).unwrap();
        let res = Mapping::reserve(4 * PMD_SIZE, PMD_SIZE).unwrap();
        let at = res.addr() + PMD_SIZE - 2 * PAGE_SIZE;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let mut m =
            Mapping::file_at(f.as_raw_fd(), 4 * PAGE_SIZE, 0, at, prot, libc::MAP_SHARED).unwrap();
        assert_eq!(m.addr(), at);
        m.touch(3, true);
        res.punch(res.addr(), at - res.addr()).unwrap();
        assert!(res.punch(res.addr() + 4 * PMD_SIZE, PAGE_SIZE).is_err());
        let dst = res.addr() + 3 * PMD_SIZE - 2 * PAGE_SIZE;
        m.mremap_to(dst).unwrap();
        assert_eq!(m.addr(), dst);
        assert_eq!(m.touch(3, false), 3u8 ^ 0x5a | 1);
        drop(m);
        drop(res);
    }

    #[test]
    fn interrupter_breaks_a_blocking_read() {
        install_signal_handlers().unwrap();
        let p = Pipe::new().unwrap();
        let t = Instant::now();
        let intr = Interrupter::after(Duration::from_millis(50));
        let mut b = 0u8;
        // SAFETY: one byte into a valid buffer.
        let n = unsafe { libc::read(p.r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
        let e = io::Error::last_os_error();
        assert!(intr.fired());
        drop(intr);
        assert_eq!(n, -1);
        assert_eq!(e.raw_os_error(), Some(libc::EINTR));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn pipe_roundtrip() {
        let p = Pipe::new().unwrap();
        p.send_u64(0xdead_beef).unwrap();
        assert_eq!(p.recv_u64(Duration::from_secs(1)).unwrap(), 0xdead_beef);
        assert!(p.recv(Duration::from_millis(10)).is_err());
    }
}
