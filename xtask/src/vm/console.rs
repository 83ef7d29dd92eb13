//! Scanning the guest's kernel console for trouble: panics, oopses, BUG and
//! WARN splats, RCU stalls, soft lockups and hung tasks.
//!
//! The console arrives line by line; each splat becomes one [`Incident`]
//! holding the splat's lines (from `cut here` or the first marker line to
//! `---[ end trace`, or at most [`MAX_LINES`]). The scanner is pure so it can
//! be tested on recorded console logs.

use std::fmt;

/// The most lines kept per incident.
pub const MAX_LINES: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IncidentKind {
    /// `Kernel panic - not syncing`.
    Panic,
    /// An oops: a fault or `kernel BUG at` in kernel code.
    Oops,
    /// A `BUG:` report the kernel survives (bad page state, sleeping in
    /// atomic context, ...).
    Bug,
    /// A `WARNING:` splat (WARN_ON and friends, lockdep).
    Warn,
    RcuStall,
    SoftLockup,
    HungTask,
}

impl IncidentKind {
    /// After these the guest is likely wedged: the runner gives it a short
    /// grace period to finish, then kills it.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::Panic | Self::Oops | Self::RcuStall | Self::SoftLockup | Self::HungTask
        )
    }
}

impl fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Panic => "kernel panic",
            Self::Oops => "kernel oops",
            Self::Bug => "kernel BUG report",
            Self::Warn => "kernel WARN",
            Self::RcuStall => "RCU stall",
            Self::SoftLockup => "soft lockup",
            Self::HungTask => "hung task",
        })
    }
}

/// One splat seen on the console.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub kind: IncidentKind,
    /// The splat's console lines, timestamps removed.
    pub text: String,
    /// The printk time (guest uptime, s) of its first line, when it had one.
    pub t: Option<f64>,
}

impl Incident {
    /// The line that names the problem (e.g. `BUG: unable to handle page
    /// fault for address: ...`), for one-line summaries.
    pub fn headline(&self) -> &str {
        self.text
            .lines()
            .find(|l| classify(l).is_some())
            .or_else(|| self.text.lines().next())
            .unwrap_or("")
    }

    /// Why this splat is a known artifact of QEMU's TCG emulation rather
    /// than a kernel problem, if it is one. Only meaningful under TCG.
    ///
    /// - `exc_debug_kernel` WARN: a single-step #DB in kernel mode, which
    ///   the kernel never requests; its source says QEMU can leak one. Seen
    ///   here during early boot with a corrupted RFLAGS (TF and reserved
    ///   bits set) right after an emulated `cmpxchg16b`, once in ~60 boots.
    pub fn tcg_artifact(&self) -> Option<&'static str> {
        let headline = self.headline();
        (self.kind == IncidentKind::Warn
            && headline.contains("arch/x86/kernel/traps.c")
            && headline.contains("exc_debug_kernel"))
        .then_some("spurious single-step #DB in kernel mode (QEMU TCG)")
    }

    /// The function whose ftrace call site live code patching tripped a
    /// CPU on, when this is one of the two ways TCG shows it:
    /// - a soft lockup or RCU stall with the CPU at offset 0 of a function
    ///   and the instruction there a call (`e8`, the site patched to a BPF
    ///   trampoline) or a breakpoint (`cc`, the site being patched). Seen
    ///   once in ~40 boots, when refscope attached fentry to a function
    ///   another CPU was running at that moment (a forked shell's
    ///   copy-on-write fault in `page_add_new_anon_rmap`);
    /// - an `int3` oops whose RIP is right after a call (`e8`) or breakpoint
    ///   (`cc`) byte, or after the first byte of ftrace's 5-byte NOP
    ///   (`0f 1f 44 00 00`, the site restored when a program is detached),
    ///   in the first 16 bytes of a function: text_poke_bp's int3, executed
    ///   by another CPU, and already gone when the int3 handler looked for
    ///   it (seen on 7.3's `folio_add_new_anon_rmap` while `refscope
    ///   doctor` attached, and on 6.12's `insert_pfn` while `refscope
    ///   record` stopped on a full disk with the workload faulting).
    ///
    /// Live code patching (text_poke_bp's int3 and IPIs) under emulation,
    /// not the function.
    pub fn stuck_at_call_site(&self) -> Option<String> {
        let int3 = self.kind == IncidentKind::Oops && self.text.contains("Oops: int3");
        if !int3 && !matches!(self.kind, IncidentKind::SoftLockup | IncidentKind::RcuStall) {
            return None;
        }
        let lines: Vec<&str> = self.text.lines().collect();
        let at = lines.iter().position(|l| l.contains("RIP: 0010:"))?;
        let (_, rip) = lines[at].split_once("RIP: 0010:")?;
        let (name, off) = rip.trim().split_once('+')?;
        let off = u64::from_str_radix(off.split('/').next()?.trim_start_matches("0x"), 16).ok()?;
        let code = lines.get(at + 1).filter(|l| l.contains("Code:"))?;
        let (before, rest) = code.split_once('<')?;
        let patched = if int3 {
            // The trap reports the address after the int3.
            if off == 0 || off > 16 {
                return None;
            }
            let byte = before.split_whitespace().last()?;
            let after: Vec<&str> = rest.split_whitespace().take(4).collect();
            let nop_tail = after.join(" ").replace(['<', '>'], "") == "1f 44 00 00";
            matches!(byte, "e8" | "cc") || (byte == "0f" && nop_tail)
        } else {
            if off != 0 {
                return None;
            }
            matches!(rest.split_once('>')?.0, "e8" | "cc")
        };
        patched.then(|| name.to_owned())
    }
}

