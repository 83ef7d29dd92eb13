//! Coarse, owned descriptions of types, members and functions, as returned
//! by the [`Btf`](super::Btf) queries.
//!
//! They deliberately drop what refscope never checks (typedef names,
//! `const`, exact C spelling of integer types) so that comparing a kernel's
//! signature against the one an eBPF program expects is a plain `==`.

use std::fmt;

use super::BtfError;

/// What a value (parameter, return value or struct member) is, after
/// looking through `typedef`, `const`, `volatile`, `restrict` and type tags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `void` (only as a return type).
    Void,
    /// `_Bool`.
    Bool,
    /// Any integer type, `char` included.
    Int {
        /// Size in bytes.
        size: u32,
        /// Whether BTF marks it signed.
        signed: bool,
    },
    /// A floating-point type.
    Float {
        /// Size in bytes.
        size: u32,
    },
    /// An enum (32- or 64-bit).
    Enum {
        /// Enum tag, `None` for an anonymous enum.
        name: Option<String>,
        /// Size in bytes.
        size: u32,
        /// Whether BTF marks its values signed.
        signed: bool,
    },
    /// A struct by value (e.g. `pfn_t` in 6.x insert hooks).
    Struct {
        /// Struct tag, `None` for an anonymous struct.
        name: Option<String>,
        /// Size in bytes.
        size: u32,
    },
    /// A union by value.
    Union {
        /// Union tag, `None` for an anonymous union.
        name: Option<String>,
        /// Size in bytes.
        size: u32,
    },
    /// A pointer.
    Ptr(Pointee),
    /// An array (only as a struct member).
    Array {
        /// Number of elements (0 for a flexible array member).
        len: u32,
        /// Size of one element in bytes.
        elem_size: u32,
    },
    /// Anything else (a function type, a forward declaration by value, ...).
    Other,
}

/// What a pointer points to: one level deep, coarse.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pointee {
    /// `void *`.
    Void,
    /// `bool *`.
    Bool,
    /// Pointer to an integer.
    Int {
        /// Size in bytes.
        size: u32,
        /// Whether BTF marks it signed.
        signed: bool,
    },
    /// Pointer to a float.
    Float {
        /// Size in bytes.
        size: u32,
    },
    /// Pointer to a struct, complete or only forward-declared.
    Struct(Option<String>),
    /// Pointer to a union, complete or only forward-declared.
    Union(Option<String>),
    /// Pointer to an enum.
    Enum(Option<String>),
    /// Pointer to a pointer.
    Ptr,
    /// Function pointer.
    Func,
    /// Pointer to something else (an array, ...).
    Other,
}

impl ValueKind {
    /// `struct <name> *`.
    pub fn ptr_to_struct(name: &str) -> Self {
        Self::Ptr(Pointee::Struct(Some(name.to_owned())))
    }

    /// Integer of `size` bytes.
    pub fn int(size: u32, signed: bool) -> Self {
        Self::Int { size, signed }
    }

    /// The struct name if this is a pointer to a (named) struct.
    pub fn pointee_struct(&self) -> Option<&str> {
        match self {
            Self::Ptr(Pointee::Struct(Some(name))) => Some(name),
            _ => None,
        }
    }

    /// Whether this is `struct <name> *`.
    pub fn is_ptr_to_struct(&self, name: &str) -> bool {
        self.pointee_struct() == Some(name)
    }
}

fn int_name(size: u32, signed: bool) -> String {
    format!("{}{}", if signed { 's' } else { 'u' }, size * 8)
}

fn tag(f: &mut fmt::Formatter<'_>, keyword: &str, name: Option<&String>) -> fmt::Result {
    match name {
        Some(name) => write!(f, "{keyword} {name}"),
        None => write!(f, "{keyword} (anonymous)"),
    }
}

impl fmt::Display for Pointee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Void => f.write_str("void *"),
            Self::Bool => f.write_str("bool *"),
            Self::Int { size, signed } => write!(f, "{} *", int_name(*size, *signed)),
            Self::Float { size } => write!(f, "f{} *", size * 8),
            Self::Struct(name) => tag(f, "struct", name.as_ref()).and_then(|()| f.write_str(" *")),
            Self::Union(name) => tag(f, "union", name.as_ref()).and_then(|()| f.write_str(" *")),
            Self::Enum(name) => tag(f, "enum", name.as_ref()).and_then(|()| f.write_str(" *")),
            Self::Ptr => f.write_str("pointer *"),
            Self::Func => f.write_str("function pointer"),
            Self::Other => f.write_str("pointer"),
        }
    }
}

