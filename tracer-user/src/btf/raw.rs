//! The raw BTF encoding: header, type records and string section.
//!
//! Layout reference: `Documentation/bpf/btf.rst` and
//! `include/uapi/linux/btf.h` in the kernel sources. Everything in the type
//! section is made of 32-bit words, so [`parse_layer`] copies it into a
//! `Vec<u32>` in native byte order (swapping a foreign-endian blob once) and
//! records where each type starts. The rest of the module reads records
//! through [`RawType`] and never touches bytes again.

use super::BtfError;

pub(super) const BTF_MAGIC: u16 = 0xeb9f;
pub(super) const BTF_VERSION: u8 = 1;
/// Size of the original header; newer kernels append `layout_off`/`layout_len`.
pub(super) const MIN_HEADER_LEN: u32 = 24;
/// Size of the header with the layout section (kernel 7.x `struct btf_header`).
pub(super) const LAYOUT_HEADER_LEN: u32 = 32;

pub(super) const KIND_INT: u32 = 1;
pub(super) const KIND_PTR: u32 = 2;
pub(super) const KIND_ARRAY: u32 = 3;
pub(super) const KIND_STRUCT: u32 = 4;
pub(super) const KIND_UNION: u32 = 5;
pub(super) const KIND_ENUM: u32 = 6;
pub(super) const KIND_FWD: u32 = 7;
pub(super) const KIND_TYPEDEF: u32 = 8;
pub(super) const KIND_VOLATILE: u32 = 9;
pub(super) const KIND_CONST: u32 = 10;
pub(super) const KIND_RESTRICT: u32 = 11;
pub(super) const KIND_FUNC: u32 = 12;
pub(super) const KIND_FUNC_PROTO: u32 = 13;
pub(super) const KIND_VAR: u32 = 14;
pub(super) const KIND_DATASEC: u32 = 15;
pub(super) const KIND_FLOAT: u32 = 16;
pub(super) const KIND_DECL_TAG: u32 = 17;
pub(super) const KIND_TYPE_TAG: u32 = 18;
pub(super) const KIND_ENUM64: u32 = 19;

/// `BTF_INT_ENCODING` bits.
pub(super) const INT_SIGNED: u32 = 1;
pub(super) const INT_BOOL: u32 = 4;

/// One type record, borrowed from the type section of the layer that holds it.
#[derive(Clone, Copy, Debug)]
pub(super) struct RawType<'a> {
    pub name_off: u32,
    pub info: u32,
    /// `size` for INT, ENUM, STRUCT, UNION, DATASEC, FLOAT, ENUM64;
    /// `type` for the others.
    pub size_or_type: u32,
    /// The kind-specific words that follow `struct btf_type`.
    pub extra: &'a [u32],
}

/// The implicit type 0.
pub(super) const VOID: RawType<'static> = RawType {
    name_off: 0,
    info: 0,
    size_or_type: 0,
    extra: &[],
};

impl RawType<'_> {
    pub fn kind(&self) -> u32 {
        (self.info >> 24) & 0x7f
    }

    pub fn vlen(&self) -> u32 {
        self.info & 0x00ff_ffff
    }

    pub fn kflag(&self) -> bool {
        self.info >> 31 == 1
    }

    pub fn is_composite(&self) -> bool {
        matches!(self.kind(), KIND_STRUCT | KIND_UNION)
    }

    /// `(name_off, type, offset)` of each STRUCT/UNION member.
    pub fn members(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.extra.chunks_exact(3).map(|m| (m[0], m[1], m[2]))
    }

    /// `(name_off, type)` of each FUNC_PROTO parameter.
    pub fn params(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.extra.chunks_exact(2).map(|p| (p[0], p[1]))
    }

    /// `(name_off, value)` of each ENUM or ENUM64 enumerator, the value
    /// sign- or zero-extended according to the kind flag.
    pub fn enumerators(&self) -> Box<dyn Iterator<Item = (u32, i64)> + '_> {
        let signed = self.kflag();
        if self.kind() == KIND_ENUM64 {
            Box::new(self.extra.chunks_exact(3).map(|e| {
                let raw = u64::from(e[1]) | (u64::from(e[2]) << 32);
                (e[0], raw as i64)
            }))
        } else {
            Box::new(self.extra.chunks_exact(2).map(move |e| {
                let value = if signed {
                    i64::from(e[1] as i32)
                } else {
                    i64::from(e[1])
                };
                (e[0], value)
            }))
        }
    }

    /// Type ids this record refers to.
    pub fn referenced_types(&self) -> Vec<u32> {
        match self.kind() {
            KIND_PTR | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
            | KIND_VAR | KIND_DECL_TAG | KIND_TYPE_TAG => vec![self.size_or_type],
            KIND_ARRAY => vec![self.extra[0], self.extra[1]],
            KIND_STRUCT | KIND_UNION => self.members().map(|m| m.1).collect(),
            KIND_FUNC_PROTO => std::iter::once(self.size_or_type)
                .chain(self.params().map(|p| p.1))
                .collect(),
            KIND_DATASEC => self.extra.chunks_exact(3).map(|v| v[0]).collect(),
            _ => Vec::new(),
        }
    }

    /// String offsets this record refers to (its name and its members',
    /// parameters' or enumerators' names).
    pub fn referenced_strings(&self) -> Vec<u32> {
        let mut out = vec![self.name_off];
        match self.kind() {
            KIND_STRUCT | KIND_UNION => out.extend(self.members().map(|m| m.0)),
            KIND_FUNC_PROTO => out.extend(self.params().map(|p| p.0)),
            KIND_ENUM => out.extend(self.extra.chunks_exact(2).map(|e| e[0])),
            KIND_ENUM64 => out.extend(self.extra.chunks_exact(3).map(|e| e[0])),
            _ => {}
        }
        out
    }
}

