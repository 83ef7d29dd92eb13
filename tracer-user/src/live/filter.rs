//! The `/` filter: which findings and pages are shown.
//!
//! Space-separated terms, each `key:value` (or `key=value`) or a bare word:
//! `pid:4242`, `comm:fio` (substring), `pfn:0x140000-0x1400ff` (or one pfn),
//! `rule:mapped_after_unplug`. A bare word is a rule id if it is one, a pfn
//! or pfn range if it is hex (`0x..`) or `A-B`, a pid if it is decimal, and
//! a command-name substring otherwise. Terms of the same key are alternatives
//! (`rule:a rule:b`); different keys must all match.

use std::collections::HashSet;

use refscope_core::analysis::{Analyzer, Finding, PageView, RuleId};

use crate::cli::{parse_pfn_range, parse_u64};

/// One term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    Pid(u32),
    Comm(String),
    /// Inclusive range.
    Pfn(u64, u64),
    Rule(RuleId),
}

/// A parsed filter (empty: everything matches).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    text: String,
    pids: Vec<u32>,
    comms: Vec<String>,
    pfns: Vec<(u64, u64)>,
    rules: Vec<RuleId>,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut f = Filter {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            ..Filter::default()
        };
        for word in text.split_whitespace() {
            match parse_term(word)? {
                Term::Pid(p) => f.pids.push(p),
                Term::Comm(c) => f.comms.push(c),
                Term::Pfn(a, b) => f.pfns.push((a, b)),
                Term::Rule(r) => f.rules.push(r),
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.comms.is_empty()
            && self.pfns.is_empty()
            && self.rules.is_empty()
    }

    /// The filter as typed (normalised spaces).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn pfn_ok(&self, pfn: u64) -> bool {
        self.pfns.is_empty() || self.pfns.iter().any(|&(a, b)| a <= pfn && pfn <= b)
    }

    fn comm_ok(&self, comm: &str) -> bool {
        self.comms.iter().any(|c| comm.contains(c.as_str()))
    }

    /// Whether a finding is shown: its pfn and rule, and its process or any
    /// process in its timeline.
    pub fn matches_finding(&self, f: &Finding) -> bool {
        if !self.pfn_ok(f.pfn) {
            return false;
        }
        if !self.rules.is_empty() && !self.rules.contains(&f.rule) {
            return false;
        }
        if !self.pids.is_empty()
            && !self.pids.contains(&f.pid)
            && !f.timeline.iter().any(|e| self.pids.contains(&e.pid))
        {
            return false;
        }
        if !self.comms.is_empty()
            && !self.comm_ok(&f.comm.as_str())
            && !f.timeline.iter().any(|e| self.comm_ok(&e.comm.as_str()))
        {
            return false;
        }
        true
    }

    /// What matching pages needs beyond the page itself, computed once per
    /// rebuild of the pages table.
    pub fn page_context(&self, a: &Analyzer) -> PageContext {
        let mut ctx = PageContext::default();
        if self.pids.is_empty() && self.comms.is_empty() && self.rules.is_empty() {
            return ctx;
        }
        let who = |pid: u32, comm: &str| -> (bool, bool) {
            (self.pids.contains(&pid), self.comm_ok(comm))
        };
        for (_, m) in a.mappings() {
            let (p, c) = who(m.pid, &m.comm.as_str());
            // A PUD is one folio: its events name the head pfn.
            let pages = if m.order == refscope_common::PUD_ORDER {
                1
            } else {
                1u64 << m.order.min(20)
            };
            for pfn in m.pfn..m.pfn + pages {
                if p {
                    ctx.pid.insert(pfn);
                }
                if c {
                    ctx.comm.insert(pfn);
                }
            }
        }
        for (&(pfn, _), h) in a.holders() {
            let (p, c) = who(h.pid, &h.comm.as_str());
            if p {
                ctx.pid.insert(pfn);
            }
            if c {
                ctx.comm.insert(pfn);
            }
        }
        for f in a.findings() {
            let (p, c) = who(f.pid, &f.comm.as_str());
            if p {
                ctx.pid.insert(f.pfn);
            }
            if c {
                ctx.comm.insert(f.pfn);
            }
            if self.rules.contains(&f.rule) {
                ctx.rule.insert(f.pfn);
            }
        }
        ctx
    }

    /// Whether a page is shown: its pfn; a finding of the rule on it; the
    /// process among its mappers, pin holders, findings or timeline.
    pub fn matches_page(&self, p: &PageView<'_>, ctx: &PageContext) -> bool {
        if !self.pfn_ok(p.pfn) {
            return false;
        }
        if !self.rules.is_empty() && !ctx.rule.contains(&p.pfn) {
            return false;
        }
        if !self.pids.is_empty()
            && !ctx.pid.contains(&p.pfn)
            && !p.timeline().any(|e| self.pids.contains(&e.pid))
        {
            return false;
        }
        if !self.comms.is_empty()
            && !ctx.comm.contains(&p.pfn)
            && !p.timeline().any(|e| self.comm_ok(&e.comm.as_str()))
        {
            return false;
        }
        true
    }
}

