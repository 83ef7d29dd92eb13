//! refscope's own guest tests (`cargo xtask test`, group "vm"): the
//! harness (`vm`) boots and runs; what is checked lives here.
//!
//! Each case is one boot; checks are batched into as few boots as the
//! options allow (a boot costs ~10-15 s under TCG). A case that cannot run
//! (download, build or QEMU failure) fails with the reason: nothing is
//! skipped.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

mod hardening;

use crate::{
    util::{self, step},
    vm::{
        self, Align, Fs, IncidentKind, KernelChoice, MemmapOn, NsMode, PmemKind, VmConfig,
        VmOutcome,
    },
};

/// One case's result, for test.rs's summary.
pub struct CaseResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub secs: f64,
}

/// A check on the outcome; `share` is the case's host directory.
type Check = fn(&VmOutcome, &Path) -> Result<(), String>;

struct Case {
    name: &'static str,
    kernel: &'static str,
    configure: fn(&mut VmConfig),
    script: &'static str,
    check: Check,
}

/// DAX mount and a file through /share (the issue's first two checks).
const MOUNT_AND_SHARE: &str = r#"
grep " /mnt/dax " /proc/mounts
echo "hello from $(uname -r)" > /share/roundtrip
"#;

/// Same, then fail on purpose: the status must reach the host.
const MOUNT_SHARE_FALSE: &str = r#"
grep " /mnt/dax " /proc/mounts
echo "hello from $(uname -r)" > /share/roundtrip
false
"#;

/// Map 8 MiB of a file on a 2 MiB-aligned DAX filesystem and check with the
/// kernel's fs_dax tracepoint that faults were served as PMDs (NOPAGE =
/// a PMD was installed; FALLBACK would mean 4 KiB PTEs).
const PMD_FAULT: &str = r#"
set -e
grep " /mnt/dax " /proc/mounts
ev=/sys/kernel/tracing/events/fs_dax/dax_pmd_fault_done
echo 1 > $ev/enable
vm-touch /mnt/dax/pmd 8
echo 0 > $ev/enable
grep dax_pmd_fault_done /sys/kernel/tracing/trace | head -n 4
if ! grep -q "dax_pmd_fault_done.*NOPAGE" /sys/kernel/tracing/trace; then
    echo "no dax_pmd_fault_done with result NOPAGE: the mapping did not use PMDs" >&2
    exit 1
fi
"#;

/// device-dax: the character device exists and can be mapped and written.
const DEVDAX: &str = r#"
set -e
ls /dev/dax*
cat /sys/bus/dax/devices/dax0.0/size
vm-touch /dev/dax0.0 4
"#;

/// Remove the pmem device while a process maps DAX pages. 7.3.4 oopses in
/// __zap_vma_range when the mapping goes away, then wedges (RCU stall).
const UNPLUG_WHILE_MAPPED: &str = r#"
vm-touch /mnt/dax/held 1 --hold 4 &
sleep 2
pfn=$(ls -d /sys/bus/nd/drivers/nd_pmem/pfn* | head -n 1)
echo "unbinding ${pfn##*/} while vm-touch maps /mnt/dax/held"
echo "${pfn##*/}" > /sys/bus/nd/drivers/nd_pmem/unbind
wait
"#;

