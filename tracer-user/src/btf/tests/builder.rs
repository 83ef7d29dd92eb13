//! Test-only writer of raw BTF blobs: synthetic types for unit tests, and the
//! output side of the fixture minimizer.

use std::collections::HashMap;

use super::super::Btf;
use super::super::raw::{
    KIND_ARRAY, KIND_CONST, KIND_DATASEC, KIND_DECL_TAG, KIND_ENUM, KIND_ENUM64, KIND_FLOAT,
    KIND_FUNC, KIND_FUNC_PROTO, KIND_FWD, KIND_INT, KIND_PTR, KIND_RESTRICT, KIND_STRUCT,
    KIND_TYPE_TAG, KIND_TYPEDEF, KIND_UNION, KIND_VAR, KIND_VOLATILE,
};

pub const INT_SIGNED: u32 = 1;
pub const INT_CHAR: u32 = 2;
pub const INT_BOOL: u32 = 4;

pub const LINKAGE_STATIC: u32 = 0;
pub const LINKAGE_GLOBAL: u32 = 1;

/// Builds base or split BTF, one type at a time; each adder returns the new
/// type's id.
pub struct Builder {
    start_id: u32,
    start_str: u32,
    /// Base BTF of split BTF, whose strings are reused like libbpf does.
    base: Option<Btf>,
    strings: Vec<u8>,
    string_offsets: HashMap<String, u32>,
    words: Vec<u32>,
    count: u32,
    big_endian: bool,
    layout: Option<Vec<[u8; 4]>>,
}

impl Builder {
    /// Base BTF.
    pub fn new() -> Self {
        Self {
            start_id: 1,
            start_str: 0,
            base: None,
            strings: vec![0],
            string_offsets: HashMap::new(),
            words: Vec::new(),
            count: 0,
            big_endian: cfg!(target_endian = "big"),
            layout: None,
        }
    }

    /// Split BTF on top of `base`.
    pub fn split(base: &Btf) -> Self {
        Self {
            start_id: base.type_count(),
            start_str: base.string_end(),
            base: Some(base.clone()),
            strings: Vec::new(),
            ..Self::new()
        }
    }

    /// Writes the other byte order than the host's.
    pub fn foreign_endian(mut self) -> Self {
        self.big_endian = !self.big_endian;
        self
    }

    /// Writes a 32-byte header with a layout section of `entries`
    /// (`[info_sz, elem_sz, flags_lo, flags_hi]` per kind).
    pub fn with_layout(mut self, entries: Vec<[u8; 4]>) -> Self {
        self.layout = Some(entries);
        self
    }

    /// Id the next added type will get.
    pub fn next_id(&self) -> u32 {
        self.start_id + self.count
    }