/// Feeds on console lines, collects incidents.
#[derive(Debug, Default)]
pub struct Scanner {
    incidents: Vec<Incident>,
    /// Lines of the incident being collected (index into `incidents`).
    open: Option<usize>,
    open_lines: usize,
    /// A `cut here` line waiting for the marker that follows it.
    cut: Option<String>,
}

impl Scanner {
    /// Feed one console line (without its newline). Returns the kind of a
    /// new incident if this line started one.
    pub fn feed(&mut self, raw: &str) -> Option<IncidentKind> {
        let line = strip_prefix(raw.trim_end_matches('\r'));
        if line.contains("------------[ cut here ]------------") {
            self.close();
            self.cut = Some(line.to_owned());
            return None;
        }
        let kind = classify(line);
        if let Some(i) = self.open {
            let open_kind = self.incidents[i].kind;
            // A panic always starts its own incident; a marker of another
            // kind after a complete stall/lockup report starts a new one.
            let starts_new = match kind {
                Some(IncidentKind::Panic) => open_kind != IncidentKind::Panic,
                Some(k) => {
                    k != open_kind
                        && !(open_kind == IncidentKind::Oops && k == IncidentKind::Bug)
                        && !(open_kind == IncidentKind::Bug && k == IncidentKind::Oops)
                }
                None => false,
            };
            if !starts_new {
                self.append(i, line);
                if line.contains("---[ end ") || self.open_lines >= MAX_LINES {
                    self.close();
                }
                return None;
            }
            self.close();
        }
        let Some(kind) = kind else {
            // `cut here` followed by something unclassified: drop the cut.
            self.cut = None;
            return None;
        };
        let mut text = self.cut.take().map(|c| c + "\n").unwrap_or_default();
        text.push_str(line);
        self.incidents.push(Incident {
            kind,
            text,
            t: printk_time(raw),
        });
        self.open = Some(self.incidents.len() - 1);
        self.open_lines = 1;
        if line.contains("---[ end ") {
            self.close();
        }
        Some(kind)
    }

    fn append(&mut self, i: usize, line: &str) {
        let text = &mut self.incidents[i].text;
        text.push('\n');
        text.push_str(line);
        self.open_lines += 1;
    }

    fn close(&mut self) {
        self.open = None;
        self.open_lines = 0;
    }

