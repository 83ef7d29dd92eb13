//! `cargo xtask soak`: refscope's memory over a long recording. Boots a
//! guest, starts `refscope record`, runs continuous DAX churn (churn
//! processes restarted every `--restart` seconds, so address spaces come
//! and go, over more distinct pages than `--max-pages`, pinning one page
//! per cycle), samples refscope's RSS every `--every` seconds, and checks
//! that it reaches a plateau. Then, on the host, the recorded trace is
//! replayed through `refscope report` with the same caps while its RSS is
//! sampled against the bytes read: the analysis state per event, without
//! the recorder's start-up heap (BTF, kallsyms, the loader), whose freed
//! memory later allocations reuse and which can hide slow growth in the
//! guest's curve. Not part of `cargo xtask test` (10 minutes). The curves
//! go to target/soak/ and are recorded in docs/reliability.md.

use std::{fmt::Write as _, fs, time::Duration};

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::{
    util::{self, note, step},
    vm::{self, KernelChoice, VmConfig},
};

#[derive(Debug, Parser)]
pub struct Options {
    /// Minutes of churn under recording.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Kernel (a pinned tag). 6.12 raises a finding for every DAX mapping
    /// (the pre-6.15 idle-refcount convention): the hardest case for memory.
    #[arg(long, default_value = "6.12")]
    pub kernel: String,
    /// refscope's --max-pages for the run (below the pages churned, so
    /// pages are evicted all along).
    #[arg(long, default_value_t = 1024)]
    pub max_pages: usize,
    /// refscope's --max-findings for the run (6.12 raises one per new
    /// mapping address: the cap is reached within the run).
    #[arg(long, default_value_t = 16384)]
    pub max_findings: usize,
    /// Files churned (each --pages pages).
    #[arg(long, default_value_t = 64)]
    pub files: usize,
    /// Pages per file.
    #[arg(long, default_value_t = 64)]
    pub pages: usize,
    /// Pause after each map/touch/unmap cycle (keeps the trace, in the
    /// guest's RAM, to a few hundred MiB).
    #[arg(long, default_value = "40ms")]
    pub pause: String,
    /// Seconds each churn process lives before the next one starts.
    #[arg(long, default_value_t = 60)]
    pub restart: u64,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 15)]
    pub every: u64,
    /// Do not rebuild refscope and the workload.
    #[arg(long)]
    pub no_build: bool,
}

const SCRIPT: &str = r#"
set -u
. /lib/refscope/guest.sh
S=/share
refscope record -o /tmp/soak.jsonl --ready-file /tmp/ready --max-pages @MAX_PAGES@ \
    --max-findings @MAX_FINDINGS@ 2>/tmp/record.err &
pid=$!
if ! wait_for /tmp/ready 600; then
    cat /tmp/record.err >&2
    exit 1
fi
start=$(date +%s)
end=$((start + @SECS@))
(
    while [ "$(date +%s)" -lt "$end" ]; do
        refscope-workload --timeout 900 churn --seconds @RESTART@ --pages @PAGES@ --files @FILES@ \
            --pin --pause @PAUSE@ >>/tmp/churn.out 2>>/tmp/churn.err \
            || echo "churn failed: $?" >>/tmp/churn.err
    done
) &
load=$!
echo "t_s rss_kib hwm_kib trace_bytes" >"$S/rss.tsv"
while :; do
    t=$(($(date +%s) - start))
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    size=$(stat -c %s /tmp/soak.jsonl)
    echo "$t $rss $hwm $size" >>"$S/rss.tsv"
    [ "$t" -ge @SECS@ ] && break
    sleep @EVERY@
done
wait "$load"
kill -INT "$pid"
wait "$pid"
echo $? >"$S/record.status"
tail -n 1 /tmp/soak.jsonl >"$S/footer.json"
grep -c '"done"' /tmp/churn.out >"$S/churn.runs"
cp /tmp/record.err /tmp/churn.err "$S/" 2>/dev/null
grep -v '^refscope: \(warning\|info\|error\) [a-z_]* pfn' /tmp/record.err >"$S/summary.txt"
cp /tmp/soak.jsonl "$S/"
"#;

/// One RSS sample.
struct Sample {
    t: u64,
    rss_kib: u64,
    hwm_kib: u64,
    trace_bytes: u64,
}

