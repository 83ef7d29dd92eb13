//! The userspace event model: what one line of a trace holds.
//!
//! An [`Event`] is the ABI record from the kernel (`refscope_common::Event`)
//! after userspace has hashed kernel addresses and symbolised the stack. The
//! analysis core only ever sees these, live or from a file.

use std::fmt;

use refscope_common::{EventKind, HookId, flags as abi_flags};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A `u64` written as a `"0x..."` string (addresses, ids, flag words), so
/// JSON readers that use doubles keep every bit. Reads numbers too.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex(pub u64);

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 18];
        s.serialize_str(hex_str(self.0, &mut buf))
    }
}

/// `0x` + lowercase hex digits of `v`, without allocating.
fn hex_str(v: u64, buf: &mut [u8; 18]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = if v == 0 {
        1
    } else {
        (64 - v.leading_zeros() as usize).div_ceil(4)
    };
    buf[0] = b'0';
    buf[1] = b'x';
    for i in 0..digits {
        buf[1 + digits - i] = DIGITS[((v >> (4 * i)) & 0xf) as usize];
    }
    // Only ASCII was written.
    std::str::from_utf8(&buf[..2 + digits]).unwrap_or("0x0")
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Hex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a \"0x...\" hex string or an unsigned integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Hex, E> {
                Ok(Hex(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Hex, E> {
                parse_hex(v)
                    .map(Hex)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"0x1f"` or `"31"`.
pub fn parse_hex(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A command name (`task_struct::comm`): at most 16 bytes, stored inline.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Comm([u8; 16]);

impl Comm {
    /// From the kernel's NUL-padded bytes.
    pub fn from_bytes(raw: &[u8]) -> Self {
        let mut c = [0u8; 16];
        let len = raw
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.len())
            .min(16);
        c[..len].copy_from_slice(&raw[..len]);
        Comm(c)
    }

    pub fn as_str(&self) -> String {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.0[..len]).into_owned()
    }

    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for Comm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        match std::str::from_utf8(&self.0[..len]) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_str(&self.as_str()),
        }
    }
}

impl<'de> Deserialize<'de> for Comm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Comm;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Comm, E> {
                // At most 16 bytes, cut at a character boundary: a name
                // written and read back stays the same.
                let mut end = v.len().min(16);
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                Ok(Comm::from_bytes(&v.as_bytes()[..end]))
            }
        }
        d.deserialize_str(V)
    }
}

/// How the event was observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attach {
    #[default]
    Fentry,
    Kprobe,
    /// Synthesised from the attach-time snapshot.
    Snapshot,
    /// Synthesised by the shadow audit (a read of the page tables).
    Audit,
}

/// Event flag bits ([`refscope_common::flags`]), written as a list of names.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u32);

/// The names of the flag bits, as written in traces.
pub const FLAG_NAMES: &[(u32, &str)] = &[
    (abi_flags::REF_BEFORE, "ref_before"),
    (abi_flags::REF_AFTER, "ref_after"),
    (abi_flags::MEMMAP_UNREADABLE, "memmap_unreadable"),
    (abi_flags::FAILED, "failed"),
    (abi_flags::KPROBE, "kprobe"),
    (abi_flags::PFN_DEVMAP, "devmap"),
    (abi_flags::HAS_STACK, "stack"),
    (abi_flags::WRITE, "write"),
    (abi_flags::MM_TABLE_FULL, "mm_table_full"),
    (abi_flags::NO_RETURN, "no_return"),
    (abi_flags::AT_ATTACH, "at_attach"),
];

impl Flags {
    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                FLAG_NAMES
                    .iter()
                    .filter(|(b, _)| self.0 & b != 0)
                    .map(|(_, n)| n),
            )
            .finish()
    }
}

impl Serialize for Flags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        for (bit, name) in FLAG_NAMES {
            if self.0 & bit != 0 {
                seq.serialize_element(name)?;
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Flags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Flags;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of flag names")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Flags, A::Error> {
                let mut bits = 0;
                while let Some(name) = seq.next_element::<&str>()? {
                    // Unknown names (from a newer refscope) are ignored.
                    if let Some((bit, _)) = FLAG_NAMES.iter().find(|(_, n)| *n == name) {
                        bits |= bit;
                    }
                }
                Ok(Flags(bits))
            }
        }
        d.deserialize_seq(V)
    }
}

macro_rules! serde_named_enum {
    ($ty:ty, $what:literal) => {
        impl SerdeName for $ty {
            fn ser<S: Serializer>(v: &Self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(v.as_str())
            }
            fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        <$ty>::from_name(v)
                            .ok_or_else(|| E::custom(format!("unknown {} `{v}`", $what)))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// Serde for the ABI's named enums (their names are the trace's names).
trait SerdeName: Sized {
    fn ser<S: Serializer>(v: &Self, s: S) -> Result<S::Ok, S::Error>;
    fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}
serde_named_enum!(EventKind, "event kind");
serde_named_enum!(HookId, "hook");

fn ser_named<T: SerdeName, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    T::ser(v, s)
}
fn de_named<'de, T: SerdeName, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    T::de(d)
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_hex(v: &Hex) -> bool {
    v.0 == 0
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}
fn is_no_flags(v: &Flags) -> bool {
    v.0 == 0
}

/// One event. Field names are the trace format (docs/trace-format.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Kernel monotonic time, ns.
    pub t: u64,
    pub cpu: u32,
    /// Per-CPU sequence number (gaps are lost events).
    pub seq: u64,
    #[serde(serialize_with = "ser_named", deserialize_with = "de_named")]
    pub kind: EventKind,
    #[serde(serialize_with = "ser_named", deserialize_with = "de_named")]
    pub hook: HookId,
    #[serde(default)]
    pub attach: Attach,
    pub pid: u32,
    #[serde(default)]
    pub tid: u32,
    #[serde(default, skip_serializing_if = "Comm::is_empty")]
    pub comm: Comm,
    /// Address space id (hashed `struct mm_struct *` unless raw addresses).
    #[serde(default, skip_serializing_if = "is_zero_hex")]
    pub mm: Hex,
    #[serde(default, skip_serializing_if = "is_zero_hex")]
    pub vaddr: Hex,
    #[serde(default, skip_serializing_if = "is_zero_hex")]
    pub vaddr_end: Hex,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub pfn: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub pfn_end: u64,
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub order: u8,
    /// `struct page *` id (hashed unless raw addresses).
    #[serde(default, skip_serializing_if = "is_zero_hex")]
    pub page: Hex,
    /// `struct dev_pagemap *` id (hashed unless raw addresses).
    #[serde(default, skip_serializing_if = "is_zero_hex")]
    pub pgmap: Hex,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_before: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_after: Option<i32>,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub refs: i32,
    /// GUP flags, pgmap type, or memory-failure flags, by kind.
    #[serde(default, skip_serializing_if = "is_zero_hex")]
    pub arg_flags: Hex,
    #[serde(default, skip_serializing_if = "is_no_flags")]
    pub flags: Flags,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ret: i64,
    /// Symbolised kernel stack (GUP events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
    /// `copy_range`: the address space the PTEs were copied from.
    #[serde(default, skip_serializing_if = "is_zero_hex")]
    pub src_mm: Hex,
    /// `remap`: where `[vaddr, vaddr_end)` now starts.
    #[serde(default, skip_serializing_if = "is_zero_hex")]
    pub new_vaddr: Hex,
}

impl Event {
    /// A blank event of `kind` from `hook` (tests and the snapshot use it).
    pub fn new(kind: EventKind, hook: HookId) -> Self {
        Event {
            t: 0,
            cpu: 0,
            seq: 0,
            kind,
            hook,
            attach: Attach::Fentry,
            pid: 0,
            tid: 0,
            comm: Comm::default(),
            mm: Hex(0),
            vaddr: Hex(0),
            vaddr_end: Hex(0),
            pfn: 0,
            pfn_end: 0,
            order: 0,
            page: Hex(0),
            pgmap: Hex(0),
            ref_before: None,
            ref_after: None,
            refs: 0,
            arg_flags: Hex(0),
            flags: Flags(0),
            ret: 0,
            stack: Vec::new(),
            src_mm: Hex(0),
            new_vaddr: Hex(0),
        }
    }

    /// Whether the hooked call failed (nothing changed in the kernel).
    pub fn failed(&self) -> bool {
        self.flags.has(abi_flags::FAILED)
    }

    /// Number of base pages a mapping of this order covers.
    pub fn nr_pages(&self) -> u64 {
        1u64 << self.order.min(20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        for v in [0u64, 1, 0xf, 0x10, 0x7fff_ffff_f000, u64::MAX] {
            let s = serde_json::to_string(&Hex(v)).unwrap();
            assert_eq!(s, format!("\"{v:#x}\""));
            assert_eq!(serde_json::from_str::<Hex>(&s).unwrap(), Hex(v));
        }
        assert_eq!(serde_json::from_str::<Hex>("42").unwrap(), Hex(42));
        assert!(serde_json::from_str::<Hex>("\"0xzz\"").is_err());
    }

    #[test]
    fn comm_is_cut_at_nul_and_16_bytes() {
        assert_eq!(Comm::from_bytes(b"dd\0junk").as_str(), "dd");
        assert_eq!(
            Comm::from_bytes(b"0123456789abcdefXYZ").as_str(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn comm_read_from_a_trace_is_cut_at_a_character_boundary() {
        // From the event_decoder fuzz target: a name cut inside a UTF-8
        // sequence changed every time it was written and read back.
        let c: Comm = serde_json::from_str("\"            \u{fffd}\u{fffd}\"").unwrap();
        assert_eq!(c.as_str(), "            \u{fffd}");
        let again: Comm = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn event_json_round_trips_and_omits_empty_fields() {
        let mut ev = Event::new(EventKind::Map, HookId::InsertPfn);
        ev.t = 5;
        ev.pid = 7;
        ev.pfn = 0x48000;
        ev.vaddr = Hex(0x7f00_0000_0000);
        ev.ref_after = Some(1);
        ev.flags = Flags(abi_flags::REF_AFTER | abi_flags::WRITE);
        let s = serde_json::to_string(&ev).unwrap();
        assert!(s.contains("\"kind\":\"map\""), "{s}");
        assert!(s.contains("\"hook\":\"insert_pfn\""), "{s}");
        assert!(s.contains("\"flags\":[\"ref_after\",\"write\"]"), "{s}");
        assert!(!s.contains("ref_before"), "{s}");
        assert!(!s.contains("stack"), "{s}");
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let s = r#"{"t":1,"cpu":0,"seq":1,"kind":"nope","hook":"insert_pfn","pid":1}"#;
        let err = serde_json::from_str::<Event>(s).unwrap_err().to_string();
        assert!(err.contains("unknown event kind `nope`"), "{err}");
    }
}
