//! `refscope bench-floor` (hidden; for `cargo xtask bench`): the empty
//! programs on the plan `record` would attach, until a stop signal. The
//! benchmark's `floor` mode: what attaching anything at all to refscope's
//! hooks costs, the bound no tracer on them can beat (docs/benchmarks.md).

use std::{io, process::ExitCode};

use anyhow::bail;
use clap::ValueEnum as _;

use crate::{cli::BenchFloorArgs, output, probe::loader, session::Facts};

pub fn run(args: BenchFloorArgs) -> anyhow::Result<ExitCode> {
    // Blocked from the start, so a stop signal that comes while the
    // programs attach waits for `sigwait` instead of killing us half way.
    let signals = StopSignals::block()?;
    let facts = Facts::gather();
    if let Some(why) = facts.blocker() {
        bail!("{why}");
    }
    // The same plan as `record` (and the same checks), never a copy of it.
    let plan = facts.trace_plan(args.attach, &args.skip_hooks)?;
    let floor = loader::load_floor(&plan)?;
    if floor.attached.is_empty()
        && let Some(f) = floor.failures.first()
    {
        bail!("{}", facts.refusal(f, floor.failures.len(), 0));
    }
    for f in &floor.failures {
        log::warn!(
            "could not attach {} to {}: {}",
            f.program,
            f.hook.function(),
            f.error
        );
    }
    let mut functions: Vec<&str> = floor.attached.iter().map(|(_, h)| h.function()).collect();
    functions.dedup();
    eprintln!(
        "refscope bench-floor: {} empty programs attached to {} functions (the plan of `record --attach {}`), kernel {}",
        floor.attached.len(),
        functions.len(),
        args.attach
            .to_possible_value()
            .map_or_else(|| "auto".into(), |v| v.get_name().to_owned()),
        facts.release
    );
    if let Some(ready) = &args.ready_file {
        output::write_ready_file(ready)?;
    }
    let sig = signals.wait()?;
    let (runs, time) = floor.run_stats();
    eprintln!(
        "refscope bench-floor: signal {sig}: detaching; {runs} runs, {:.3} s in the programs",
        time.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// SIGINT, SIGTERM and SIGHUP, blocked in this thread (and the threads it
/// starts later) until [`StopSignals::wait`] takes one.
struct StopSignals(libc::sigset_t);

impl StopSignals {
    fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data that sigemptyset initialises;
        // pthread_sigmask only reads the set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            Ok(StopSignals(set))
        }
    }

    /// Sleep until one of them comes; its number.
    fn wait(&self) -> io::Result<i32> {
        let mut sig = 0;
        // SAFETY: both pointers are valid for the call.
        let r = unsafe { libc::sigwait(&self.0, &mut sig) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(sig)
    }
}