const CASES: &[Case] = &[
    Case {
        name: "6.1: dax mount, /share",
        kernel: "6.1",
        configure: no_change,
        script: MOUNT_AND_SHARE,
        check: mounted_and_shared_exit::<0>,
    },
    Case {
        name: "6.12: dax mount, /share, exit 1",
        kernel: "6.12",
        configure: no_change,
        script: MOUNT_SHARE_FALSE,
        check: mounted_and_shared_exit::<1>,
    },
    Case {
        name: "7.3: dax mount, /share",
        kernel: "7.3",
        configure: no_change,
        script: MOUNT_AND_SHARE,
        check: mounted_and_shared_exit::<0>,
    },
    Case {
        name: "6.12: xfs, 2m, PMD faults",
        kernel: "6.12",
        configure: xfs_2m,
        script: PMD_FAULT,
        check: pmd_faults,
    },
    Case {
        name: "7.3: xfs, 2m, PMD faults",
        kernel: "7.3",
        configure: xfs_2m,
        script: PMD_FAULT,
        check: pmd_faults,
    },
    Case {
        name: "7.3: ext4, 2m, PMD faults",
        kernel: "7.3",
        configure: ext4_2m,
        script: PMD_FAULT,
        check: pmd_faults,
    },
    Case {
        name: "6.12: nvdimm pmem, dax mount",
        kernel: "6.12",
        configure: nvdimm,
        script: MOUNT_AND_SHARE,
        check: mounted_and_shared_exit::<0>,
    },
    Case {
        name: "6.12: devdax, memmap in ram",
        kernel: "6.12",
        configure: devdax_ram,
        script: DEVDAX,
        check: devdax_mapped,
    },
    Case {
        name: "6.12: panic is a failure",
        kernel: "6.12",
        configure: no_change,
        script: "echo c > /proc/sysrq-trigger\n",
        check: panic_detected,
    },
    Case {
        name: "6.12: WARN fails exit 0",
        kernel: "6.12",
        configure: no_change,
        // No user-space trigger for a real WARN exists in these kernels
        // (no LKDTM); a WARN-shaped line through /dev/kmsg takes the same
        // path to the console and the scanner.
        script: "echo '<4>WARNING: CPU: 0 PID: 1 at refscope/vm-test.c:1 guest_test+0x0/0x1' > /dev/kmsg\n",
        check: warn_detected,
    },
    Case {
        name: "6.12: hang killed at timeout",
        kernel: "6.12",
        configure: short_timeout,
        script: "echo sleeping; sleep 600\n",
        check: timed_out,
    },
    Case {
        name: "6.12: signals, SIGKILL, full disk",
        kernel: "6.12",
        configure: hardening::long_timeout,
        script: hardening::SIGNALS,
        check: hardening::signals_checked,
    },
    Case {
        name: "7.3: no root, caps, BTF; lockdown",
        kernel: "7.3",
        configure: hardening::long_timeout,
        script: hardening::PRIVILEGES,
        check: hardening::privileges_checked,
    },
    Case {
        name: "7.3: unplug oops (expected)",
        kernel: "7.3",
        configure: no_change,
        script: UNPLUG_WHILE_MAPPED,
        check: expected_oops,
    },
];

fn no_change(_: &mut VmConfig) {}

fn xfs_2m(cfg: &mut VmConfig) {
    cfg.fs = Fs::Xfs;
    cfg.align = Align::M2;
}

fn ext4_2m(cfg: &mut VmConfig) {
    cfg.align = Align::M2;
}

fn nvdimm(cfg: &mut VmConfig) {
    cfg.pmem = PmemKind::Nvdimm;
}

fn devdax_ram(cfg: &mut VmConfig) {
    cfg.mode = NsMode::Devdax;
    cfg.memmap_on = MemmapOn::Ram;
    cfg.align = Align::M2;
}

const SHORT_TIMEOUT: u64 = 30;

fn short_timeout(cfg: &mut VmConfig) {
    cfg.timeout = Duration::from_secs(SHORT_TIMEOUT);
}

fn stdout(o: &VmOutcome) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn mounted_and_shared_exit<const STATUS: i32>(o: &VmOutcome, share: &Path) -> Result<(), String> {
    if o.exit_status != Some(STATUS) {
        return Err(format!(
            "expected exit status {STATUS}, got {:?}",
            o.exit_status
        ));
    }
    if o.exit_code(false) != STATUS as u8 {
        return Err(format!(
            "xtask would exit {}, not {STATUS}",
            o.exit_code(false)
        ));
    }
    if o.real_incidents().next().is_some() {
        return Err(format!("kernel incidents: {:?}", o.incidents));
    }
    let out = stdout(o);
    let line = out
        .lines()
        .find(|l| l.contains(" /mnt/dax "))
        .ok_or_else(|| format!("no /mnt/dax line in /proc/mounts output: {out:?}"))?;
    let opts = line.split_whitespace().nth(3).unwrap_or("");
    if !opts.split(',').any(|o| o == "dax" || o == "dax=always") {
        return Err(format!("/mnt/dax is not mounted with DAX: {line}"));
    }
    let file = share.join("roundtrip");
    let text = fs::read_to_string(&file)
        .map_err(|e| format!("{} was not written by the guest: {e}", file.display()))?;
    if !text.starts_with("hello from ") {
        return Err(format!("{} holds {text:?}", file.display()));
    }
    Ok(())
}

fn pmd_faults(o: &VmOutcome, _: &Path) -> Result<(), String> {
    o.verdict(false)?;
    let out = stdout(o);
    if !out.contains("NOPAGE") {
        return Err(format!("no NOPAGE PMD fault in the trace: {out}"));
    }
    Ok(())
}

fn devdax_mapped(o: &VmOutcome, _: &Path) -> Result<(), String> {
    o.verdict(false)?;
    let out = stdout(o);
    if !out.contains("/dev/dax0.0") || !out.contains("vm-touch: wrote 4 MiB") {
        return Err(format!("unexpected output: {out}"));
    }
    Ok(())
}