pub fn run_soak(opts: &Options) -> anyhow::Result<()> {
    let secs = (opts.minutes * 60.0).round() as u64;
    if secs < 60 {
        bail!("--minutes: at least 1");
    }
    let binaries = vm::guest_binaries(opts.no_build)?;
    let share = util::cache_dir()?.join("vm/test-share/soak");
    let _ = fs::remove_dir_all(&share);
    fs::create_dir_all(&share)?;
    let script = SCRIPT
        .replace("@MAX_PAGES@", &opts.max_pages.to_string())
        .replace("@MAX_FINDINGS@", &opts.max_findings.to_string())
        .replace("@SECS@", &secs.to_string())
        .replace("@RESTART@", &opts.restart.to_string())
        .replace("@PAGES@", &opts.pages.to_string())
        .replace("@FILES@", &opts.files.to_string())
        .replace("@PAUSE@", &opts.pause)
        .replace("@EVERY@", &opts.every.to_string());
    let mut cfg = VmConfig::new(
        KernelChoice::Pinned(opts.kernel.clone()),
        Some(vec!["sh".into(), "-c".into(), script]),
    );
    cfg.binaries = binaries;
    cfg.share = Some(share.clone());
    // The trace lives in the guest's RAM (tmpfs).
    cfg.memory_mib = 3072;
    cfg.timeout = Duration::from_secs(secs + 900);
    cfg.echo_output = false;
    step(format!(
        "soak on {}: {:.0} min of DAX churn ({} files x {} pages, pause {}, a new process every {} s) under refscope record --max-pages {}",
        opts.kernel, opts.minutes, opts.files, opts.pages, opts.pause, opts.restart, opts.max_pages
    ));
    let outcome = vm::run(&cfg)?;
    let failed = outcome.verdict(false).err();
    let samples = parse_samples(&fs::read_to_string(share.join("rss.tsv")).unwrap_or_default());
    let read = |f: &str| fs::read_to_string(share.join(f)).unwrap_or_default();
    let out_dir = util::target_dir().join("soak");
    fs::create_dir_all(&out_dir)?;
    for f in ["rss.tsv", "summary.txt", "footer.json", "churn.err"] {
        let _ = fs::copy(share.join(f), out_dir.join(f));
    }
    let mut report = render(
        opts,
        secs,
        &samples,
        &read("summary.txt"),
        &read("footer.json"),
        &read("churn.runs"),
    );
    let replayed = replay(opts, &share.join("soak.jsonl"));
    if let Ok(r) = &replayed {
        report.push_str(&render_replay(r));
    }
    fs::write(out_dir.join("soak.md"), &report)?;
    eprintln!("{report}");
    let _ = fs::remove_file(share.join("soak.jsonl"));
    let replayed = replayed.context("replaying the soak's trace on the host")?;
    note(format!("written to {}", out_dir.display()));
    if let Some(e) = failed {
        bail!(
            "the guest run failed: {e}\n{}",
            outcome.failure_report(false)
        );
    }
    if read("record.status").trim() != "0" {
        bail!(
            "refscope record ended with status {:?}:\n{}",
            read("record.status").trim(),
            read("summary.txt")
        );
    }
    note(plateau(&samples, "s")?);
    let as_samples: Vec<Sample> = replayed
        .iter()
        .map(|&(bytes, rss)| Sample {
            t: bytes >> 20,
            rss_kib: rss,
            hwm_kib: rss,
            trace_bytes: bytes,
        })
        .collect();
    note(format!(
        "replay: {}",
        plateau(&as_samples, "MiB read")
            .context("the analysis state kept growing over the trace")?
    ));
    Ok(())
}

/// `refscope report` over the trace with the run's caps, fed through a
/// pipe a MiB at a time so its RSS can be sampled against the bytes it has
/// read: `(bytes, rss_kib)` every 4 MiB.
fn replay(opts: &Options, trace: &std::path::Path) -> anyhow::Result<Vec<(u64, u64)>> {
    use std::{
        io::{Read as _, Write as _},
        process::{Command, Stdio},
    };
    step("replaying the trace through refscope report on the host, sampling its RSS");
    let bin = util::release_dir().join("refscope");
    let mut child = Command::new(bin)
        .args(["report", "/dev/stdin", "--json"])
        .args(["--max-pages", &opts.max_pages.to_string()])
        .args(["--max-findings", &opts.max_findings.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run refscope report")?;
    let rss = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    let mut input =
        fs::File::open(trace).with_context(|| format!("cannot open {}", trace.display()))?;
    let mut pipe = child.stdin.take().context("no stdin")?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut sent, mut out) = (0u64, Vec::new());
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        pipe.write_all(&buf[..n])?;
        sent += n as u64;
        if sent % (4 << 20) < n as u64
            && let Some(r) = rss(child.id())
        {
            out.push((sent, r));
        }
    }
    drop(pipe);
    let status = child.wait()?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("refscope report failed ({status}): {err}");
    }
    Ok(out)
}

