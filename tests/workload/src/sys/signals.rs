//! Signals: handlers, masks, and what a pending signal means.

use super::*;

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
pub(super) fn hex_into(mut v: u64, buf: &mut [u8; 18]) -> &[u8] {
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
