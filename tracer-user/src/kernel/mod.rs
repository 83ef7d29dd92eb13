//! Facts about the running kernel and our privileges: what `doctor`
//! reports and what the probe plan is computed from.

pub mod devices;
pub mod kallsyms;

use std::{collections::HashSet, fs, io, path::Path};

pub use kallsyms::Kallsyms;

/// Capability bits (linux/capability.h).
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYSLOG: u32 = 34;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// `uname -r`.
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// `(major, minor)` of a release string such as `6.12.117+deb12-amd64`.
pub fn version_of(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The active lockdown mode (`none`, `integrity`, `confidentiality`), if the
/// lockdown LSM is present.
pub fn lockdown() -> Option<String> {
    let text = fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    parse_lockdown(&text)
}

fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_owned())
}

/// Effective capabilities of this process.
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn has_cap(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// The tracefs mount, if any.
pub fn tracefs() -> Option<&'static Path> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("available_filter_functions").exists() || p.join("trace").exists())
}

/// `available_filter_functions`: functions fentry/kprobes can attach to.
/// `Err` when it cannot be read (no tracefs, lockdown, no privileges).
pub fn filter_functions() -> io::Result<HashSet<String>> {
    let file = match tracefs() {
        Some(dir) => dir.join("available_filter_functions"),
        // Mounted but closed to us (not root): say so, not "not mounted".
        None if fs::read_dir("/sys/kernel/tracing")
            .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied) =>
        {
            Path::new("/sys/kernel/tracing/available_filter_functions").to_path_buf()
        }
        None => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "tracefs is not mounted",
            ));
        }
    };
    let text = fs::read_to_string(file)?;
    Ok(parse_filter_functions(&text))
}

fn parse_filter_functions(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| !l.contains('['))
        .filter_map(|l| l.split_ascii_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Functions kprobes refuse (`/sys/kernel/debug/kprobes/blacklist`), if readable.
pub fn kprobe_blacklist() -> HashSet<String> {
    fs::read_to_string("/sys/kernel/debug/kprobes/blacklist")
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split_ascii_whitespace().nth(1))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the kernel was built with kprobes (and kprobe events). Without
/// root, tracefs and debugfs are closed: then the symbol table (whose names
/// anyone may read) tells, rather than "no kprobes".
pub fn kprobes_available() -> bool {
    tracefs().is_some_and(|t| t.join("kprobe_events").exists())
        || Path::new("/sys/kernel/debug/kprobes").exists()
        || fs::read_to_string("/proc/kallsyms").is_ok_and(|k| has_kprobes_symbol(&k))
}

/// Whether a kallsyms text has `register_kprobe` (CONFIG_KPROBES).
fn has_kprobes_symbol(kallsyms: &str) -> bool {
    kallsyms
        .lines()
        .any(|l| l.split_ascii_whitespace().nth(2) == Some("register_kprobe"))
}

/// The time on `clock` (`CLOCK_MONOTONIC`: the clock of BPF timestamps),
/// ns.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kprobes_are_found_in_kallsyms_without_root() {
        // What a user without root reads: names, zero addresses.
        let k = "0000000000000000 T register_kprobe\n0000000000000000 T register_kprobes\n";
        assert!(has_kprobes_symbol(k));
        assert!(!has_kprobes_symbol(
            "0000000000000000 T register_kprobes_x\n"
        ));
    }

    #[test]
    fn parsing() {
        assert_eq!(version_of("6.12.117+deb12-amd64"), Some((6, 12)));
        assert_eq!(version_of("7.3.4+deb13-amd64"), Some((7, 3)));
        assert_eq!(version_of("garbage"), None);
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ffffffffff)
        );
        let ff = parse_filter_functions("insert_pfn\nvmf_insert_mixed\next4_dax_fault [ext4]\n");
        assert!(ff.contains("insert_pfn") && !ff.contains("ext4_dax_fault"));
        assert!(has_cap(1 << CAP_BPF, CAP_BPF));
    }
}