/// The replay curve, a row per tenth of the trace.
fn render_replay(samples: &[(u64, u64)]) -> String {
    let mut s = String::from(
        "\nreplayed on the host (refscope report, same caps): RSS against the trace read\n\n\
         | read (MiB) | RSS (MiB) |\n|---:|---:|\n",
    );
    let total = samples.last().map_or(0, |x| x.0).max(1);
    let mut next = 0;
    for &(bytes, rss) in samples {
        if bytes * 10 >= next * total {
            let _ = writeln!(s, "| {} | {} |", bytes >> 20, mib(rss));
            next = bytes * 10 / total + 1;
        }
    }
    s
}

fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 4).then(|| Sample {
                t: v[0],
                rss_kib: v[1],
                hwm_kib: v[2],
                trace_bytes: v[3],
            })
        })
        .collect()
}

/// RSS reaches a plateau: over the second half of the run it grows by at
/// most 5% (or 2 MiB, whichever is more) of its value at the half.
fn plateau(samples: &[Sample], unit: &str) -> anyhow::Result<String> {
    if samples.len() < 8 {
        bail!(
            "only {} RSS samples: the run did not get far",
            samples.len()
        );
    }
    let half = &samples[samples.len() / 2];
    let last = samples.last().context("no samples")?;
    let peak = samples[samples.len() / 2..]
        .iter()
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(0);
    let allowed = (half.rss_kib / 20).max(2048);
    let growth = peak.saturating_sub(half.rss_kib);
    let msg = format!(
        "RSS {} MiB at {} {unit} (half-way), peak {} MiB afterwards, {} MiB at the end ({} {unit}): growth {} KiB, allowed {} KiB",
        mib(half.rss_kib),
        half.t,
        mib(peak),
        mib(last.rss_kib),
        last.t,
        growth,
        allowed
    );
    if growth > allowed {
        bail!("no plateau: {msg}");
    }
    Ok(format!("plateau: {msg}"))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The curve as a Markdown table plus a one-line sparkline, with the run's
/// parameters and refscope's own summary (evictions included).
fn render(
    opts: &Options,
    secs: u64,
    samples: &[Sample],
    summary: &str,
    footer: &str,
    churn_runs: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "soak: kernel {}, {} s of churn ({} files x {} pages = {} distinct pages, --pause {}, {} churn processes, one pin per cycle), refscope record --max-pages {} --max-findings {}\n",
        opts.kernel,
        secs,
        opts.files,
        opts.pages,
        opts.files * opts.pages,
        opts.pause,
        churn_runs.trim(),
        opts.max_pages,
        opts.max_findings
    );
    let _ = writeln!(s, "| t (s) | RSS (MiB) | peak RSS (MiB) | trace (MiB) |");
    let _ = writeln!(s, "|---:|---:|---:|---:|");
    for x in samples {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} |",
            x.t,
            mib(x.rss_kib),
            mib(x.hwm_kib),
            x.trace_bytes as f64 / (1 << 20) as f64
        );
    }
    let max = samples.iter().map(|x| x.rss_kib).max().unwrap_or(1).max(1);
    let bars = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let spark: String = samples
        .iter()
        .map(|x| bars[((x.rss_kib * 7) / max) as usize])
        .collect();
    let _ = writeln!(s, "\nRSS over time (0 to {} MiB): {spark}\n", mib(max));
    let _ = writeln!(s, "footer: {}", footer.trim());
    let _ = writeln!(s, "refscope's summary:\n{}", summary.trim_end());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[u64]) -> Vec<Sample> {
        rss.iter()
            .enumerate()
            .map(|(i, &r)| Sample {
                t: i as u64 * 15,
                rss_kib: r,
                hwm_kib: r,
                trace_bytes: 0,
            })
            .collect()
    }

    #[test]
    fn a_plateau_passes_and_steady_growth_fails() {
        let flat = samples(&[
            10_000, 30_000, 40_000, 41_000, 41_500, 41_200, 41_800, 41_900, 42_000, 41_950,
        ]);
        assert!(plateau(&flat, "s").is_ok(), "{:?}", plateau(&flat, "s"));
        let growing = samples(&[
            10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 80_000,
        ]);
        assert!(plateau(&growing, "s").is_err());
        assert!(
            plateau(&samples(&[1, 2, 3]), "s").is_err(),
            "too few samples"
        );
    }

    #[test]
    fn samples_parse() {
        let s = parse_samples(
            "t_s rss_kib hwm_kib trace_bytes\n0 5000 5000 100\n15 6000 6100 2000\nbad\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].t, s[1].rss_kib, s[1].hwm_kib, s[1].trace_bytes),
            (15, 6000, 6100, 2000)
        );
    }
}
