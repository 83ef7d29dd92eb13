//! Reader for the kernel's BTF (BPF Type Format).
//!
//! rustc emits no CO-RE relocations for eBPF programs, so refscope asks the
//! running kernel's BTF for struct layouts and function signatures at start-up
//! and hands the offsets to the programs. This module parses the raw format
//! itself (no aya, no libbpf): see `Documentation/bpf/btf.rst` and
//! `include/uapi/linux/btf.h` in the kernel sources.
//!
//! - [`Btf::from_sys_fs`] reads `/sys/kernel/btf/vmlinux`; [`Btf::parse`]
//!   and [`Btf::parse_split`] take bytes (module BTF is split BTF on top of
//!   vmlinux).
//! - Layout queries: [`Btf::struct_size`], [`Btf::member_offset`] (looks
//!   through anonymous structs/unions at any depth and follows dotted paths
//!   through named members), [`Btf::has_member`], [`Btf::member`].
//! - Signatures: [`Btf::func`] returns a [`FuncInfo`] with coarse
//!   [`ValueKind`]s that compare with `==`.
//! - Constants: [`Btf::enum_value`] and [`Btf::enum_value_in`].
//!
//! Parsing copies the type section into native-order 32-bit words and records
//! where each type starts; name indexes are built on first use. Pointers are
//! taken to be 8 bytes (refscope runs on 64-bit kernels only).

mod query;
mod raw;
mod value;

#[cfg(test)]
mod tests;

/// The minimized BTF of the Debian kernels refscope is tested on, for
/// other modules' tests.
#[cfg(test)]
pub mod testing {
    /// `version`: "6.1", "6.12" or "7.3".
    pub fn fixture(version: &str) -> super::Btf {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/btf")
            .join(format!("{version}.btf"));
        super::Btf::from_file(&path).expect("BTF fixture parses")
    }
}

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use raw::{
    INT_BOOL, INT_SIGNED, KIND_ARRAY, KIND_CONST, KIND_DATASEC, KIND_ENUM, KIND_ENUM64, KIND_FLOAT,
    KIND_FUNC, KIND_FUNC_PROTO, KIND_FWD, KIND_INT, KIND_PTR, KIND_RESTRICT, KIND_STRUCT,
    KIND_TYPE_TAG, KIND_TYPEDEF, KIND_UNION, KIND_VOLATILE, Layer, RawType,
};
pub use value::{FuncInfo, Linkage, MemberInfo, Param, Pointee, ValueKind};

/// Where the running kernel exposes its own BTF.
pub const SYS_FS_VMLINUX: &str = "/sys/kernel/btf/vmlinux";
/// Directory holding vmlinux and per-module (split) BTF.
pub const SYS_FS_DIR: &str = "/sys/kernel/btf";

/// Size of a pointer on the kernels refscope supports.
const POINTER_SIZE: u32 = 8;
/// Longest chain of typedefs/modifiers/arrays or nesting of anonymous
/// members we follow before declaring the data cyclic.
const MAX_DEPTH: u32 = 64;

