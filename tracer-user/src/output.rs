//! Output files and human-readable lines shared by the subcommands.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context as _, bail};
use refscope_core::analysis::{Analyzer, Finding, RuleId, Severity, Status};

/// Create `path` for writing: mode 0600, never following a symlink, never
/// replacing an existing file unless `force` (then the old one is removed
/// first, so a symlink there is removed, not followed). Only regular files
/// and symlinks are ever replaced: `-o /dev/null --force` as root would
/// otherwise delete the device node.
pub fn create_output(path: &Path, force: bool) -> anyhow::Result<File> {
    if force {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => bail!("{} is a directory", path.display()),
            Ok(m) if !m.is_file() && !m.file_type().is_symlink() => bail!(
                "{} is not a regular file (a device, FIFO or socket): refscope replaces only \
                 regular files, even with --force",
                path.display()
            ),
            Ok(_) => fs::remove_file(path)
                .with_context(|| format!("cannot replace {}", path.display()))?,
            Err(_) => {}
        }
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} already exists: refscope never overwrites a file; pass --force to replace it",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
        })
}

/// Write `--ready-file`: our pid and a newline. An existing regular file is
/// replaced (scripts reuse the name); a symlink there is refused, not
/// followed (the file is written as root, often in /tmp).
pub fn write_ready_file(path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .and_then(|f| {
            if f.metadata()?.is_file() {
                Ok(f)
            } else {
                Err(io::Error::other("not a regular file"))
            }
        })
        .with_context(|| format!("failed to write the ready file {}", path.display()))?;
    writeln!(f, "{}", std::process::id())
        .with_context(|| format!("failed to write the ready file {}", path.display()))
}

/// One line for a finding as it happens.
pub fn finding_line(f: &Finding) -> String {
    let status = match f.status {
        Status::Definite => "",
        Status::Uncertain => " (uncertain: events were lost)",
        Status::Unconfirmed => " (unconfirmed: the page table could not be checked)",
    };
    format!(
        "refscope: {} {} pfn {:#x}{}: {}{status}",
        f.severity,
        f.rule,
        f.pfn,
        if f.vaddr.0 != 0 {
            format!(" at {}", f.vaddr)
        } else {
            String::new()
        },
        f.explanation
    )
}

/// The end-of-recording summary on stderr.
pub fn summary(a: &Analyzer, events: u64, decode_errors: u64, path: &Path, quiet: bool) {
    let mut by_rule: Vec<(RuleId, Severity, usize)> = Vec::new();
    for f in a.findings() {
        match by_rule
            .iter_mut()
            .find(|(r, s, _)| *r == f.rule && *s == f.severity)
        {
            Some(e) => e.2 += 1,
            None => by_rule.push((f.rule, f.severity, 1)),
        }
    }
    by_rule.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let lost = a.lost();
    if quiet && lost == 0 && decode_errors == 0 {
        return;
    }
    eprintln!(
        "refscope: {events} events, {} pages, {} live mappings, {lost} lost{}; trace in {}",
        a.page_count(),
        a.mapping_count(),
        if decode_errors > 0 {
            format!(", {decode_errors} undecodable")
        } else {
            String::new()
        },
        path.display()
    );
    for (rule, sev, n) in by_rule {
        eprintln!("refscope:   {n:>6} {sev:<7} {rule}");
    }
    if let Some(line) = audit_line(a) {
        eprintln!("refscope: {line}");
    }
    if lost > 0 {
        eprintln!(
            "refscope: {lost} events were lost; findings that depend on them are marked uncertain (raise --ringbuf-size)"
        );
    }
    if let Some(line) = caps_line(a) {
        eprintln!("refscope: {line}");
    }
}

/// The shadow audit's result in one line (None when nothing was audited).
pub fn audit_line(a: &Analyzer) -> Option<String> {
    let st = a.stats();
    if st.audits == 0 && st.drift() == 0 {
        return None;
    }
    let mut line = format!(
        "shadow audit: {} address space check(s) against the page tables, drift {}",
        st.audits,
        st.drift()
    );
    if st.drift() > 0 {
        line.push_str(&format!(
            " ({} missing, {} stale: refscope missed a kernel path; `refscope report` lists them)",
            st.drift_missing, st.drift_stale
        ));
    }
    if st.drift_late > 0 {
        line.push_str(&format!(
            "; {} divergence(s) explained by an event that arrived after the read (the shadow was behind, not wrong)",
            st.drift_late
        ));
    }
    if st.findings_withdrawn > 0 {
        line.push_str(&format!(
            "; {} finding(s) withdrawn (the page table did not confirm them)",
            st.findings_withdrawn
        ));
    }
    Some(line)
}