    fn string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(offset) = self.base.as_ref().and_then(|b| base_string(b, s)) {
            return offset;
        }
        if let Some(&offset) = self.string_offsets.get(s) {
            return offset;
        }
        let offset = self.start_str + self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(s.to_owned(), offset);
        offset
    }

    /// Any record: `extra` is written as is after `struct btf_type`.
    pub fn record(
        &mut self,
        kind: u32,
        name: &str,
        vlen: u32,
        kflag: bool,
        size_or_type: u32,
        extra: &[u32],
    ) -> u32 {
        let name_off = self.string(name);
        self.words.push(name_off);
        self.words
            .push((u32::from(kflag) << 31) | (kind << 24) | (vlen & 0x00ff_ffff));
        self.words.push(size_or_type);
        self.words.extend_from_slice(extra);
        let id = self.next_id();
        self.count += 1;
        id
    }

    pub fn int_encoded(
        &mut self,
        name: &str,
        size: u32,
        encoding: u32,
        offset: u32,
        bits: u32,
    ) -> u32 {
        self.record(
            KIND_INT,
            name,
            0,
            false,
            size,
            &[(encoding << 24) | (offset << 16) | bits],
        )
    }

    pub fn int(&mut self, name: &str, size: u32, signed: bool) -> u32 {
        let encoding = if signed { INT_SIGNED } else { 0 };
        self.int_encoded(name, size, encoding, 0, size * 8)
    }

    pub fn ptr(&mut self, target: u32) -> u32 {
        self.record(KIND_PTR, "", 0, false, target, &[])
    }

    pub fn array(&mut self, elem: u32, index: u32, len: u32) -> u32 {
        self.record(KIND_ARRAY, "", 0, false, 0, &[elem, index, len])
    }

    /// Struct or union with `(name, type, raw offset word)` members.
    pub fn composite(
        &mut self,
        kind: u32,
        name: &str,
        size: u32,
        kflag: bool,
        members: &[(&str, u32, u32)],
    ) -> u32 {
        let mut extra = Vec::new();
        for &(member, ty, offset) in members {
            extra.extend([self.string(member), ty, offset]);
        }
        self.record(kind, name, members.len() as u32, kflag, size, &extra)
    }

    /// Struct with `(name, type, bit offset)` members.
    pub fn struct_(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        self.composite(KIND_STRUCT, name, size, false, members)
    }

    pub fn union_(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        self.composite(KIND_UNION, name, size, false, members)
    }

    /// Struct with the kind flag set: `(name, type, bit offset, bitfield bits)`.
    pub fn struct_bitfields(
        &mut self,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32, u32)],
    ) -> u32 {
        let mut extra = Vec::new();
        for &(member, ty, bit_offset, bits) in members {
            extra.extend([self.string(member), ty, (bits << 24) | bit_offset]);
        }
        self.record(KIND_STRUCT, name, members.len() as u32, true, size, &extra)
    }

    pub fn enum_(&mut self, name: &str, size: u32, signed: bool, values: &[(&str, i64)]) -> u32 {
        let mut extra = Vec::new();
        for &(enumerator, value) in values {
            extra.extend([self.string(enumerator), value as u32]);
        }
        self.record(KIND_ENUM, name, values.len() as u32, signed, size, &extra)
    }

    pub fn enum64(&mut self, name: &str, size: u32, signed: bool, values: &[(&str, i64)]) -> u32 {
        let mut extra = Vec::new();
        for &(enumerator, value) in values {
            let value = value as u64;
            extra.extend([self.string(enumerator), value as u32, (value >> 32) as u32]);
        }
        self.record(KIND_ENUM64, name, values.len() as u32, signed, size, &extra)
    }

    pub fn fwd(&mut self, name: &str, union: bool) -> u32 {
        self.record(KIND_FWD, name, 0, union, 0, &[])
    }

    pub fn typedef(&mut self, name: &str, target: u32) -> u32 {
        self.record(KIND_TYPEDEF, name, 0, false, target, &[])
    }

    pub fn const_(&mut self, target: u32) -> u32 {
        self.record(KIND_CONST, "", 0, false, target, &[])
    }

    pub fn volatile(&mut self, target: u32) -> u32 {
        self.record(KIND_VOLATILE, "", 0, false, target, &[])
    }

    pub fn restrict(&mut self, target: u32) -> u32 {
        self.record(KIND_RESTRICT, "", 0, false, target, &[])
    }

    pub fn type_tag(&mut self, name: &str, target: u32) -> u32 {
        self.record(KIND_TYPE_TAG, name, 0, false, target, &[])
    }

    pub fn decl_tag(&mut self, name: &str, target: u32, component: i32) -> u32 {
        self.record(KIND_DECL_TAG, name, 0, false, target, &[component as u32])
    }

    /// Prototype with `(name, type)` parameters; a `("", 0)` last parameter
    /// means `...`.
    pub fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        let mut extra = Vec::new();
        for &(param, ty) in params {
            extra.extend([self.string(param), ty]);
        }
        self.record(KIND_FUNC_PROTO, "", params.len() as u32, false, ret, &extra)
    }

    pub fn func(&mut self, name: &str, proto: u32, linkage: u32) -> u32 {
        self.record(KIND_FUNC, name, linkage, false, proto, &[])
    }

    pub fn var(&mut self, name: &str, ty: u32, linkage: u32) -> u32 {
        self.record(KIND_VAR, name, 0, false, ty, &[linkage])
    }

    /// Data section with `(var type, offset, size)` entries.
    pub fn datasec(&mut self, name: &str, size: u32, vars: &[(u32, u32, u32)]) -> u32 {
        let extra: Vec<u32> = vars.iter().flat_map(|&(t, o, s)| [t, o, s]).collect();
        self.record(KIND_DATASEC, name, vars.len() as u32, false, size, &extra)
    }

    pub fn float(&mut self, name: &str, size: u32) -> u32 {
        self.record(KIND_FLOAT, name, 0, false, size, &[])
    }

    /// The BTF blob.
    pub fn build(&self) -> Vec<u8> {
        let put32 = |out: &mut Vec<u8>, v: u32| {
            if self.big_endian {
                out.extend_from_slice(&v.to_be_bytes());
            } else {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        let type_len = self.words.len() as u32 * 4;
        let str_len = self.strings.len() as u32;
        let hdr_len: u32 = if self.layout.is_some() { 32 } else { 24 };
        let mut out = Vec::new();
        let magic: u16 = 0xeb9f;
        out.extend_from_slice(&if self.big_endian {
            magic.to_be_bytes()
        } else {
            magic.to_le_bytes()
        });
        out.extend_from_slice(&[1, 0]);
        put32(&mut out, hdr_len);
        put32(&mut out, 0);
        put32(&mut out, type_len);
        put32(&mut out, type_len);
        put32(&mut out, str_len);
        // Layout goes after the strings, padded to 4 bytes.
        let pad = (4 - str_len % 4) % 4;
        if let Some(layout) = &self.layout {
            put32(&mut out, type_len + str_len + pad);
            put32(&mut out, layout.len() as u32 * 4);
        }
        for &w in &self.words {
            put32(&mut out, w);
        }
        out.extend_from_slice(&self.strings);
        if let Some(layout) = &self.layout {
            out.extend(std::iter::repeat_n(0u8, pad as usize));
            for entry in layout {
                out.extend_from_slice(entry);
            }
        }
        out
    }

    /// Builds and parses as base BTF.
    pub fn parse(&self) -> Btf {
        Btf::parse(&self.build()).expect("builder output parses")
    }
}

/// Offset of `s` as a whole string in `btf`'s (or its base's) string section.
fn base_string(btf: &Btf, s: &str) -> Option<u32> {
    let inner = &*btf.inner;
    let mut offset = 0usize;
    for piece in inner.layer.strings.split(|&b| b == 0) {
        if piece == s.as_bytes() {
            return Some(inner.start_str + offset as u32);
        }
        offset += piece.len() + 1;
    }
    inner.base.as_ref().and_then(|b| base_string(b, s))
}
