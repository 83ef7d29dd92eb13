//! Thin, safe-ish wrappers over the system calls the scenarios use: mappings,
//! test files, FIEMAP, pipes and vmsplice, process_vm_readv, raw io_uring,
//! loop devices, signals, child processes and sysfs/procfs lookups.

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

// ---------------------------------------------------------------------------
// Signals

static HOLD_RELEASED: AtomicBool = AtomicBool::new(false);
static MCE_SIGBUS_COUNT: AtomicU64 = AtomicU64::new(0);
static MCE_SIGBUS_CODE: AtomicU64 = AtomicU64::new(0);
static MCE_SIGBUS_ADDR: AtomicU64 = AtomicU64::new(0);
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_sig: libc::c_int) {
    HOLD_RELEASED.store(true, Ordering::SeqCst);
}

extern "C" fn on_usr2(_sig: libc::c_int) {
    // Only there to make a blocking system call return EINTR.
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// Format `v` as hex into `buf` without allocating (signal handlers).
fn hex_into(mut v: u64, buf: &mut [u8; 18]) -> &[u8] {
    let mut tmp = [0u8; 16];
    let mut n = 0;
    loop {
        let d = (v & 0xf) as u8;
        tmp[n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n += 1;
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    buf[0] = b'0';
    buf[1] = b'x';
    for i in 0..n {
        buf[2 + i] = tmp[n - 1 - i];
    }
    &buf[..2 + n]
}

fn raw_stderr(msg: &[u8]) {
    // SAFETY: async-signal-safe write of a valid buffer.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

extern "C" fn on_alarm(_sig: libc::c_int) {
    raw_stderr(b"refscope-workload: error: global --timeout expired; exiting 124\n");
    // SAFETY: async-signal-safe.
    unsafe { libc::_exit(124) };
}

extern "C" fn on_bus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let mut b1 = [0u8; 18];
    let mut b2 = [0u8; 18];
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (addr, code) = unsafe { ((*info).si_addr() as u64, (*info).si_code) };
    // Memory-failure notices (XFS revoking DAX mappings on device removal:
    // mf_dax_kill_procs sends BUS_MCEERR_AR to the unbinding task, AO to
    // others) are recorded and survived, so the scenario can report them.
    // A few hundred in a row means a faulting access is looping: give up.
    if (code == libc::BUS_MCEERR_AO || code == libc::BUS_MCEERR_AR)
        && MCE_SIGBUS_COUNT.fetch_add(1, Ordering::SeqCst) < 256
    {
        MCE_SIGBUS_CODE.store(code as u64, Ordering::SeqCst);
        MCE_SIGBUS_ADDR.store(addr, Ordering::SeqCst);
        return;
    }
    raw_stderr(b"refscope-workload: error: SIGBUS at ");
    raw_stderr(hex_into(addr, &mut b1));
    raw_stderr(b" si_code ");
    raw_stderr(hex_into(code as u64, &mut b2));
    raw_stderr(b" (access to a truncated, revoked or dead DAX mapping); exiting 7\n");
    // SAFETY: async-signal-safe.
    unsafe { libc::_exit(7) };
}

fn sigaction(sig: libc::c_int, handler: usize, flags: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: sigaction is plain data; zeroed is a valid empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = flags;
    // SAFETY: valid pointers; the handlers are async-signal-safe.
    let rc = unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        bail!("sigaction({sig}): {}", io::Error::last_os_error());
    }
    Ok(())
}

/// Install the process-wide handlers: SIGUSR1 releases a hold, SIGUSR2
/// interrupts a blocking call (no SA_RESTART), SIGALRM is the global
/// timeout, SIGBUS reports and exits 7, SIGPIPE is ignored.
pub fn install_signal_handlers() -> anyhow::Result<()> {
    sigaction(
        libc::SIGUSR1,
        on_usr1 as *const () as usize,
        libc::SA_RESTART,
    )?;
    sigaction(libc::SIGUSR2, on_usr2 as *const () as usize, 0)?;
    sigaction(libc::SIGALRM, on_alarm as *const () as usize, 0)?;
    sigaction(
        libc::SIGBUS,
        on_bus as *const () as usize,
        libc::SA_SIGINFO | libc::SA_NODEFER,
    )?;
    sigaction(libc::SIGPIPE, libc::SIG_IGN, 0)?;
    Ok(())
}

/// Arm the global timeout (SIGALRM -> exit 124). 0 disables it. A forked
/// child calls this again: alarms are not inherited across fork.
pub fn arm_timeout(secs: u32) {
    // SAFETY: no preconditions.
    unsafe { libc::alarm(secs) };
}

/// Memory-failure SIGBUS notices received so far: (count, si_code name,
/// si_addr).
pub fn mce_sigbus() -> Option<(u64, &'static str, u64)> {
    let n = MCE_SIGBUS_COUNT.load(Ordering::SeqCst);
    (n > 0).then(|| {
        let code = match MCE_SIGBUS_CODE.load(Ordering::SeqCst) as i32 {
            libc::BUS_MCEERR_AR => "BUS_MCEERR_AR",
            libc::BUS_MCEERR_AO => "BUS_MCEERR_AO",
            _ => "?",
        };
        (n, code, MCE_SIGBUS_ADDR.load(Ordering::SeqCst))
    })
}

/// Whether SIGUSR1 arrived (a hold release).
pub fn hold_released() -> bool {
    HOLD_RELEASED.load(Ordering::SeqCst)
}

/// Interrupt the calling thread with SIGUSR2 after `after`, and again every
/// 100 ms until dropped, so a blocking call (a truncate waiting for a busy
/// DAX page) returns EINTR instead of hanging. The repetition covers a
/// signal that lands just before the call starts to sleep.
pub struct Interrupter {
    stop: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Interrupter {
    pub fn after(after: Duration) -> Self {
        // SAFETY: no preconditions.
        let target = unsafe { libc::pthread_self() };
        let stop = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (s, f) = (stop.clone(), fired.clone());
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            while !s.load(Ordering::SeqCst) && start.elapsed() < after {
                std::thread::sleep(Duration::from_millis(5));
            }
            while !s.load(Ordering::SeqCst) {
                f.store(true, Ordering::SeqCst);
                // SAFETY: the target thread outlives this one (joined in
                // Drop before the target can go away).
                unsafe { libc::pthread_kill(target, libc::SIGUSR2) };
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            fired,
            handle: Some(handle),
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Interrupter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Mappings

/// An mmap'ed region, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    len: usize,
    mapped: bool,
}

impl Mapping {
    /// Map `len` bytes of `fd` at file `offset`, at a virtual address that is
    /// a multiple of `align` (reserve `len + align` of address space, then
    /// MAP_FIXED over the aligned part and trim the rest).
    pub fn file(
        fd: RawFd,
        len: usize,
        offset: u64,
        align: usize,
        prot: libc::c_int,
        flags: libc::c_int,
    ) -> io::Result<Self> {
        Self::map(Some(fd), len, offset, align, prot, flags)
    }

    /// Anonymous private memory.
    pub fn anon(len: usize, align: usize) -> io::Result<Self> {
        Self::map(
            None,
            len,
            0,
            align,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )
    }

    /// An inaccessible, unbacked reservation of address space (PROT_NONE,
    /// MAP_NORESERVE) at a multiple of `align`: room to place mappings at
    /// chosen addresses with [`Mapping::file_at`].
    pub fn reserve(len: usize, align: usize) -> io::Result<Self> {
        Self::map(
            None,
            len,
            0,
            align,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
    }

    /// Map `len` bytes of `fd` at file `offset` exactly at `addr`
    /// (MAP_FIXED: whatever was there is replaced, so `addr` must lie in
    /// the caller's own reservation).
    pub fn file_at(
        fd: RawFd,
        len: usize,
        offset: u64,
        addr: usize,
        prot: libc::c_int,
        flags: libc::c_int,
    ) -> io::Result<Self> {
        if len == 0 || !addr.is_multiple_of(PAGE_SIZE) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: MAP_FIXED over address space the caller reserved.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                prot,
                flags | libc::MAP_FIXED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            addr: p as usize,
            len,
            mapped: true,
        })
    }

    /// munmap `[addr, addr + len)`, which must lie inside this mapping (a
    /// reservation): leaves a hole with no VMA at all.
    pub fn punch(&self, addr: usize, len: usize) -> io::Result<()> {
        if addr < self.addr || addr + len > self.addr + self.len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if len == 0 {
            return Ok(());
        }
        // SAFETY: a range of our own reservation, checked above.
        let rc = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Move the whole mapping to `new_addr` with
    /// mremap(MREMAP_MAYMOVE|MREMAP_FIXED): its page table entries move
    /// (`move_page_tables`), nothing is faulted again. Whatever was mapped
    /// at the destination is unmapped by the kernel, so it must be the
    /// caller's own.
    pub fn mremap_to(&mut self, new_addr: usize) -> io::Result<()> {
        if !self.mapped {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: our own mapping moves to address space the caller owns;
        // no reference into the old range outlives this.
        let p = unsafe {
            libc::mremap(
                self.addr as *mut libc::c_void,
                self.len,
                self.len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                new_addr as *mut libc::c_void,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.addr = p as usize;
        Ok(())
    }

    fn map(
        fd: Option<RawFd>,
        len: usize,
        offset: u64,
        align: usize,
        prot: libc::c_int,
        flags: libc::c_int,
    ) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let align = align.max(PAGE_SIZE);
        let raw_fd = fd.unwrap_or(-1);
        if align == PAGE_SIZE {
            // SAFETY: a fresh mapping chosen by the kernel.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    flags,
                    raw_fd,
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            return Ok(Self {
                addr: p as usize,
                len,
                mapped: true,
            });
        }
        let span = len + align;
        // SAFETY: an inaccessible reservation chosen by the kernel.
        let res = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if res == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let res = res as usize;
        let aligned = align_up(res, align);
        // SAFETY: [aligned, aligned+len) lies inside our own reservation.
        let p = unsafe {
            libc::mmap(
                aligned as *mut libc::c_void,
                len,
                prot,
                flags | libc::MAP_FIXED,
                raw_fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: our reservation.
            unsafe { libc::munmap(res as *mut libc::c_void, span) };
            return Err(e);
        }
        // SAFETY: trimming the unused head and tail of our reservation.
        unsafe {
            if aligned > res {
                libc::munmap(res as *mut libc::c_void, aligned - res);
            }
            let end = aligned + len;
            if res + span > end {
                libc::munmap(end as *mut libc::c_void, res + span - end);
            }
        }
        Ok(Self {
            addr: aligned,
            len,
            mapped: true,
        })
    }

    pub fn addr(&self) -> usize {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn pages(&self) -> usize {
        self.len / PAGE_SIZE
    }

    pub fn madvise(&self, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: our own mapping.
        let rc = unsafe { libc::madvise(self.addr as *mut libc::c_void, self.len, advice) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Touch byte `byte` of page `page`: a volatile store (write fault) or
    /// load (read fault). Returns the value read (0 for a write).
    pub fn touch_at(&self, page: usize, byte: usize, write: bool) -> u8 {
        assert!(self.mapped && page * PAGE_SIZE + byte < self.len);
        let p = (self.addr + page * PAGE_SIZE + byte) as *mut u8;
        if write {
            // SAFETY: inside our live, writable mapping.
            unsafe { p.write_volatile((page as u8) ^ 0x5a | 1) };
            0
        } else {
            // SAFETY: inside our live mapping.
            unsafe { p.read_volatile() }
        }
    }

    pub fn touch(&self, page: usize, write: bool) -> u8 {
        self.touch_at(page, 0, write)
    }

    pub fn unmap(&mut self) -> io::Result<()> {
        if !self.mapped {
            return Ok(());
        }
        // SAFETY: our own mapping; no references into it outlive this.
        let rc = unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.mapped = false;
        Ok(())
    }

    /// munmap from a forked child, whose copy of this struct is never
    /// dropped (the child `_exit`s).
    pub fn unmap_in_child(&self) -> io::Result<()> {
        // SAFETY: the child's own copy of the mapping; nothing in the child
        // touches it afterwards.
        let rc = unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Leave the mapping in place (for process exit to tear down).
    pub fn leak(mut self) {
        self.mapped = false;
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.mapped {
            let _ = self.unmap();
        }
    }
}

// ---------------------------------------------------------------------------
// Files

/// How a test file's blocks are prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// fallocate in 2 MiB pieces (unwritten extents; a read fault maps the
    /// zero page, a write fault converts and zeroes).
    Allocate,
    /// fallocate, then write a pattern so every block is written (both read
    /// and write faults map device pages).
    Write,
}

/// The byte every byte of page `i` of a pattern-filled file holds.
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// What a file lives on.
#[derive(Debug, Clone, Default)]
pub struct FileInfo {
    /// STATX_ATTR_DAX; None if the kernel does not report it.
    pub dax: Option<bool>,
    pub fs: String,
    pub dev: (u32, u32),
}

impl FileInfo {
    pub fn of_fd(fd: RawFd) -> anyhow::Result<Self> {
        // SAFETY: plain data.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers; empty path with AT_EMPTY_PATH.
        let rc = unsafe {
            libc::statx(
                fd,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_BASIC_STATS,
                &mut stx,
            )
        };
        if rc != 0 {
            bail!("statx: {}", io::Error::last_os_error());
        }
        let dax_bit = libc::STATX_ATTR_DAX as u64;
        let dax =
            (stx.stx_attributes_mask & dax_bit != 0).then_some(stx.stx_attributes & dax_bit != 0);
        // SAFETY: plain data.
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer.
        let fs = if unsafe { libc::fstatfs(fd, &mut sfs) } == 0 {
            fs_name(sfs.f_type as u64)
        } else {
            "unknown".into()
        };
        Ok(Self {
            dax,
            fs,
            dev: (stx.stx_dev_major, stx.stx_dev_minor),
        })
    }
}

/// Filesystem name from a statfs magic.
pub fn fs_name(magic: u64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x8584_58f6 => "ramfs".into(),
        0x9123_683e => "btrfs".into(),
        0x6573_5546 => "fuse".into(),
        0x6264_6576 => "devtmpfs".into(),
        m => format!("{m:#x}"),
    }
}

/// A file created for a scenario, removed on drop unless kept.
#[derive(Debug)]
pub struct TestFile {
    pub path: PathBuf,
    pub file: File,
    pub info: FileInfo,
    keep: bool,
}

impl TestFile {
    /// Create `dir/name` of `size` bytes (fresh, O_EXCL), with blocks
    /// prepared per `fill`. `extsize_hint`: ask XFS for aligned allocation.
    pub fn create(
        dir: &Path,
        name: &str,
        size: u64,
        fill: Fill,
        keep: bool,
        extsize_hint: bool,
    ) -> anyhow::Result<Self> {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let info = FileInfo::of_fd(file.as_raw_fd())?;
        let tf = Self {
            path,
            file,
            info,
            keep,
        };
        if extsize_hint {
            let _ = set_extsize_hint(tf.fd(), PMD_SIZE as u32);
        }
        tf.allocate(0, size)?;
        // fallocate does not grow i_size past what it allocates when the
        // file system rounds; make the size exact.
        tf.file
            .set_len(size)
            .with_context(|| format!("ftruncate {}", tf.path.display()))?;
        if fill == Fill::Write {
            tf.write_pattern(0, size)?;
        }
        Ok(tf)
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// fallocate [off, off+len) in 2 MiB pieces: each power-of-two request
    /// lets ext4's buddy allocator hand out a naturally aligned extent,
    /// which is what a PMD fault needs.
    pub fn allocate(&self, off: u64, len: u64) -> anyhow::Result<()> {
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let n = (end - pos).min(PMD_SIZE as u64);
            // SAFETY: valid fd.
            let rc = unsafe { libc::fallocate(self.fd(), 0, pos as i64, n as i64) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                bail!("fallocate {} at {pos}+{n}: {e}", self.path.display());
            }
            pos += n;
        }
        Ok(())
    }

    /// Write the page pattern over [off, off+len) (page aligned).
    pub fn write_pattern(&self, off: u64, len: u64) -> anyhow::Result<()> {
        const CHUNK: usize = 1 << 20;
        let mut buf = vec![0u8; CHUNK];
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            for (i, page) in buf[..n].chunks_mut(PAGE_SIZE).enumerate() {
                page.fill(pattern_byte(pos as usize / PAGE_SIZE + i));
            }
            self.file
                .write_all_at(&buf[..n], pos)
                .with_context(|| format!("write {} at {pos}", self.path.display()))?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Keep the file after the scenario (e.g. when the fs is dead).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            eprintln!(
                "refscope-workload: warning: cannot remove {}: {e}",
                self.path.display()
            );
        }
    }
}

/// One FIEMAP extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

/// The file's extents (FS_IOC_FIEMAP); Err on file systems without it
/// (tmpfs).
pub fn fiemap(fd: RawFd) -> io::Result<Vec<Extent>> {
    const MAX: usize = 128;
    // struct fiemap (32 bytes) followed by MAX struct fiemap_extent (56).
    let mut buf = vec![0u64; (32 + 56 * MAX) / 8];
    buf[1] = u64::MAX; // fm_length
    // fm_flags (u32 at byte 16) = 0; fm_extent_count (u32 at byte 24).
    buf[3] = MAX as u64;
    // SAFETY: buf is large enough for the header and MAX extents.
    let rc = unsafe { libc::ioctl(fd, FS_IOC_FIEMAP, buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mapped = (buf[2] >> 32) as usize; // fm_mapped_extents at byte 20
    let mut out = Vec::with_capacity(mapped);
    for i in 0..mapped.min(MAX) {
        let b = 4 + i * 7; // u64 index of extent i
        out.push(Extent {
            logical: buf[b],
            physical: buf[b + 1],
            length: buf[b + 2],
            flags: (buf[b + 5] & 0xffff_ffff) as u32,
        });
    }
    Ok(out)
}

impl Extent {
    pub fn unwritten(&self) -> bool {
        self.flags & FIEMAP_EXTENT_UNWRITTEN != 0
    }
}

/// The physical byte offset (on the block device) of file offset `off`,
/// from FIEMAP extents.
pub fn physical_of(extents: &[Extent], off: u64) -> Option<u64> {
    extents
        .iter()
        .find(|e| (e.logical..e.logical + e.length).contains(&off))
        .map(|e| e.physical + (off - e.logical))
}

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801C_581F;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401C_5820;
const FS_XFLAG_EXTSIZE: u32 = 0x800;

/// Set an XFS extent size hint on an empty file (ENOTTY/EOPNOTSUPP on
/// ext4: the caller ignores it).
pub fn set_extsize_hint(fd: RawFd, bytes: u32) -> io::Result<()> {
    // struct fsxattr: xflags, extsize, nextents, projid, cowextsize, pad[8].
    let mut x = [0u32; 7];
    // SAFETY: 28-byte buffer for the 28-byte struct.
    if unsafe { libc::ioctl(fd, FS_IOC_FSGETXATTR, x.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    x[0] |= FS_XFLAG_EXTSIZE;
    x[1] = bytes;
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, FS_IOC_FSSETXATTR, x.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Mount table and block devices

/// One line of /proc/self/mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: String,
    pub dev: (u32, u32),
    pub fstype: String,
    pub source: String,
    pub options: String,
    pub super_options: String,
}

/// Parse mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        let Some((ma, mi)) = l[2].split_once(':') else {
            continue;
        };
        let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) else {
            continue;
        };
        out.push(MountInfo {
            mount_point: unescape_mount(l[4]),
            dev: (ma, mi),
            fstype: r[0].to_owned(),
            source: unescape_mount(r[1]),
            options: l[5].to_owned(),
            super_options: r[2].to_owned(),
        });
    }
    out
}

fn unescape_mount(s: &str) -> String {
    // \040 (space), \011 (tab), \012, \134 (backslash).
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path`: the last mountinfo line with that device
/// whose mount point is a prefix of the canonical path.
pub fn mount_of(path: &Path) -> Option<MountInfo> {
    let canon = std::fs::canonicalize(path).ok()?;
    let c = canon.to_string_lossy().into_owned();
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts = parse_mountinfo(&text);
    pick_mount(&mounts, &c)
}

/// The longest (latest on ties) mount point that contains `path`.
pub fn pick_mount(mounts: &[MountInfo], path: &str) -> Option<MountInfo> {
    let mut best: Option<&MountInfo> = None;
    for m in mounts {
        let mp = m.mount_point.as_str();
        let inside = path == mp
            || mp == "/"
            || (path.starts_with(mp) && path.as_bytes().get(mp.len()) == Some(&b'/'));
        if inside && best.is_none_or(|b| mp.len() >= b.mount_point.len()) {
            best = Some(m);
        }
    }
    best.cloned()
}

/// The device node of block device `maj:min`: the mount source when it is
/// that block device, else /dev/<DEVNAME from sysfs uevent>.
pub fn block_dev_path(dev: (u32, u32), hint: Option<&str>) -> Option<PathBuf> {
    let is_it = |p: &Path| {
        std::fs::metadata(p).ok().is_some_and(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.file_type().is_block_device() && {
                let rdev = m.rdev();
                (libc::major(rdev), libc::minor(rdev)) == dev
            }
        })
    };
    if let Some(h) = hint {
        let p = Path::new(h);
        if is_it(p) {
            return Some(p.to_owned());
        }
    }
    let uevent =
        std::fs::read_to_string(format!("/sys/dev/block/{}:{}/uevent", dev.0, dev.1)).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let p = Path::new("/dev").join(name);
    is_it(&p).then_some(p)
}

// ---------------------------------------------------------------------------
// Loop devices

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// A loop block device over a backing file, detached on drop.
#[derive(Debug)]
pub struct LoopDev {
    pub path: PathBuf,
    dev: File,
}

impl LoopDev {
    pub fn attach(backing: &Path) -> anyhow::Result<Self> {
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .context("open /dev/loop-control (is the loop module loaded?)")?;
        let bfile = OpenOptions::new()
            .read(true)
            .write(true)
            .open(backing)
            .with_context(|| format!("open {}", backing.display()))?;
        let mut last = String::new();
        for _ in 0..8 {
            // SAFETY: ioctl without argument.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                bail!("LOOP_CTL_GET_FREE: {}", io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            if !path.exists() {
                // devtmpfs normally creates it; make one if not.
                let c = CString::new(path.as_os_str().as_bytes())?;
                // SAFETY: valid path.
                unsafe {
                    libc::mknod(
                        c.as_ptr(),
                        libc::S_IFBLK | 0o600,
                        libc::makedev(7, n as u32),
                    )
                };
            }
            let dev = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) => {
                    last = format!("open {}: {e}", path.display());
                    continue;
                }
            };
            // SAFETY: both fds valid.
            if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, bfile.as_raw_fd()) } != 0 {
                let e = io::Error::last_os_error();
                last = format!("LOOP_SET_FD {}: {e}", path.display());
                if e.raw_os_error() == Some(libc::EBUSY) {
                    continue;
                }
                bail!("{last}");
            }
            // struct loop_info64 (232 bytes); lo_flags is the u32 at 52.
            let mut info = [0u8; 232];
            info[52..56].copy_from_slice(&LO_FLAGS_AUTOCLEAR.to_ne_bytes());
            // SAFETY: correctly sized struct.
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, info.as_ptr()) };
            return Ok(Self { path, dev });
        }
        bail!("no free loop device: {last}")
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // SAFETY: valid fd.
        unsafe { libc::ioctl(self.dev.as_raw_fd(), LOOP_CLR_FD, 0) };
    }
}

// ---------------------------------------------------------------------------
// Pipes, vmsplice, process_vm_readv, io_uring

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

// ---------------------------------------------------------------------------
// Child processes

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

/// Fork; the child re-arms the global timeout, runs `f` and `_exit`s (no
/// destructors run in the child: the parent owns files and mappings).
pub fn fork_child<F: FnOnce() -> anyhow::Result<()>>(
    timeout_secs: u32,
    f: F,
) -> anyhow::Result<i32> {
    // SAFETY: the workload forks before it starts helper threads; the child
    // only runs `f` and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", io::Error::last_os_error());
    }
    if pid == 0 {
        arm_timeout(timeout_secs);
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("refscope-workload[{}]: error: {e:#}", getpid());
                1
            }
        };
        // SAFETY: terminate the child without unwinding into the parent's
        // state.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Wait for `pid` at most `timeout`; on timeout SIGKILL it, reap it, fail.
pub fn wait_child(pid: i32, timeout: Duration) -> anyhow::Result<ChildExit> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: valid pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            bail!("waitpid({pid}): {e}");
        }
        if rc == pid {
            if libc::WIFEXITED(status) {
                return Ok(ChildExit::Code(libc::WEXITSTATUS(status)));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(ChildExit::Signal(libc::WTERMSIG(status)));
            }
        }
        if Instant::now() >= deadline {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            bail!(
                "child {pid} did not exit within {:.1} s; killed it",
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Fail unless the child exited 0.
pub fn expect_child_ok(pid: i32, timeout: Duration, what: &str) -> anyhow::Result<()> {
    match wait_child(pid, timeout)? {
        ChildExit::Code(0) => Ok(()),
        ChildExit::Code(c) => bail!("{what} (pid {pid}) exited with status {c}"),
        ChildExit::Signal(s) => bail!("{what} (pid {pid}) was killed by signal {s}"),
    }
}

// ---------------------------------------------------------------------------
// sysfs

pub fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The nvdimm pfn and dax devices with their mode, alignment and bound
/// namespace: `{"pfn0.0": {"mode": "pmem", "align": 2097152, "namespace":
/// "namespace0.0"}}`. Empty where there is no nvdimm bus.
pub fn nd_devices() -> Obj {
    let mut o = Obj::new();
    let Ok(rd) = std::fs::read_dir("/sys/bus/nd/devices") else {
        return o;
    };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pfn") || n.starts_with("dax"))
        .collect();
    names.sort();
    for n in names {
        let base = Path::new("/sys/bus/nd/devices").join(&n);
        let ns = read_trim(base.join("namespace")).unwrap_or_default();
        if ns.is_empty() {
            continue; // an unconfigured seed device
        }
        let mut d = Obj::new().with("namespace", ns);
        if let Some(m) = read_trim(base.join("mode")) {
            d.set("mode", m);
        }
        if let Some(a) = read_trim(base.join("align")).and_then(|a| a.parse::<u64>().ok()) {
            d.set("align", a);
        }
        let driver = std::fs::read_link(base.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
        d.set("driver", driver);
        o.set(&n, d);
    }
    o
}

/// Alignment and size of device-dax `name` (e.g. "dax0.0") from sysfs.
pub fn devdax_geometry(name: &str) -> (Option<usize>, Option<u64>) {
    for base in ["/sys/bus/dax/devices", "/sys/class/dax"] {
        let b = Path::new(base).join(name);
        if b.exists() {
            let align = read_trim(b.join("align")).and_then(|s| s.parse().ok());
            let size = read_trim(b.join("size")).and_then(|s| s.parse().ok());
            return (align, size);
        }
    }
    (None, None)
}

/// The physical address a device-dax device starts at (its sysfs
/// `resource`, hexadecimal), when it has one range.
pub fn devdax_resource(name: &str) -> Option<u64> {
    ["/sys/bus/dax/devices", "/sys/class/dax"]
        .iter()
        .map(|base| Path::new(base).join(name).join("resource"))
        .find_map(read_trim)
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
}

/// Elapsed milliseconds as f64.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
