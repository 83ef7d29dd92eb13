//! The checked-in expectations (tests/scenarios.json): scenario x kernel
//! -> findings by rule and count, and the event kinds the trace must hold.

use std::{collections::BTreeMap, fmt, fs, path::Path};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize)]
pub struct Table {
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Record around the workload.
    #[default]
    Simple,
    /// Unbind the pmem device while the workload holds its mapping.
    Unplug,
    /// Run `workload` as a shell command (no recording); check its output.
    Command,
    /// Start the workload first; attach refscope while it holds its
    /// mappings (the attach-time snapshot must find them).
    Attach,
    /// Start the workload first and attach while it keeps faulting pages in
    /// (`snapshot-churn`): no mapping missed, none counted twice.
    AttachChurn,
}

/// How the guest is set up for a case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(default)]
pub struct Boot {
    /// ext4 | xfs
    pub fs: String,
    /// 4k | 2m | 1g (devdax only)
    pub align: String,
    /// fsdax | devdax
    pub mode: String,
    /// pmem | ram: where the struct pages live.
    pub memmap: String,
}

impl Default for Boot {
    fn default() -> Self {
        Boot {
            fs: "ext4".into(),
            align: "4k".into(),
            mode: "fsdax".into(),
            memmap: "pmem".into(),
        }
    }
}

impl fmt::Display for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mode == "devdax" {
            write!(f, "devdax {}", self.align)?;
        } else {
            write!(f, "{} {}", self.fs, self.align)?;
        }
        if self.memmap != "pmem" {
            write!(f, ", memmap in {}", self.memmap)?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    /// One line for the README table.
    pub about: String,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default)]
    pub boot: Boot,
    /// refscope-workload arguments (the command itself for `command`).
    pub workload: String,
    /// Extra `refscope record` arguments.
    #[serde(default)]
    pub record_args: String,
    /// What records the trace: `refscope record`, or `refscope live -o`
    /// on a pseudo-terminal (the same checks apply to its trace).
    #[serde(default)]
    pub recorder: Recorder,
    /// Check each mapping the workload reports against the trace's map
    /// events (address space of the workload, virtual address, pfn).
    #[serde(default)]
    pub check_mappings: bool,
    /// With `check_mappings`: the report's live mappings at the end and the
    /// mappings it saw installed both equal the workload's (each mapping
    /// counted exactly once, whether the snapshot or a probe saw it).
    #[serde(default)]
    pub exact_mappings: bool,
    /// An oracle independent of refscope that the findings must match
    /// exactly (unplug cases only).
    #[serde(default)]
    pub oracle: Option<Oracle>,
    /// Kernel tag -> what must be seen there.
    pub kernels: BTreeMap<String, Expect>,
}

/// The command that records a case's trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorder {
    #[default]
    Record,
    Live,
}

/// Where the truth about a case's mappings comes from, when it does not
/// come from refscope itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oracle {
    /// The workload reads `/proc/self/pagemap` for every page of its
    /// mappings at the last moment before the device is unbound and prints
    /// them in an `oracle` line; the (pid, vaddr, pfn) of the report's
    /// `mapped_after_unplug` findings must be exactly that set.
    Pagemap,
}

#[derive(Debug, Deserialize)]
pub struct Expect {
    /// Rule id -> exact number of findings. Rules not listed must have no
    /// warning or error findings; info findings of unlisted rules are free.
    #[serde(default)]
    pub findings: BTreeMap<String, Count>,
    /// Event kind -> count ("16", ">=1", "0").
    #[serde(default)]
    pub events: BTreeMap<String, Count>,
    /// The known kernel oops happens after the recording (7.3.4 unplug).
    #[serde(default)]
    pub oops: bool,
    /// Events the report says were lost.
    #[serde(default)]
    pub lost: Option<Count>,
    /// Unlisted warning/error findings are allowed if all are `uncertain`
    /// (a run forced to lose events must never assert a false positive).
    #[serde(default)]
    pub uncertain_ok: bool,
    /// Findings marked as present when refscope attached.
    #[serde(default)]
    pub at_attach: Option<Count>,
    /// `command` cases: substrings the output must contain.
    #[serde(default)]
    pub stdout: Vec<String>,
    /// Divergences the shadow audit must report (default: none). Only a
    /// case that leaves a hook out on purpose (`--skip-hook`) expects any:
    /// it shows the audit catches the path the hook covers.
    #[serde(default)]
    pub drift: Option<Count>,
}

/// An expected count: exact, or a lower bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Exactly(u64),
    AtLeast(u64),
}

impl Count {
    pub fn matches(self, n: u64) -> bool {
        match self {
            Count::Exactly(e) => n == e,
            Count::AtLeast(e) => n >= e,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Exactly(n) => write!(f, "{n}"),
            Count::AtLeast(n) => write!(f, ">={n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Count::Exactly(n)),
            Raw::S(s) => {
                let bad = || serde::de::Error::custom(format!("bad count `{s}`: use N or \">=N\""));
                match s.strip_prefix(">=") {
                    Some(n) => n.trim().parse().map(Count::AtLeast).map_err(|_| bad()),
                    None => s.trim().parse().map(Count::Exactly).map_err(|_| bad()),
                }
            }
        }
    }
}

pub fn load(path: &Path) -> anyhow::Result<Table> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: Table = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid scenario table", path.display()))?;
    for c in &table.cases {
        if c.name.is_empty()
            || !c
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        {
            bail!(
                "{}: case name `{}` must be [a-z0-9-]+",
                path.display(),
                c.name
            );
        }
        if c.kernels.is_empty() {
            bail!("{}: case `{}` lists no kernel", path.display(), c.name);
        }
        if c.oracle == Some(Oracle::Pagemap) && c.kind != Kind::Unplug {
            bail!(
                "{}: case `{}`: the pagemap oracle is checked against mapped_after_unplug findings: only `unplug` cases can have it",
                path.display(),
                c.name
            );
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_defaults() {
        let t: Table = serde_json::from_str(
            r#"{"cases":[{"name":"x","about":"a","workload":"pte-touch 4",
               "kernels":{"6.1":{"findings":{"zero_ref_mapping":4},"events":{"map":">=4","free":0}}}}]}"#,
        )
        .unwrap();
        let c = &t.cases[0];
        assert_eq!(c.kind, Kind::Simple);
        assert_eq!(c.boot, Boot::default());
        let e = &c.kernels["6.1"];
        assert_eq!(e.events["map"], Count::AtLeast(4));
        assert!(e.events["free"].matches(0) && !e.events["free"].matches(1));
        assert!(serde_json::from_str::<Count>("\"~3\"").is_err());
    }

    #[test]
    fn the_checked_in_table_loads() {
        let root = crate::util::workspace_root();
        let t = load(&root.join("tests/scenarios.json")).unwrap();
        assert!(t.cases.len() >= 8);
        for c in &t.cases {
            for k in c.kernels.keys() {
                assert!(
                    ["6.1", "6.12", "7.3"].contains(&k.as_str()),
                    "{}: kernel {k}",
                    c.name
                );
            }
        }
    }
}
