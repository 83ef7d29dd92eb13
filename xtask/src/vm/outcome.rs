//! What happened in one guest boot, and whether that is a pass.

use super::*;

/// What happened in one boot.
#[derive(Debug, Clone, Default)]
pub struct VmOutcome {
    /// Kernel label (`6.12`, or the image's file name).
    pub kernel: String,
    pub accel: &'static str,
    /// The command's exit status, if it finished.
    pub exit_status: Option<i32>,
    /// Why the guest could not set up (modules, namespace, mkfs, mount...).
    pub setup_error: Option<String>,
    /// Splats seen on the console (plus one if the taint flags show a WARN
    /// or oops the console missed).
    pub incidents: Vec<Incident>,
    /// `/proc/sys/kernel/tainted` after the command.
    pub taint: Option<u64>,
    /// Host seconds from starting QEMU to the command's start.
    pub boot_secs: Option<f64>,
    /// The guest's uptime when the command started.
    pub guest_uptime_secs: Option<f64>,
    pub total_secs: f64,
    pub timed_out: bool,
    /// Killed by the watchdog after a fatal incident's grace period.
    pub killed: bool,
    /// The kernel console, whole.
    pub console: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// QEMU's own messages, its exit status and its fatal error if it had one.
    pub qemu_output: String,
    pub qemu_status: Option<i32>,
    pub qemu_fatal: Option<String>,
}

pub(super) const TAINT_DIE: u64 = 1 << 7;
pub(super) const TAINT_WARN: u64 = 1 << 9;

impl VmOutcome {
    pub fn has(&self, kind: IncidentKind) -> bool {
        self.incidents.iter().any(|i| i.kind == kind)
    }

    /// Why `incident` does not count against the run: a known emulator
    /// artifact while running under TCG.
    pub fn ignored_artifact(&self, incident: &Incident) -> Option<&'static str> {
        if self.accel == Accel::Tcg.name() {
            incident.tcg_artifact()
        } else {
            None
        }
    }

    /// Incidents that count (known TCG artifacts under TCG do not).
    pub fn real_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents
            .iter()
            .filter(|i| self.ignored_artifact(i).is_none())
    }

    /// Pass or fail, with the reason. With `expect_oops`, an oops is the
    /// expected result and the command's status does not matter.
    pub fn verdict(&self, expect_oops: bool) -> Result<(), String> {
        if let Some(e) = &self.qemu_fatal {
            return Err(format!("QEMU failed: {e}"));
        }
        if let Some(e) = &self.setup_error {
            return Err(format!("guest setup failed: {e}"));
        }
        if expect_oops {
            return if self.has(IncidentKind::Oops) {
                Ok(())
            } else {
                Err(format!(
                    "expected a kernel oops, none happened ({})",
                    self.end_summary()
                ))
            };
        }
        let problems: Vec<String> = self
            .real_incidents()
            .map(|i| format!("{}: {}", i.kind, i.headline()))
            .collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        match self.exit_status {
            Some(0) if !self.timed_out => Ok(()),
            _ => Err(self.end_summary()),
        }
    }

    /// How the run ended, in words.
    fn end_summary(&self) -> String {
        if self.timed_out {
            return format!("timed out after {:.0} s", self.total_secs);
        }
        match self.exit_status {
            Some(0) => "the command exited with status 0".into(),
            Some(n) => format!("the command exited with status {n}"),
            None if self.killed => "the guest was killed after the grace period".into(),
            None if self.console.trim().is_empty() => format!(
                "QEMU exited ({}) before the guest booted",
                self.qemu_status
                    .map_or("killed".into(), |c| format!("status {c}"))
            ),
            None => "the guest stopped before the command finished".into(),
        }
    }

    /// The exit status `cargo xtask vm` should have for this outcome.
    pub fn exit_code(&self, expect_oops: bool) -> u8 {
        match (self.verdict(expect_oops), self.exit_status) {
            (Ok(()), _) => 0,
            (Err(_), Some(n)) if !expect_oops && (1..=255).contains(&n) => n as u8,
            _ => 1,
        }
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// What to show when the run failed: each splat in full, else the
    /// console's tail.
    pub fn failure_report(&self, expect_oops: bool) -> String {
        let mut text = String::new();
        let reason = self.verdict(expect_oops).err().unwrap_or_default();
        let _ = writeln!(text, "{}: FAILED: {reason}", self.kernel);
        for i in &self.incidents {
            match self.ignored_artifact(i) {
                Some(why) => {
                    let _ = writeln!(text, "--- {} (ignored: {why}) ---\n{}", i.kind, i.text);
                }
                None => {
                    let _ = writeln!(text, "--- {} ---\n{}", i.kind, i.text);
                }
            }
        }
        // The console's tail explains a setup failure, a hang or a guest
        // that died quietly; a command that merely failed needs none.
        let quiet_death = self.incidents.is_empty() && self.exit_status.is_none();
        if (self.setup_error.is_some() || self.timed_out || quiet_death)
            && !self.console.trim().is_empty()
        {
            let _ = writeln!(
                text,
                "--- last console lines ---\n{}",
                self.console_tail(40)
            );
        }
        if !self.qemu_output.trim().is_empty() {
            let _ = writeln!(text, "--- QEMU ---\n{}", self.qemu_output.trim_end());
        }
        text
    }
}

impl VmOutcome {
    /// Why this run ended in a known artifact of TCG's live code patching,
    /// if it did: a crash before the command started, or a CPU stuck on an
    /// ftrace call site ([`Incident::stuck_at_call_site`]).
    pub(super) fn tcg_artifact_crash(&self, accel: Accel) -> Option<String> {
        if let Some(headline) = self.crashed_before_command(accel) {
            return Some(format!(
                "the guest kernel crashed while booting, before the command ran ({headline})"
            ));
        }
        if accel != Accel::Tcg {
            return None;
        }
        if self.hung_before_init() {
            return Some(
                "the guest kernel stopped making progress while booting: nothing on the \
                 console after its early messages, init never ran"
                    .into(),
            );
        }
        self.incidents.iter().find_map(|i| {
            i.stuck_at_call_site().map(|f| {
                format!(
                    "live code patching tripped a CPU on the ftrace call site of {f} ({})",
                    i.headline()
                )
            })
        })
    }

    /// The run timed out with the kernel still booting: no incident, no
    /// setup step, and init never printed a line. Nothing of refscope or
    /// of the command has run yet (TCG very rarely wedges early in boot).
    pub(super) fn hung_before_init(&self) -> bool {
        self.timed_out
            && self.boot_secs.is_none()
            && self.setup_error.is_none()
            && self.incidents.is_empty()
            && !self.console.contains("init: ")
    }

    /// The headline of a fatal incident that happened under TCG before the
    /// guest command started (and before any setup step reported), if any.
    pub(super) fn crashed_before_command(&self, accel: Accel) -> Option<String> {
        if accel != Accel::Tcg || self.setup_error.is_some() {
            return None;
        }
        // Before the command: it never started, or the splat's printk time
        // is earlier than the guest uptime at which it started (a kernel
        // thread may oops while init goes on).
        let before = |i: &Incident| match (self.boot_secs, self.guest_uptime_secs, i.t) {
            (None, ..) => true,
            (Some(_), Some(start), Some(t)) => t < start,
            _ => false,
        };
        self.incidents
            .iter()
            .find(|i| matches!(i.kind, IncidentKind::Panic | IncidentKind::Oops) && before(i))
            .map(|i| i.headline().to_owned())
    }
}