/// Everything that can go wrong reading BTF or looking something up in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BtfError {
    /// The data is shorter than its header or one of its sections claims.
    #[error(
        "btf data is truncated: the {what} needs {needed} bytes but only {available} are there"
    )]
    Truncated {
        /// Which part overflowed (`"header"`, `"type section"`, ...).
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The data does not start with the BTF magic number 0xeb9f.
    #[error("not btf data: magic is {0:#06x}, expected 0xeb9f")]
    BadMagic(u16),
    /// The header has a version other than 1.
    #[error("unsupported btf version {0} (only version 1 exists)")]
    UnsupportedVersion(u8),
    /// The header or the layout of the sections is inconsistent.
    #[error("invalid btf header: {0}")]
    InvalidHeader(String),
    /// A type record has a kind this reader does not know and that the
    /// (optional) layout section does not describe, so it cannot be skipped.
    #[error("type [{id}] has unknown kind {kind}")]
    UnknownKind {
        /// Type id of the record.
        id: u32,
        /// Its kind number.
        kind: u32,
    },
    /// A type record refers to a type id that does not exist.
    #[error("type [{id}] refers to type [{target}], which does not exist")]
    BadTypeRef {
        /// Type id of the record.
        id: u32,
        /// The missing id it refers to.
        target: u32,
    },
    /// A type record has a name offset past the end of the string section.
    #[error("type [{id}] names a string at offset {offset}, past the string section")]
    BadStringOffset {
        /// Type id of the record.
        id: u32,
        /// The string offset.
        offset: u32,
    },
    /// A FUNC record does not point to a FUNC_PROTO.
    #[error("function [{id}] does not point to a function prototype")]
    BadFunc {
        /// Type id of the FUNC record.
        id: u32,
    },
    /// Split BTF and its base are in different byte orders.
    #[error("split btf and its base btf have different byte orders")]
    EndianMismatch,
    /// A chain of typedefs/modifiers/arrays, or of nested anonymous members,
    /// is longer than any real kernel's: the data is cyclic or corrupt.
    #[error("type [{id}] starts a chain of types that is too deep or cyclic")]
    TypeChainTooDeep {
        /// Where the chain starts.
        id: u32,
    },
    /// The kernel exposes no BTF file (built without `CONFIG_DEBUG_INFO_BTF`,
    /// or a module built without BTF).
    #[error(
        "{} does not exist: the kernel exposes no btf there (vmlinux btf needs CONFIG_DEBUG_INFO_BTF=y, module btf also CONFIG_DEBUG_INFO_BTF_MODULES=y)",
        path.display()
    )]
    NoKernelBtf {
        /// The file that is missing.
        path: PathBuf,
    },
    /// Reading a BTF file failed for another reason than its absence.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A BTF file was read but is not valid BTF.
    #[error("invalid btf in {}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<BtfError>,
    },
    /// No struct or union has this name.
    #[error("no struct or union named `{0}`")]
    NoStruct(String),
    /// The struct (or a named member on the path) has no such member.
    #[error("{container} has no member `{path}`")]
    NoMember {
        /// `"struct page"`, `"union foo"`.
        container: String,
        /// The path up to and including the missing component.
        path: String,
    },
    /// A dotted path tries to descend into a member that is not a struct or
    /// union (e.g. a pointer).
    #[error("member `{path}` of {container} is `{found}`, not a struct or union")]
    NotComposite {
        /// `"struct page"`, `"union foo"`.
        container: String,
        /// The path up to the member that is not a struct or union.
        path: String,
        /// What it is instead.
        found: String,
    },
    /// The member is a bitfield that does not start on a byte boundary.
    #[error(
        "member `{path}` of {container} is a bitfield at bit {bit_offset}, not on a byte boundary"
    )]
    Bitfield {
        /// `"struct page"`, `"union foo"`.
        container: String,
        /// The member path.
        path: String,
        /// Its offset in bits from the start of the outer struct.
        bit_offset: u64,
    },
    /// The member path is empty or has an empty component (`"a..b"`).
    #[error("invalid member path `{0}`")]
    InvalidPath(String),
    /// No FUNC record has this name.
    #[error("no function named `{0}` in btf")]
    NoFunc(String),
    /// A function's prototype differs from the expected one.
    #[error("{func}: {what} is `{found}`, expected `{expected}`")]
    SignatureMismatch {
        /// Function name.
        func: String,
        /// What differs (`"parameter 0 (`page`)"`, `"return type"`, ...).
        what: String,
        /// What the kernel has.
        found: String,
        /// What was expected.
        expected: String,
    },
}

/// Parsed BTF: vmlinux's, or a module's split BTF with its base.
///
/// Cheap to clone (the data is shared) and `Send + Sync`.
#[derive(Clone)]
pub struct Btf {
    inner: Arc<Inner>,
}

struct Inner {
    /// Base BTF for split BTF.
    base: Option<Btf>,
    /// Id of the first type of `layer` (1 for base BTF: 0 is `void`).
    start_id: u32,
    /// String offset where `layer.strings` begins (the base's string length).
    start_str: u32,
    layer: Layer,
    /// `(hash(name), id)` of this layer's named types, sorted.
    names: OnceLock<Vec<(u64, u32)>>,
    /// `(hash(enumerator), enum type id, index)` of this layer's enumerators, sorted.
    enumerators: OnceLock<Vec<(u64, u32, u32)>>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.type_count())
            .field("first_own_type", &self.inner.start_id)
            .field("split", &self.inner.base.is_some())
            .finish_non_exhaustive()
    }
}

