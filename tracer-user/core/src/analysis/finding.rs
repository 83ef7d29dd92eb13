//! Findings and the timeline entries that are their evidence.

use refscope_common::{EventKind, HookId};
use serde::{Deserialize, Serialize};

use super::rules::{RuleId, Severity, Status};
use crate::event::{Comm, Event, Flags, Hex};

/// What kind of reference a GUP event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GupLabel {
    /// FOLL_GET: a plain page reference (+1 per ref).
    Get,
    /// FOLL_PIN: a pin (+GUP_PIN_COUNTING_BIAS per ref on small folios).
    Pin,
    GetLongterm,
    PinLongterm,
}

impl GupLabel {
    pub fn new(pin: bool, longterm: bool) -> Self {
        match (pin, longterm) {
            (false, false) => GupLabel::Get,
            (true, false) => GupLabel::Pin,
            (false, true) => GupLabel::GetLongterm,
            (true, true) => GupLabel::PinLongterm,
        }
    }

    pub fn is_pin(self) -> bool {
        matches!(self, GupLabel::Pin | GupLabel::PinLongterm)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GupLabel::Get => "get",
            GupLabel::Pin => "pin",
            GupLabel::GetLongterm => "get_longterm",
            GupLabel::PinLongterm => "pin_longterm",
        }
    }
}

/// One event in a page's timeline (compact; what evidence needs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub t: u64,
    #[serde(with = "kind_serde")]
    pub kind: EventKind,
    #[serde(with = "hook_serde")]
    pub hook: HookId,
    pub pid: u32,
    pub comm: Comm,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mm: Hex,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vaddr: Hex,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub pfn: u64,
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub order: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_before: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_after: Option<i32>,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub refs: i32,
    /// What a GUP event took or released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gup: Option<GupLabel>,
    #[serde(default, skip_serializing_if = "is_no_flags")]
    pub flags: Flags,
}

fn is_zero(v: &Hex) -> bool {
    v.0 == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}
fn is_no_flags(v: &Flags) -> bool {
    v.0 == 0
}

mod kind_serde {
    use refscope_common::EventKind;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &EventKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        let s = <&str>::deserialize(d)?;
        EventKind::from_name(s).ok_or_else(|| D::Error::custom(format!("unknown event kind `{s}`")))
    }
}

mod hook_serde {
    use refscope_common::HookId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &HookId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HookId, D::Error> {
        let s = <&str>::deserialize(d)?;
        HookId::from_name(s).ok_or_else(|| D::Error::custom(format!("unknown hook `{s}`")))
    }
}

impl TimelineEntry {
    pub fn from_event(ev: &Event, gup: Option<GupLabel>) -> Self {
        TimelineEntry {
            t: ev.t,
            kind: ev.kind,
            hook: ev.hook,
            pid: ev.pid,
            comm: ev.comm,
            mm: ev.mm,
            vaddr: ev.vaddr,
            pfn: ev.pfn,
            order: ev.order,
            ref_before: ev.ref_before,
            ref_after: ev.ref_after,
            refs: ev.refs,
            gup,
            flags: ev.flags,
        }
    }
}

/// A rule violation, with the page's timeline as evidence.
/// Field names are a contract (docs/trace-format.md, `report --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Sequence number of the finding within the analysis.
    pub id: u64,
    pub rule: RuleId,
    pub severity: Severity,
    pub status: Status,
    pub pfn: u64,
    pub order: u8,
    /// Address space of the mapping (or of the pin holder).
    pub mm: Hex,
    pub vaddr: Hex,
    pub pid: u32,
    pub comm: Comm,
    /// Monotonic time of the event that raised it.
    pub t_ns: u64,
    /// What happened in this instance.
    pub explanation: String,
    /// The mapping or pin existed before refscope attached.
    #[serde(default)]
    pub at_attach: bool,
    /// How many times the same finding recurred (same rule and key).
    #[serde(default = "one")]
    pub occurrences: u64,
    /// The page's recent events up to the finding (and later events for
    /// `mapped_after_unplug`).
    pub timeline: Vec<TimelineEntry>,
}

fn one() -> u64 {
    1
}