/// Warn about how a trace ended, before `report` or `export` use it:
/// a recording stopped by an error, or a trace without footer. `verb` is
/// what was done with it ("analysed", "exported").
pub fn trace_end_warnings(
    name: &Path,
    end_reason: Option<&str>,
    has_footer: bool,
    truncated_at: Option<u64>,
    verb: &str,
) {
    let name = name.display();
    if let Some(reason) = end_reason.and_then(|r| r.strip_prefix("error: ")) {
        eprintln!(
            "refscope: warning: the recording of {name} stopped on an error ({reason}); \
             {verb} everything it holds"
        );
    }
    if !has_footer {
        match truncated_at {
            Some(line) => eprintln!(
                "refscope: warning: {name} ends in an incomplete line {line} and has no footer \
                 (the recording was killed, or its disk filled up); {verb} everything before it"
            ),
            None => eprintln!(
                "refscope: warning: {name} has no footer (the recording did not stop cleanly); {verb} all of it"
            ),
        }
    }
}

/// What the memory caps cost, if anything: pages forgotten at
/// `--max-pages`, timeline events dropped at `--timeline`, findings not
/// kept, events no kernel produces.
pub fn caps_line(a: &Analyzer) -> Option<String> {
    let s = a.stats();
    let cfg = a.settings();
    let mut parts = Vec::new();
    if s.pages_evicted > 0 {
        parts.push(format!(
            "{} idle pages forgotten at the --max-pages cap of {}",
            s.pages_evicted, cfg.max_pages
        ));
    }
    if s.timeline_evicted > 0 {
        parts.push(format!(
            "{} older timeline events dropped (--timeline {})",
            s.timeline_evicted, cfg.timeline_len
        ));
    }
    if s.findings_dropped > 0 {
        parts.push(format!(
            "{} findings raised past the --max-findings cap of {} were only counted",
            s.findings_dropped, cfg.max_findings
        ));
    }
    if s.invalid_events > 0 {
        parts.push(format!(
            "{} invalid events ignored (no kernel produces them: corrupt input?)",
            s.invalid_events
        ));
    }
    (!parts.is_empty()).then(|| format!("memory caps: {}", parts.join("; ")))
}

/// One line about a loss record, for stderr and the live view's log.
pub fn loss_line(l: &refscope_core::trace::Loss) -> String {
    if l.cpu == crate::pipeline::MISSES_CPU {
        format!(
            "{} events skipped by the kernel: a program was already running on its CPU \
             (BPF recursion guard)",
            l.count
        )
    } else {
        format!(
            "lost {} events on CPU {} (ring buffer full; raise --ringbuf-size)",
            l.count, l.cpu
        )
    }
}

/// A progress line on stderr while a large trace (over 64 MiB) is read on a
/// terminal: `refscope: <verb> NN% (done / total MiB)`, at most five
/// updates a second, erased when done. Hidden when stderr is not a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new(verb: &'static str, total: u64) -> Self {
        if total <= 64 << 20 {
            return Progress(None);
        }
        let target = indicatif::ProgressDrawTarget::stderr_with_hz(5);
        let style = indicatif::ProgressStyle::with_template(&format!(
            "refscope: {verb} {{percent:>3}}% ({{binary_bytes}} / {{binary_total_bytes}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        Progress(Some(
            indicatif::ProgressBar::with_draw_target(Some(total), target).with_style(style),
        ))
    }

    pub fn update(&mut self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }

    pub fn done(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt};

    use super::*;

    #[test]
    fn output_files_are_private_exclusive_and_never_follow_symlinks() {
        let dir = std::env::temp_dir().join(format!("refscope-out-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.jsonl");
        create_output(&p, false).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = create_output(&p, false).unwrap_err().to_string();
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        create_output(&p, true).unwrap();

        let target = dir.join("victim");
        fs::write(&target, "keep").unwrap();
        let link = dir.join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_output(&link, false).is_err());
        create_output(&link, true).unwrap();
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "keep",
            "the symlink target is untouched"
        );
        assert!(
            !fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn force_never_replaces_devices_fifos_or_sockets() {
        let err = create_output(Path::new("/dev/null"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(Path::new("/dev/null").exists());
        let dir = std::env::temp_dir().join(format!("refscope-fifo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(create_output(&fifo, true).is_err());
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_ready_file_never_follows_a_symlink() {
        let dir = std::env::temp_dir().join(format!("refscope-ready-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let ready = dir.join("ready");
        write_ready_file(&ready).unwrap();
        write_ready_file(&ready).unwrap();
        assert_eq!(
            fs::read_to_string(&ready).unwrap(),
            format!("{}\n", std::process::id())
        );
        let victim = dir.join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(write_ready_file(&link).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        fs::remove_dir_all(&dir).unwrap();
    }
}