/// FNV-1a, 64-bit: fast on short identifiers, deterministic.
fn name_hash(name: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in name {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn read_file(path: &Path) -> Result<Vec<u8>, BtfError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            BtfError::NoKernelBtf {
                path: path.to_owned(),
            }
        } else {
            BtfError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })
}

fn in_file(path: &Path) -> impl FnOnce(BtfError) -> BtfError + '_ {
    move |source| BtfError::InFile {
        path: path.to_owned(),
        source: Box::new(source),
    }
}

impl Btf {
    /// Parses base BTF (vmlinux's, or any standalone blob).
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let layer = raw::parse_layer(bytes, 1, false)?;
        Self::finish(None, layer)
    }

    /// Parses split BTF (a module's `/sys/kernel/btf/<module>`) on top of
    /// `base`: its type ids continue after the base's and its string offsets
    /// after the base's string section.
    pub fn parse_split(bytes: &[u8], base: &Self) -> Result<Self, BtfError> {
        let layer = raw::parse_layer(bytes, base.type_count(), true)?;
        if layer.swapped != base.inner.layer.swapped {
            return Err(BtfError::EndianMismatch);
        }
        Self::finish(Some(base.clone()), layer)
    }

    /// Reads and parses a base BTF file (a saved `/sys/kernel/btf/vmlinux`
    /// or an extracted `.BTF` section).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        Self::parse(&read_file(path)?).map_err(in_file(path))
    }

    /// Reads and parses a split BTF file on top of `base`.
    pub fn split_from_file(path: impl AsRef<Path>, base: &Self) -> Result<Self, BtfError> {
        let path = path.as_ref();
        Self::parse_split(&read_file(path)?, base).map_err(in_file(path))
    }

    /// Reads the running kernel's BTF from `/sys/kernel/btf/vmlinux`.
    ///
    /// A missing file gives [`BtfError::NoKernelBtf`], which names the file
    /// and says the kernel needs `CONFIG_DEBUG_INFO_BTF`.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(SYS_FS_VMLINUX)
    }

    /// Reads a loaded module's BTF from `/sys/kernel/btf/<module>`, split on
    /// top of `vmlinux` (which must be the running kernel's).
    pub fn module_from_sys_fs(module: &str, vmlinux: &Self) -> Result<Self, BtfError> {
        Self::split_from_file(Path::new(SYS_FS_DIR).join(module), vmlinux)
    }

    fn finish(base: Option<Self>, layer: Layer) -> Result<Self, BtfError> {
        let (start_id, start_str) = match &base {
            Some(base) => (base.type_count(), base.string_end()),
            None => (1, 0),
        };
        if u64::from(start_str) + layer.strings.len() as u64 > u64::from(u32::MAX) {
            return Err(BtfError::InvalidHeader(
                "string section too large".to_owned(),
            ));
        }
        let btf = Self {
            inner: Arc::new(Inner {
                base,
                start_id,
                start_str,
                layer,
                names: OnceLock::new(),
                enumerators: OnceLock::new(),
            }),
        };
        btf.validate()?;
        Ok(btf)
    }

    /// Checks every type reference and string offset of this layer, so that
    /// the queries can index without bounds surprises.
    fn validate(&self) -> Result<(), BtfError> {
        let end_id = self.type_count();
        let end_str = self.string_end();
        let inner = &self.inner;
        for local in 0..inner.layer.starts.len() {
            let id = inner.start_id + local as u32;
            let t = inner.layer.raw(local);
            for offset in t.referenced_strings() {
                if offset >= end_str && offset != 0 {
                    return Err(BtfError::BadStringOffset { id, offset });
                }
            }
            for target in t.referenced_types() {
                if target >= end_id {
                    return Err(BtfError::BadTypeRef { id, target });
                }
            }
            if t.kind() == KIND_FUNC && self.raw(t.size_or_type).kind() != KIND_FUNC_PROTO {
                return Err(BtfError::BadFunc { id });
            }
        }
        Ok(())
    }

    /// Number of type ids, including `void` (id 0) and, for split BTF, the
    /// base's types: valid ids are `0..type_count()`.
    pub fn type_count(&self) -> u32 {
        self.inner.start_id + self.inner.layer.starts.len() as u32
    }

    /// The base BTF of split BTF.
    pub fn base(&self) -> Option<&Self> {
        self.inner.base.as_ref()
    }

    fn string_end(&self) -> u32 {
        self.inner.start_str + self.inner.layer.strings.len() as u32
    }

    /// The record of type `id` (validated ids only).
    fn raw(&self, id: u32) -> RawType<'_> {
        let inner = &*self.inner;
        if id == 0 {
            raw::VOID
        } else if id < inner.start_id {
            match &inner.base {
                Some(base) => base.raw(id),
                None => raw::VOID,
            }
        } else {
            inner.layer.raw((id - inner.start_id) as usize)
        }
    }

    /// The NUL-terminated string at `offset` (validated offsets only).
    fn str_bytes(&self, offset: u32) -> &[u8] {
        let inner = &*self.inner;
        if offset < inner.start_str {
            return match &inner.base {
                Some(base) => base.str_bytes(offset),
                None => b"",
            };
        }
        let rest = inner
            .layer
            .strings
            .get((offset - inner.start_str) as usize..)
            .unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn name(&self, id: u32) -> &[u8] {
        self.str_bytes(self.raw(id).name_off)
    }

    fn name_string(&self, offset: u32) -> Option<String> {
        let bytes = self.str_bytes(offset);
        (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned())
    }

    fn name_index(&self) -> &[(u64, u32)] {
        self.inner.names.get_or_init(|| {
            let inner = &*self.inner;
            let mut index = Vec::with_capacity(inner.layer.starts.len());
            for local in 0..inner.layer.starts.len() {
                let t = inner.layer.raw(local);
                if t.name_off != 0 {
                    let name = self.str_bytes(t.name_off);
                    if !name.is_empty() {
                        index.push((name_hash(name), inner.start_id + local as u32));
                    }
                }
            }
            index.sort_unstable();
            index
        })
    }

    fn enumerator_index(&self) -> &[(u64, u32, u32)] {
        self.inner.enumerators.get_or_init(|| {
            let inner = &*self.inner;
            let mut index = Vec::new();
            for local in 0..inner.layer.starts.len() {
                let t = inner.layer.raw(local);
                if matches!(t.kind(), KIND_ENUM | KIND_ENUM64) {
                    let id = inner.start_id + local as u32;
                    for (i, (name_off, _)) in t.enumerators().enumerate() {
                        let name = self.str_bytes(name_off);
                        if !name.is_empty() {
                            index.push((name_hash(name), id, i as u32));
                        }
                    }
                }
            }
            index.sort_unstable();
            index
        })
    }

    /// Ids of the types named `name` whose kind satisfies `want`, base
    /// first, in id order.
    fn find_types(&self, name: &str, want: impl Fn(u32) -> bool + Copy) -> Vec<u32> {
        let mut out = self
            .inner
            .base
            .as_ref()
            .map(|base| base.find_types(name, want))
            .unwrap_or_default();
        let name = name.as_bytes();
        let hash = name_hash(name);
        let index = self.name_index();
        let from = index.partition_point(|e| e.0 < hash);
        for &(h, id) in &index[from..] {
            if h != hash {
                break;
            }
            if want(self.raw(id).kind()) && self.name(id) == name {
                out.push(id);
            }
        }
        out
    }

    fn find_type(&self, name: &str, want: impl Fn(u32) -> bool + Copy) -> Option<u32> {
        // Only the first match is wanted, but the base is searched first and
        // each layer's candidates are few: simplest to reuse find_types.
        self.find_types(name, want).first().copied()
    }

    /// `(type id, enumerator index)` of enumerators named `name`, base first.
    fn find_enumerators(&self, name: &str) -> Vec<(u32, u32)> {
        let mut out = self
            .inner
            .base
            .as_ref()
            .map(|base| base.find_enumerators(name))
            .unwrap_or_default();
        let name = name.as_bytes();
        let hash = name_hash(name);
        let index = self.enumerator_index();
        let from = index.partition_point(|e| e.0 < hash);
        for &(h, id, i) in &index[from..] {
            if h != hash {
                break;
            }
            let value = self.raw(id).enumerators().nth(i as usize);
            if value.is_some_and(|(name_off, _)| self.str_bytes(name_off) == name) {
                out.push((id, i));
            }
        }
        out
    }

    /// Follows typedef/const/volatile/restrict/type-tag records.
    fn skip_modifiers(&self, id: u32) -> Result<u32, BtfError> {
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            let t = self.raw(cur);
            match t.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    cur = t.size_or_type;
                }
                _ => return Ok(cur),
            }
        }
        Err(BtfError::TypeChainTooDeep { id })
    }
}