/// The parsed sections of one BTF blob (vmlinux, or one module's split BTF).
pub(super) struct Layer {
    /// Whether the blob was in the other byte order (and has been swapped).
    pub swapped: bool,
    /// Type section, native byte order.
    pub words: Vec<u32>,
    /// Index into `words` of each type of this layer; type id
    /// `start_id + i` starts at `starts[i]`.
    pub starts: Vec<u32>,
    /// String section.
    pub strings: Box<[u8]>,
}

impl Layer {
    pub fn raw(&self, local: usize) -> RawType<'_> {
        let start = self.starts[local] as usize;
        let end = self
            .starts
            .get(local + 1)
            .map_or(self.words.len(), |&e| e as usize);
        RawType {
            name_off: self.words[start],
            info: self.words[start + 1],
            size_or_type: self.words[start + 2],
            extra: &self.words[start + 3..end],
        }
    }
}

struct Header {
    swapped: bool,
    hdr_len: u32,
    type_off: u32,
    type_len: u32,
    str_off: u32,
    str_len: u32,
    layout_off: u32,
    layout_len: u32,
}

fn read_u32(bytes: &[u8], at: usize, swapped: bool) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    let value = u32::from_ne_bytes(word);
    if swapped { value.swap_bytes() } else { value }
}

fn invalid(reason: impl Into<String>) -> BtfError {
    BtfError::InvalidHeader(reason.into())
}

fn parse_header(bytes: &[u8]) -> Result<Header, BtfError> {
    if bytes.len() < MIN_HEADER_LEN as usize {
        return Err(BtfError::Truncated {
            what: "header",
            needed: MIN_HEADER_LEN as usize,
            available: bytes.len(),
        });
    }
    let magic = u16::from_ne_bytes([bytes[0], bytes[1]]);
    let swapped = if magic == BTF_MAGIC {
        false
    } else if magic.swap_bytes() == BTF_MAGIC {
        true
    } else {
        return Err(BtfError::BadMagic(u16::from_le_bytes([bytes[0], bytes[1]])));
    };
    if bytes[2] != BTF_VERSION {
        return Err(BtfError::UnsupportedVersion(bytes[2]));
    }
    let hdr_len = read_u32(bytes, 4, swapped);
    if hdr_len < MIN_HEADER_LEN || !hdr_len.is_multiple_of(4) {
        return Err(invalid(format!("header length {hdr_len} is not valid")));
    }
    if hdr_len as usize > bytes.len() {
        return Err(BtfError::Truncated {
            what: "header",
            needed: hdr_len as usize,
            available: bytes.len(),
        });
    }
    let (layout_off, layout_len) = if hdr_len >= LAYOUT_HEADER_LEN {
        (read_u32(bytes, 24, swapped), read_u32(bytes, 28, swapped))
    } else {
        (0, 0)
    };
    // A longer header than we know is fine as long as the extra bytes are
    // zero (libbpf's rule): non-zero means a section we cannot interpret.
    let known = if hdr_len >= LAYOUT_HEADER_LEN {
        LAYOUT_HEADER_LEN
    } else {
        MIN_HEADER_LEN
    };
    if bytes[known as usize..hdr_len as usize]
        .iter()
        .any(|&b| b != 0)
    {
        return Err(invalid("header has unknown non-zero fields"));
    }
    Ok(Header {
        swapped,
        hdr_len,
        type_off: read_u32(bytes, 8, swapped),
        type_len: read_u32(bytes, 12, swapped),
        str_off: read_u32(bytes, 16, swapped),
        str_len: read_u32(bytes, 20, swapped),
        layout_off,
        layout_len,
    })
}