/// Renders C-like text with fixed-width integers: `struct page *`, `s32`,
/// `struct (anonymous)`, `enum memory_type`.
impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Void => f.write_str("void"),
            Self::Bool => f.write_str("bool"),
            Self::Int { size, signed } => f.write_str(&int_name(*size, *signed)),
            Self::Float { size } => write!(f, "f{}", size * 8),
            Self::Enum { name, .. } => tag(f, "enum", name.as_ref()),
            Self::Struct { name, .. } => tag(f, "struct", name.as_ref()),
            Self::Union { name, .. } => tag(f, "union", name.as_ref()),
            Self::Ptr(pointee) => pointee.fmt(f),
            Self::Array { len, elem_size } => {
                write!(f, "array[{len}] of {elem_size}-byte elements")
            }
            Self::Other => f.write_str("other type"),
        }
    }
}

/// Linkage of a `BTF_KIND_FUNC` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Linkage {
    /// `BTF_FUNC_STATIC` (what pahole records for every vmlinux function).
    Static,
    /// `BTF_FUNC_GLOBAL`.
    Global,
    /// `BTF_FUNC_EXTERN`.
    Extern,
    /// A value this reader does not know.
    Unknown(u32),
}

impl Linkage {
    pub(super) fn from_vlen(vlen: u32) -> Self {
        match vlen {
            0 => Self::Static,
            1 => Self::Global,
            2 => Self::Extern,
            other => Self::Unknown(other),
        }
    }
}

/// One function parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    /// Parameter name, `None` when BTF has none.
    pub name: Option<String>,
    /// Its type.
    pub kind: ValueKind,
}

/// A kernel function as BTF describes it (`BTF_KIND_FUNC` + its prototype).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FuncInfo {
    /// Function name.
    pub name: String,
    /// BTF type id of the FUNC record (what fentry/fexit attach by).
    pub type_id: u32,
    /// Its linkage.
    pub linkage: Linkage,
    /// Return type.
    pub ret: ValueKind,
    /// Parameters in order (without the `...` of a variadic function).
    pub params: Vec<Param>,
    /// Whether the prototype ends with `...`.
    pub variadic: bool,
}

impl FuncInfo {
    /// Number of parameters (not counting `...`).
    pub fn param_count(&self) -> usize {
        self.params.len()
    }

    /// Parameter names, `""` for unnamed ones.
    pub fn param_names(&self) -> Vec<&str> {
        self.params
            .iter()
            .map(|p| p.name.as_deref().unwrap_or(""))
            .collect()
    }

    /// Checks that the function returns `ret` and takes exactly `params`
    /// (compared with `==`), naming the first difference in the error.
    pub fn check_signature(&self, ret: &ValueKind, params: &[ValueKind]) -> Result<(), BtfError> {
        let mismatch = |what: String, found: String, expected: String| {
            Err(BtfError::SignatureMismatch {
                func: self.name.clone(),
                what,
                found,
                expected,
            })
        };
        if self.params.len() != params.len() {
            return mismatch(
                "parameter count".to_owned(),
                self.params.len().to_string(),
                params.len().to_string(),
            );
        }
        for (i, (have, want)) in self.params.iter().zip(params).enumerate() {
            if have.kind != *want {
                let what = match &have.name {
                    Some(name) => format!("parameter {i} (`{name}`)"),
                    None => format!("parameter {i}"),
                };
                return mismatch(what, have.kind.to_string(), want.to_string());
            }
        }
        if self.ret != *ret {
            return mismatch(
                "return type".to_owned(),
                self.ret.to_string(),
                ret.to_string(),
            );
        }
        Ok(())
    }
}

/// Where a (possibly nested) struct member sits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberInfo {
    /// Offset in bytes from the start of the outer struct (rounded down for
    /// a bitfield; see `bit_offset`).
    pub offset: u32,
    /// Offset in bits from the start of the outer struct.
    pub bit_offset: u64,
    /// Width in bits if the member is a bitfield, else `None`.
    pub bitfield_bits: Option<u32>,
    /// Size in bytes of the member's type (0 when unknown or a flexible array).
    pub size: u32,
    /// The member's type.
    pub kind: ValueKind,
}