/// Pages that match a term through state other than the page itself.
#[derive(Debug, Default)]
pub struct PageContext {
    pid: HashSet<u64>,
    comm: HashSet<u64>,
    rule: HashSet<u64>,
}

fn parse_term(word: &str) -> Result<Term, String> {
    if let Some((key, value)) = word.split_once([':', '=']) {
        return match key {
            "pid" => value
                .parse()
                .map(Term::Pid)
                .map_err(|_| format!("`{value}` is not a pid")),
            "comm" if !value.is_empty() => Ok(Term::Comm(value.into())),
            "pfn" => pfn_term(value),
            "rule" => rule_term(value),
            _ => Err(format!(
                "unknown filter key `{key}`: use pid:, comm:, pfn: or rule:"
            )),
        };
    }
    if let Some(r) = RuleId::from_id(word) {
        return Ok(Term::Rule(r));
    }
    if word.starts_with("0x") || word.starts_with("0X") {
        return pfn_term(word);
    }
    if word.contains('-')
        && let Ok(t) = pfn_term(word)
    {
        return Ok(t);
    }
    if let Ok(pid) = word.parse() {
        return Ok(Term::Pid(pid));
    }
    Ok(Term::Comm(word.into()))
}

fn pfn_term(v: &str) -> Result<Term, String> {
    if v.contains('-') {
        let (a, b) = parse_pfn_range(v)?;
        Ok(Term::Pfn(a, b))
    } else {
        let p = parse_u64(v)?;
        Ok(Term::Pfn(p, p))
    }
}

fn rule_term(v: &str) -> Result<Term, String> {
    RuleId::from_id(v).map(Term::Rule).ok_or_else(|| {
        format!(
            "unknown rule `{v}`; rules are: {}",
            RuleId::ALL
                .iter()
                .map(|r| r.id())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_and_bare_words() {
        assert_eq!(parse_term("pid:42"), Ok(Term::Pid(42)));
        assert_eq!(parse_term("pid=42"), Ok(Term::Pid(42)));
        assert_eq!(parse_term("42"), Ok(Term::Pid(42)));
        assert_eq!(parse_term("comm:fio"), Ok(Term::Comm("fio".into())));
        assert_eq!(parse_term("fio"), Ok(Term::Comm("fio".into())));
        assert_eq!(parse_term("0x10"), Ok(Term::Pfn(16, 16)));
        assert_eq!(parse_term("0x10-0x20"), Ok(Term::Pfn(16, 32)));
        assert_eq!(parse_term("pfn:16-32"), Ok(Term::Pfn(16, 32)));
        assert_eq!(parse_term("16-32"), Ok(Term::Pfn(16, 32)));
        assert_eq!(
            parse_term("kworker/u8-1"),
            Ok(Term::Comm("kworker/u8-1".into()))
        );
        assert_eq!(parse_term("pin_leak"), Ok(Term::Rule(RuleId::PinLeak)));
        assert_eq!(
            parse_term("rule:mapped_after_unplug"),
            Ok(Term::Rule(RuleId::MappedAfterUnplug))
        );
    }

    #[test]
    fn bad_terms_say_why() {
        assert!(parse_term("pid:x").unwrap_err().contains("not a pid"));
        assert!(parse_term("rule:nope").unwrap_err().contains("rules are: "));
        assert!(
            parse_term("size:1")
                .unwrap_err()
                .contains("unknown filter key")
        );
        assert!(
            parse_term("0x20-0x10")
                .unwrap_err()
                .contains("after its end")
        );
        assert!(Filter::parse("pid:1 rule:nope").is_err());
    }

    #[test]
    fn empty_filter_is_empty() {
        let f = Filter::parse("   ").unwrap();
        assert!(f.is_empty());
        assert_eq!(f.text(), "");
        let f = Filter::parse(" pid:1   fio ").unwrap();
        assert!(!f.is_empty());
        assert_eq!(f.text(), "pid:1 fio");
    }
}
