//! Pipes, vmsplice, process_vm_readv and raw io_uring.

use super::*;

/// A pipe: used to hold page references (vmsplice) and to sequence parent
/// and child processes.
#[derive(Debug)]
pub struct Pipe {
    pub r: OwnedFd,
    pub w: OwnedFd,
}

impl Pipe {
    pub fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: valid array of two fds.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fds we own.
        Ok(unsafe {
            Self {
                r: OwnedFd::from_raw_fd(fds[0]),
                w: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    /// Grow the pipe to at least `bytes` (root may exceed pipe-max-size).
    pub fn set_size(&self, bytes: usize) -> io::Result<usize> {
        // SAFETY: valid fd.
        let rc =
            unsafe { libc::fcntl(self.w.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    /// vmsplice [addr, addr+len) into the pipe without copying: the kernel
    /// takes a page reference (get_user_pages_fast, FOLL_GET) on every page,
    /// held until the pipe buffer is consumed. Non-blocking.
    pub fn vmsplice(&self, addr: usize, len: usize) -> io::Result<usize> {
        let mut done = 0;
        while done < len {
            let iov = libc::iovec {
                iov_base: (addr + done) as *mut libc::c_void,
                iov_len: len - done,
            };
            // SAFETY: the iovec describes our own live mapping.
            let n = unsafe { libc::vmsplice(self.w.as_raw_fd(), &iov, 1, libc::SPLICE_F_NONBLOCK) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if done > 0 && e.raw_os_error() == Some(libc::EAGAIN) {
                    break;
                }
                return Err(e);
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        Ok(done)
    }

    /// Read everything currently in the pipe (dropping the page references
    /// vmsplice took). Returns the bytes drained.
    pub fn drain(&self) -> io::Result<usize> {
        let fd = self.r.as_raw_fd();
        // SAFETY: valid fd.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            // SAFETY: valid buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(total),
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Ok(total);
            }
            total += n as usize;
        }
    }

    pub fn send(&self, b: u8) -> io::Result<()> {
        write_all_fd(self.w.as_raw_fd(), &[b])
    }

    /// Receive one byte within `timeout`; Ok(None) on EOF.
    pub fn recv(&self, timeout: Duration) -> anyhow::Result<Option<u8>> {
        recv_byte(self.r.as_raw_fd(), timeout)
    }

    /// Receive a u64 (8 bytes) within `timeout`.
    pub fn recv_u64(&self, timeout: Duration) -> anyhow::Result<u64> {
        let mut v = [0u8; 8];
        for b in &mut v {
            *b = self.recv(timeout)?.context("pipe closed early")?;
        }
        Ok(u64::from_ne_bytes(v))
    }

    pub fn send_u64(&self, v: u64) -> io::Result<()> {
        write_all_fd(self.w.as_raw_fd(), &v.to_ne_bytes())
    }
}

fn recv_byte(fd: RawFd, timeout: Duration) -> anyhow::Result<Option<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            bail!("poll: {e}");
        }
        if rc == 0 {
            bail!(
                "timed out after {:.1} s waiting for the other process",
                timeout.as_secs_f64()
            );
        }
        let mut b = 0u8;
        // SAFETY: one byte into a valid buffer.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            bail!("read: {e}");
        }
        return Ok((n == 1).then_some(b));
    }
}

/// process_vm_readv from `pid`'s [remote, remote+len) into our
/// [local, local+len). The kernel pins the *remote* pages with
/// pin_user_pages_remote (FOLL_PIN) batch by batch, copies, and unpins;
/// the local side is written with ordinary user copies (no GUP).
pub fn process_vm_read(pid: i32, local: usize, remote: usize, len: usize) -> io::Result<usize> {
    let l = libc::iovec {
        iov_base: local as *mut libc::c_void,
        iov_len: len,
    };
    let r = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the local iovec is our own writable memory of len bytes.
    let n = unsafe { libc::process_vm_readv(pid, &l, 1, &r, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// process_vm_readv of single pages of `pid` at the page addresses
/// `remotes` (one remote iovec per page, up to 1024 per call) into our
/// buffer at `local` (`remotes.len()` pages). Each iovec is its own
/// pin_user_pages_remote batch. Returns the bytes read.
pub fn process_vm_read_pages(pid: i32, local: usize, remotes: &[usize]) -> io::Result<usize> {
    let mut total = 0;
    for (c, chunk) in remotes.chunks(1024).enumerate() {
        let l = libc::iovec {
            iov_base: (local + c * 1024 * PAGE_SIZE) as *mut libc::c_void,
            iov_len: chunk.len() * PAGE_SIZE,
        };
        let r: Vec<libc::iovec> = chunk
            .iter()
            .map(|&a| libc::iovec {
                iov_base: a as *mut libc::c_void,
                iov_len: PAGE_SIZE,
            })
            .collect();
        // SAFETY: the local iovec is our own writable buffer of
        // remotes.len() pages.
        let n =
            unsafe { libc::process_vm_readv(pid, &l, 1, r.as_ptr(), r.len() as libc::c_ulong, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        total += n as usize;
    }
    Ok(total)
}

const IORING_REGISTER_BUFFERS: libc::c_long = 0;
const IORING_UNREGISTER_BUFFERS: libc::c_long = 1;

/// A raw io_uring instance (no rings mapped: only registration is used).
#[derive(Debug)]
pub struct IoUring(OwnedFd);

impl IoUring {
    pub fn setup(entries: u32) -> io::Result<Self> {
        // struct io_uring_params is 120 bytes.
        let mut params = [0u32; 30];
        // SAFETY: raw syscall with a zeroed, correctly sized params struct.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// IORING_REGISTER_BUFFERS: pins every page with
    /// pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM).
    pub fn register_buffers(&self, bufs: &[(usize, usize)]) -> io::Result<()> {
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|&(a, l)| libc::iovec {
                iov_base: a as *mut libc::c_void,
                iov_len: l,
            })
            .collect();
        // SAFETY: valid iovec array.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.0.as_raw_fd(),
                IORING_REGISTER_BUFFERS,
                iov.as_ptr(),
                iov.len() as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn unregister_buffers(&self) -> io::Result<()> {
        // SAFETY: no argument.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.0.as_raw_fd(),
                IORING_UNREGISTER_BUFFERS,
                std::ptr::null::<libc::c_void>(),
                0 as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