fn panic_detected(o: &VmOutcome, _: &Path) -> Result<(), String> {
    let Err(reason) = o.verdict(false) else {
        return Err("a guest that panicked passed".into());
    };
    if !o.has(IncidentKind::Panic) {
        return Err(format!("no panic incident; verdict: {reason}"));
    }
    let report = o.failure_report(false);
    if !report.contains("Kernel panic - not syncing: sysrq triggered crash") {
        return Err(format!(
            "the failure report lacks the panic text:\n{report}"
        ));
    }
    if o.exit_code(false) == 0 {
        return Err("exit code 0 for a panic".into());
    }
    eprint!("{report}");
    Ok(())
}

fn warn_detected(o: &VmOutcome, _: &Path) -> Result<(), String> {
    if o.exit_status != Some(0) {
        return Err(format!(
            "the command should succeed, got {:?}",
            o.exit_status
        ));
    }
    let Err(reason) = o.verdict(false) else {
        return Err("a run with a WARN passed".into());
    };
    if !o.has(IncidentKind::Warn) || !reason.contains("refscope/vm-test.c:1") {
        return Err(format!("the WARN was not reported: {reason}"));
    }
    if o.exit_code(false) != 1 {
        return Err(format!("exit code {} for a WARN", o.exit_code(false)));
    }
    Ok(())
}

fn timed_out(o: &VmOutcome, _: &Path) -> Result<(), String> {
    if !o.timed_out || o.verdict(false).is_ok() {
        return Err(format!(
            "expected a timeout failure; timed_out={} verdict={:?}",
            o.timed_out,
            o.verdict(false)
        ));
    }
    if o.total_secs > (SHORT_TIMEOUT + 15) as f64 {
        return Err(format!("took {:.0} s to give up", o.total_secs));
    }
    if !stdout(o).contains("sleeping") {
        return Err("the command's output before the hang was lost".into());
    }
    Ok(())
}

fn expected_oops(o: &VmOutcome, _: &Path) -> Result<(), String> {
    o.verdict(true)?;
    if o.verdict(false).is_ok() {
        return Err("an oops passed without --expect-oops".into());
    }
    if o.total_secs > 120.0 {
        return Err(format!("the wedged guest ran {:.0} s", o.total_secs));
    }
    let oops = o
        .incidents
        .iter()
        .find(|i| i.kind == IncidentKind::Oops)
        .map(|i| i.headline().to_owned())
        .unwrap_or_default();
    eprintln!("    expected oops: {oops} (killed: {})", o.killed);
    Ok(())
}

/// Run the cases whose name contains `filter` (all with `None`).
pub fn run_all(filter: Option<&str>) -> Vec<CaseResult> {
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .collect();
    let binaries = match vm::guest_binaries(false) {
        Ok(b) => b,
        Err(e) => {
            let detail = format!("cannot build the guest binaries: {e:#}");
            return cases
                .iter()
                .map(|c| CaseResult {
                    name: format!("vm: {}", c.name),
                    ok: false,
                    detail: detail.clone(),
                    secs: 0.0,
                })
                .collect();
        }
    };
    cases.iter().map(|c| run_case(c, &binaries)).collect()
}

fn run_case(case: &Case, binaries: &[PathBuf]) -> CaseResult {
    step(format!("vm test: {}", case.name));
    let t = Instant::now();
    let result = (|| -> Result<(), String> {
        let share = share_dir(case.name).map_err(|e| format!("{e:#}"))?;
        let mut cfg = VmConfig::new(
            KernelChoice::Pinned(case.kernel.into()),
            Some(vec!["sh".into(), "-c".into(), case.script.into()]),
        );
        cfg.binaries = binaries.to_vec();
        cfg.share = Some(share.clone());
        cfg.echo_output = false;
        (case.configure)(&mut cfg);
        let outcome = vm::run(&cfg).map_err(|e| format!("could not run the guest: {e:#}"))?;
        if let Some(b) = outcome.boot_secs {
            util::note(format!("{}: boot-to-command {b:.1} s", outcome.kernel));
        }
        (case.check)(&outcome, &share).map_err(|e| {
            let detail = format!(
                "{e}\n--- guest stdout ---\n{}\n--- guest stderr ---\n{}\n{}",
                String::from_utf8_lossy(&outcome.stdout).trim_end(),
                String::from_utf8_lossy(&outcome.stderr).trim_end(),
                outcome.failure_report(false)
            );
            // The summary shows a few lines; the log gets everything (and
            // in CI the whole console, which no one can look at later).
            eprintln!("FAIL {}: {detail}", case.name);
            if util::in_ci() {
                eprintln!("--- full console ---\n{}", outcome.console);
            }
            detail
        })
    })();
    CaseResult {
        name: format!("vm: {}", case.name),
        ok: result.is_ok(),
        detail: result.err().unwrap_or_default(),
        secs: t.elapsed().as_secs_f64(),
    }
}

/// A fresh, empty host directory for one case's /share.
fn share_dir(name: &str) -> anyhow::Result<PathBuf> {
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = util::cache_dir()?.join("vm/test-share").join(slug);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