    pub fn into_incidents(self) -> Vec<Incident> {
        self.incidents
    }
}

/// The printk timestamp of a console line (`[   12.345678] ...`), seconds.
fn printk_time(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    rest[..rest.find(']')?].trim().parse().ok()
}

/// Drop the printk timestamp (`[   12.345678] `) and caller id (`[  T123] `).
fn strip_prefix(mut line: &str) -> &str {
    for _ in 0..2 {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix('[')
            && let Some(end) = rest.find(']')
        {
            let inside = rest[..end].trim();
            let is_prefix = !inside.is_empty()
                && inside
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == 'T' || c == 'C');
            if is_prefix {
                line = rest[end + 1..]
                    .strip_prefix(' ')
                    .unwrap_or(&rest[end + 1..]);
                continue;
            }
        }
        break;
    }
    line
}

/// What kind of splat a (prefix-stripped) console line starts, if any.
pub fn classify(line: &str) -> Option<IncidentKind> {
    use IncidentKind::*;
    let l = line.trim_start();
    if l.starts_with("Kernel panic - not syncing") {
        Some(Panic)
    } else if l.contains("BUG: soft lockup") || l.contains("Watchdog detected hard LOCKUP") {
        Some(SoftLockup)
    } else if l.starts_with("rcu: INFO: ") && l.contains("stall") {
        Some(RcuStall)
    } else if l.starts_with("INFO: task ") && l.contains("blocked for more than") {
        Some(HungTask)
    } else if l.starts_with("Oops: ")
        || l.starts_with("kernel BUG at ")
        || l.starts_with("general protection fault")
        || l.starts_with("BUG: unable to handle")
        || l.starts_with("BUG: kernel NULL pointer dereference")
        || l.starts_with("BUG: Unable to handle")
        || l.starts_with("stack segment: ")
        || l.starts_with("invalid opcode: ")
    {
        Some(Oops)
    } else if l.starts_with("BUG: ") || l.starts_with("UBSAN: ") {
        Some(Bug)
    } else if l.starts_with("WARNING: ") {
        Some(Warn)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(log: &str) -> Vec<Incident> {
        let mut s = Scanner::default();
        for line in log.lines() {
            s.feed(line);
        }
        s.into_incidents()
    }

    #[test]
    fn quiet_boot_has_no_incidents() {
        let log = "\
[    0.000000] Linux version 6.12.117+deb12-amd64
[    1.234567] nd_pmem namespace0.0: unable to guarantee persistence of writes
[    2.000000] EXT4-fs (pmem0): mounted filesystem with ordered data mode.
[    2.100000] Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS";
        assert!(scan(log).is_empty());
    }

    #[test]
    fn warn_splat_is_one_incident_with_cut_line() {
        let log = "\
[   10.000000] ------------[ cut here ]------------
[   10.000001] WARNING: CPU: 1 PID: 77 at mm/memremap.c:123 memunmap_pages+0x1/0x2
[   10.000002] Modules linked in: nd_pmem
[   10.000003] Call Trace:
[   10.000004]  <TASK>
[   10.000005] ---[ end trace 0000000000000000 ]---
[   10.100000] EXT4-fs (pmem0): shut down requested (2)";
        let incidents = scan(log);
        assert_eq!(incidents.len(), 1);
        let i = &incidents[0];
        assert_eq!(i.kind, IncidentKind::Warn);
        assert!(!i.kind.is_fatal());
        assert!(i.text.starts_with("------------[ cut here ]"));
        assert!(i.text.ends_with("---[ end trace 0000000000000000 ]---"));
        assert!(!i.text.contains("shut down"));
        assert!(i.headline().starts_with("WARNING: CPU: 1 PID: 77"));
    }

    #[test]
    fn oops_then_rcu_stall_are_two_incidents() {
        let log = "\
[   20.000000] BUG: unable to handle page fault for address: ffffea0001200008
[   20.000001] #PF: supervisor read access in kernel mode
[   20.000002] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   20.000003] RIP: 0010:__zap_vma_range+0x2a0/0x9c0
[   20.000004] ---[ end trace 0000000000000000 ]---
[   41.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[   41.000001] rcu:     1-...0: (1 GPs behind)
[   41.000002] Sending NMI from CPU 0 to CPUs 1:";
        let incidents = scan(log);
        let kinds: Vec<_> = incidents.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [IncidentKind::Oops, IncidentKind::RcuStall]);
        assert!(incidents[0].text.contains("Oops: 0000 [#1]"));
        assert!(incidents[0].text.contains("__zap_vma_range"));
        assert!(incidents[1].text.contains("Sending NMI"));
        assert!(kinds.iter().all(|k| k.is_fatal()));
    }

    #[test]
    fn sysrq_panic() {
        let log = "\
[    9.000000] sysrq: Trigger a crash
[    9.000001] Kernel panic - not syncing: sysrq triggered crash
[    9.000002] CPU: 0 PID: 80 Comm: sh Not tainted 6.12.117+deb12-amd64 #1
[    9.000003] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---";
        let incidents = scan(log);
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].kind, IncidentKind::Panic);
        assert!(incidents[0].headline().contains("sysrq triggered crash"));
        assert!(incidents[0].text.contains("Comm: sh"));
    }

    #[test]
    fn panic_after_oops_is_separate() {
        let log = "\
Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1]
RIP: 0010:foo+0x1/0x2
Kernel panic - not syncing: Fatal exception";
        let kinds: Vec<_> = scan(log).iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [IncidentKind::Oops, IncidentKind::Panic]);
    }

    #[test]
    fn lockups_hung_tasks_and_bad_pages() {
        let log = "\
[  100.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:12]
[  101.0] INFO: task refscope-worklo:99 blocked for more than 120 seconds.
[  102.0] BUG: Bad page state in process refscope-worklo  pfn:48c00";
        let kinds: Vec<_> = scan(log).iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [
                IncidentKind::SoftLockup,
                IncidentKind::HungTask,
                IncidentKind::Bug
            ]
        );
    }

    #[test]
    fn long_splats_are_capped() {
        let mut log = String::from("WARNING: CPU: 0 PID: 1 at x.c:1 f\n");
        for i in 0..200 {
            log.push_str(&format!(" frame{i}\n"));
        }
        log.push_str("WARNING: CPU: 0 PID: 1 at y.c:2 g\n");
        let incidents = scan(&log);
        assert_eq!(incidents.len(), 2);
        assert_eq!(incidents[0].text.lines().count(), MAX_LINES);
    }

    #[test]
    fn tcg_debug_trap_warn_is_a_known_artifact() {
        let log = "\
[    0.120000] ------------[ cut here ]------------
[    0.120001] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/traps.c:1120 exc_debug_kernel+0xca/0x160
[    0.120002] ---[ end trace 0000000000000000 ]---
[    5.000000] WARNING: CPU: 1 PID: 9 at mm/memremap.c:1 memunmap_pages+0x1/0x2";
        let incidents = scan(log);
        assert!(incidents[0].tcg_artifact().is_some());
        assert!(incidents[1].tcg_artifact().is_none());
    }

    #[test]
    fn a_cpu_stuck_on_a_patched_call_site_is_recognised() {
        let stuck = "[   96.761370] watchdog: BUG: soft lockup - CPU#1 stuck for 67s! [sh:437]
[   96.761370] CPU: 1 PID: 437 Comm: sh Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2
[   96.761370] RIP: 0010:page_add_new_anon_rmap+0x0/0x120
[   96.761370] Code: 00 00 01 00 0f 85 99 fe ff ff 48 89 df 5b 5d 41 5c <e8> 4b 77 00 25 41 55
[   96.761370] Call Trace:
[   96.761370]  wp_page_copy+0x2fc/0x720";
        let i = &scan(stuck)[0];
        assert_eq!(i.kind, IncidentKind::SoftLockup);
        assert_eq!(
            i.stuck_at_call_site().as_deref(),
            Some("page_add_new_anon_rmap")
        );
        // Inside a function, or not at a call: a lockup like any other.
        let inside = stuck.replace("+0x0/0x120", "+0x37/0x120");
        assert_eq!(scan(&inside)[0].stuck_at_call_site(), None);
        let other = stuck.replace("<e8>", "<8b>");
        assert_eq!(scan(&other)[0].stuck_at_call_site(), None);
        // An oops at a call site is not this.
        let oops = "[    5.0] BUG: unable to handle page fault for address: 0000000000000008
[    5.0] Oops: 0000 [#1] SMP NOPTI
[    5.0] RIP: 0010:f+0x0/0x10
[    5.0] Code: 00 <e8> 00";
        assert_eq!(scan(oops)[0].stuck_at_call_site(), None);
    }

    #[test]
    fn an_int3_oops_on_a_patched_call_site_is_recognised() {
        let oops = "[   41.1] Oops: int3: 0000 [#1] SMP NOPTI
[   41.1] CPU: 0 UID: 0 PID: 291 Comm: sh Not tainted 7.3.4+deb13-amd64 #1 PREEMPT(lazy)
[   41.1] RIP: 0010:folio_add_new_anon_rmap+0x5/0x1d0
[   41.1] Code: ff e9 58 ff ff ff e8 ea 5f ac 00 66 2e 0f 1f 84 00 00 00 00 00 90 90 90 90 0f 1f 40 d6 e8 <37> 6b 31 24 53 48 89 f0
[   41.1] Call Trace:
[   41.1]  do_wp_page+0x777/0xf30";
        let i = &scan(oops)[0];
        assert_eq!(i.kind, IncidentKind::Oops);
        assert_eq!(
            i.stuck_at_call_site().as_deref(),
            Some("folio_add_new_anon_rmap")
        );
        // Deeper in a function, or after another instruction, or another
        // oops: a kernel problem like any other.
        let deep = oops.replace("+0x5/0x1d0", "+0x45/0x1d0");
        assert_eq!(scan(&deep)[0].stuck_at_call_site(), None);
        let other = oops.replace("d6 e8 <37>", "d6 48 <37>");
        assert_eq!(scan(&other)[0].stuck_at_call_site(), None);
        let fault = oops.replace("Oops: int3: 0000", "Oops: 0000");
        assert_eq!(scan(&fault)[0].stuck_at_call_site(), None);
    }

    #[test]
    fn an_int3_oops_on_a_call_site_just_restored_to_a_nop_is_recognised() {
        // A program detached while another CPU ran the function: the site
        // is ftrace's NOP again, the int3 already gone.
        let oops = "[   88.2] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[   88.2] CPU: 1 UID: 0 PID: 1017 Comm: refscope-worklo Not tainted 6.12.117+deb12-amd64 #1
[   88.2] RIP: 0010:insert_pfn+0x1/0x210
[   88.2] Code: cc cc cc cc cc cc cc cc cc cc cc cc cc cc cc cc cc cc cc cc 0f <1f> 44 00 00 41 57 41 56
[   88.2] Call Trace:
[   88.2]  vmf_insert_mixed+0x2e/0x40";
        assert_eq!(
            scan(oops)[0].stuck_at_call_site().as_deref(),
            Some("insert_pfn")
        );
        // Another instruction starting with 0f is not the site.
        let other = oops.replace("0f <1f> 44 00 00", "0f <b6> 44 00 00");
        assert_eq!(scan(&other)[0].stuck_at_call_site(), None);
    }

    #[test]
    fn prefixes_are_stripped() {
        assert_eq!(strip_prefix("[    1.000000] hello"), "hello");
        assert_eq!(strip_prefix("[    1.000000] [  T123] hello"), "hello");
        assert_eq!(strip_prefix("[ C1] x"), "x");
        assert_eq!(strip_prefix("[not a stamp] x"), "[not a stamp] x");
        assert_eq!(strip_prefix("plain"), "plain");
    }
}
