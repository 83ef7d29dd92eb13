//! Child processes.

use super::*;

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