/// Returns `data[off..off + len]` of the section named `what`.
fn section<'a>(
    data: &'a [u8],
    what: &'static str,
    off: u32,
    len: u32,
) -> Result<&'a [u8], BtfError> {
    let end = u64::from(off) + u64::from(len);
    if end > data.len() as u64 {
        return Err(BtfError::Truncated {
            what,
            needed: usize::try_from(end).unwrap_or(usize::MAX),
            available: data.len(),
        });
    }
    Ok(&data[off as usize..end as usize])
}

/// Number of extra 32-bit words after `struct btf_type` for a record of
/// `kind` with `vlen` elements, or `None` for a kind we do not know and the
/// layout section does not describe.
fn extra_words(kind: u32, vlen: u32, layout: &[u8]) -> Option<u64> {
    let vlen = u64::from(vlen);
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 1,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_ARRAY => 3,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 3 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 2 * vlen,
        0 => return None,
        _ => {
            // `struct btf_layout { u8 info_sz; u8 elem_sz; u16 flags; }`,
            // one per kind, lets old readers skip records of new kinds.
            let entry = layout.get(kind as usize * 4..kind as usize * 4 + 2)?;
            let (info_sz, elem_sz) = (u64::from(entry[0]), u64::from(entry[1]));
            if !info_sz.is_multiple_of(4) || !elem_sz.is_multiple_of(4) {
                return None;
            }
            info_sz / 4 + vlen * elem_sz / 4
        }
    })
}

/// Parses one BTF blob into a [`Layer`]. `start_id` is the id of its first
/// type (1 for vmlinux, the base's type count for split BTF), `split` says
/// whether a base exists. Type references and string offsets are checked
/// afterwards by the caller, which knows the base.
pub(super) fn parse_layer(bytes: &[u8], start_id: u32, split: bool) -> Result<Layer, BtfError> {
    let hdr = parse_header(bytes)?;
    let data = &bytes[hdr.hdr_len as usize..];
    if !hdr.type_off.is_multiple_of(4) {
        return Err(invalid("type section is not 4-byte aligned"));
    }
    if !hdr.type_len.is_multiple_of(4) {
        return Err(invalid("type section length is not a multiple of 4"));
    }
    let types = section(data, "type section", hdr.type_off, hdr.type_len)?;
    let strings = section(data, "string section", hdr.str_off, hdr.str_len)?;
    let layout = section(data, "layout section", hdr.layout_off, hdr.layout_len)?;
    if !hdr.layout_len.is_multiple_of(4) {
        return Err(invalid("layout section length is not a multiple of 4"));
    }
    // The string section is a sequence of NUL-terminated strings; in base
    // BTF it starts with the empty string (offset 0 = anonymous).
    if !strings.is_empty() && strings[strings.len() - 1] != 0 {
        return Err(invalid("string section is not NUL-terminated"));
    }
    if !split && strings.first() != Some(&0) {
        return Err(invalid(
            "string section does not start with an empty string (split BTF parsed without its base?)",
        ));
    }

    let words: Vec<u32> = types
        .chunks_exact(4)
        .map(|w| {
            let value = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
            if hdr.swapped {
                value.swap_bytes()
            } else {
                value
            }
        })
        .collect();

    let mut starts = Vec::with_capacity(words.len() / 5);
    let mut at = 0usize;
    while at < words.len() {
        let id = start_id as u64 + starts.len() as u64;
        if at + 3 > words.len() {
            return Err(BtfError::Truncated {
                what: "type record",
                needed: (at + 3) * 4,
                available: words.len() * 4,
            });
        }
        let info = words[at + 1];
        let kind = (info >> 24) & 0x7f;
        let vlen = info & 0x00ff_ffff;
        let extra = extra_words(kind, vlen, layout).ok_or(BtfError::UnknownKind {
            id: id as u32,
            kind,
        })?;
        let end = at as u64 + 3 + extra;
        if end > words.len() as u64 {
            return Err(BtfError::Truncated {
                what: "type record",
                needed: usize::try_from(end * 4).unwrap_or(usize::MAX),
                available: words.len() * 4,
            });
        }
        if id > u64::from(u32::MAX) {
            return Err(invalid("too many types"));
        }
        starts.push(at as u32);
        at = end as usize;
    }

    Ok(Layer {
        swapped: hdr.swapped,
        words,
        starts,
        strings: strings.into(),
    })
}
