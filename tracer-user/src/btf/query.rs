//! What refscope asks of a parsed BTF: sizes, struct layouts (members
//! through anonymous structs and dotted paths), function signatures and
//! enumerator values.

use super::*;

impl Btf {
    /// Size in bytes of type `id`, `None` for void, functions and cycles.
    pub(super) fn size_of(&self, id: u32) -> Option<u32> {
        let mut count = 1u64;
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            let t = self.raw(cur);
            match t.kind() {
                KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION | KIND_FLOAT
                | KIND_DATASEC => return u32::try_from(count * u64::from(t.size_or_type)).ok(),
                KIND_PTR => return u32::try_from(count * u64::from(POINTER_SIZE)).ok(),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    cur = t.size_or_type;
                }
                KIND_ARRAY => {
                    count = count.checked_mul(u64::from(t.extra[2]))?;
                    cur = t.extra[0];
                }
                _ => return None,
            }
        }
        None
    }

    /// Coarse description of type `id`.
    pub(super) fn value_kind(&self, id: u32) -> ValueKind {
        let Ok(id) = self.skip_modifiers(id) else {
            return ValueKind::Other;
        };
        let t = self.raw(id);
        match t.kind() {
            0 => ValueKind::Void,
            KIND_INT => {
                let encoding = t.extra[0] >> 24;
                if encoding & INT_BOOL != 0 {
                    ValueKind::Bool
                } else {
                    ValueKind::Int {
                        size: t.size_or_type,
                        signed: encoding & INT_SIGNED != 0,
                    }
                }
            }
            KIND_FLOAT => ValueKind::Float {
                size: t.size_or_type,
            },
            KIND_ENUM | KIND_ENUM64 => ValueKind::Enum {
                name: self.name_string(t.name_off),
                size: t.size_or_type,
                signed: t.kflag(),
            },
            KIND_STRUCT => ValueKind::Struct {
                name: self.name_string(t.name_off),
                size: t.size_or_type,
            },
            KIND_UNION => ValueKind::Union {
                name: self.name_string(t.name_off),
                size: t.size_or_type,
            },
            KIND_PTR => ValueKind::Ptr(self.pointee(t.size_or_type)),
            KIND_ARRAY => ValueKind::Array {
                len: t.extra[2],
                elem_size: self.size_of(t.extra[0]).unwrap_or(0),
            },
            _ => ValueKind::Other,
        }
    }

    pub(super) fn pointee(&self, id: u32) -> Pointee {
        let Ok(id) = self.skip_modifiers(id) else {
            return Pointee::Other;
        };
        let t = self.raw(id);
        match t.kind() {
            0 => Pointee::Void,
            KIND_STRUCT => Pointee::Struct(self.name_string(t.name_off)),
            KIND_UNION => Pointee::Union(self.name_string(t.name_off)),
            KIND_FWD if t.kflag() => Pointee::Union(self.name_string(t.name_off)),
            KIND_FWD => Pointee::Struct(self.name_string(t.name_off)),
            KIND_ENUM | KIND_ENUM64 => Pointee::Enum(self.name_string(t.name_off)),
            KIND_PTR => Pointee::Ptr,
            KIND_FUNC_PROTO => Pointee::Func,
            KIND_INT | KIND_FLOAT => match self.value_kind(id) {
                ValueKind::Bool => Pointee::Bool,
                ValueKind::Int { size, signed } => Pointee::Int { size, signed },
                ValueKind::Float { size } => Pointee::Float { size },
                _ => Pointee::Other,
            },
            _ => Pointee::Other,
        }
    }

    /// BTF type id of the first struct or union named `name` (e.g. for the
    /// `bpf_rdonly_cast` kfunc).
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.find_type(name, |k| k == KIND_STRUCT || k == KIND_UNION)
    }

    /// `sizeof(struct name)` (or of the union `name`).
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.struct_id(name).map(|id| self.raw(id).size_or_type)
    }

    /// Size of any named type: struct, union, enum, typedef (`pfn_t`),
    /// base integer (`long unsigned int`) or float.
    pub fn type_size(&self, name: &str) -> Option<u32> {
        let id = self.find_type(name, |k| {
            matches!(
                k,
                KIND_STRUCT
                    | KIND_UNION
                    | KIND_ENUM
                    | KIND_ENUM64
                    | KIND_TYPEDEF
                    | KIND_INT
                    | KIND_FLOAT
            )
        })?;
        self.size_of(id)
    }

    /// Finds member `name` of composite `id`, looking through anonymous
    /// struct/union members at any depth. Returns its bit offset relative to
    /// `id`, its bitfield width (0 if none) and its type.
    pub(super) fn find_member(
        &self,
        id: u32,
        name: &[u8],
        depth: u32,
    ) -> Result<Option<(u64, u32, u32)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TypeChainTooDeep { id });
        }
        let t = self.raw(id);
        for (name_off, ty, offset) in t.members() {
            let (bit_offset, bits) = if t.kflag() {
                (u64::from(offset & 0x00ff_ffff), offset >> 24)
            } else {
                (u64::from(offset), 0)
            };
            let member_name = self.str_bytes(name_off);
            if member_name == name {
                return Ok(Some((bit_offset, bits, ty)));
            }
            if member_name.is_empty() {
                let inner = self.skip_modifiers(ty)?;
                if self.raw(inner).is_composite()
                    && let Some((off, bits, ty)) = self.find_member(inner, name, depth + 1)?
                {
                    return Ok(Some((bit_offset + off, bits, ty)));
                }
            }
        }
        Ok(None)
    }

    /// Looks up a member of struct or union `struct_name` by `path`: a
    /// member name (`"_refcount"`), found even inside anonymous structs and
    /// unions nested at any depth, or a dotted path through named members
    /// (`"range.start"`). Typedefs and `const`/`volatile` on the way are
    /// looked through. Bitfields are reported, not rejected.
    pub fn member(&self, struct_name: &str, path: &str) -> Result<MemberInfo, BtfError> {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(BtfError::InvalidPath(path.to_owned()));
        }
        let root = self
            .struct_id(struct_name)
            .ok_or_else(|| BtfError::NoStruct(struct_name.to_owned()))?;
        let keyword = if self.raw(root).kind() == KIND_UNION {
            "union"
        } else {
            "struct"
        };
        let container = || format!("{keyword} {struct_name}");

        let mut current = root;
        let mut bit_offset = 0u64;
        let mut bits = 0;
        let mut ty = root;
        let mut walked = 0usize;
        for (i, component) in path.split('.').enumerate() {
            let prefix = &path[..walked.saturating_sub(1)];
            if i > 0 {
                current = self.skip_modifiers(ty)?;
                if !self.raw(current).is_composite() {
                    return Err(BtfError::NotComposite {
                        container: container(),
                        path: prefix.to_owned(),
                        found: self.value_kind(ty).to_string(),
                    });
                }
            }
            walked += component.len() + 1;
            let (off, b, t) = self
                .find_member(current, component.as_bytes(), 0)?
                .ok_or_else(|| BtfError::NoMember {
                    container: container(),
                    path: path[..walked - 1].to_owned(),
                })?;
            bit_offset += off;
            bits = b;
            ty = t;
        }

        // Without the kind flag, a bitfield is an INT whose bit count is
        // smaller than its size (or that has a bit offset of its own).
        if bits == 0
            && let Ok(int) = self.skip_modifiers(ty)
            && let t = self.raw(int)
            && t.kind() == KIND_INT
        {
            let (int_offset, int_bits) = ((t.extra[0] >> 16) & 0xff, t.extra[0] & 0xff);
            if int_offset != 0 || int_bits != t.size_or_type * 8 {
                bit_offset += u64::from(int_offset);
                bits = int_bits;
            }
        }
        Ok(MemberInfo {
            offset: u32::try_from(bit_offset / 8).unwrap_or(u32::MAX),
            bit_offset,
            bitfield_bits: (bits != 0).then_some(bits),
            size: self.size_of(ty).unwrap_or(0),
            kind: self.value_kind(ty),
        })
    }

    /// Byte offset of member `path` in struct or union `struct_name`; see
    /// [`Btf::member`] for the path syntax. A bitfield is an error unless it
    /// starts on a byte boundary.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let member = self.member(struct_name, path)?;
        if member.bit_offset % 8 != 0 {
            let keyword =
                if self.struct_id(struct_name).map(|id| self.raw(id).kind()) == Some(KIND_UNION) {
                    "union"
                } else {
                    "struct"
                };
            return Err(BtfError::Bitfield {
                container: format!("{keyword} {struct_name}"),
                path: path.to_owned(),
                bit_offset: member.bit_offset,
            });
        }
        Ok(member.offset)
    }

    /// Whether struct or union `struct_name` has member `path` (same syntax
    /// as [`Btf::member`]; bitfields count).
    pub fn has_member(&self, struct_name: &str, path: &str) -> bool {
        self.member(struct_name, path).is_ok()
    }

    /// The first FUNC record named `name` with its prototype, or `None` if
    /// the kernel has no BTF for such a function (not built, inlined, or
    /// dropped by pahole for inconsistent prototypes).
    pub fn func(&self, name: &str) -> Option<FuncInfo> {
        let id = self.find_type(name, |k| k == KIND_FUNC)?;
        let func = self.raw(id);
        let proto = self.raw(func.size_or_type);
        let mut params: Vec<Param> = proto
            .params()
            .map(|(name_off, ty)| Param {
                name: self.name_string(name_off),
                kind: self.value_kind(ty),
            })
            .collect();
        // A trailing parameter of type void with no name stands for `...`.
        let variadic = proto.params().last().is_some_and(|(_, ty)| ty == 0);
        if variadic {
            params.pop();
        }
        Some(FuncInfo {
            name: name.to_owned(),
            type_id: id,
            linkage: Linkage::from_vlen(func.vlen()),
            ret: self.value_kind(proto.size_or_type),
            params,
            variadic,
        })
    }

    /// Like [`Btf::func`], then checks the signature with
    /// [`FuncInfo::check_signature`]; a missing function is
    /// [`BtfError::NoFunc`].
    pub fn check_func(
        &self,
        name: &str,
        ret: &ValueKind,
        params: &[ValueKind],
    ) -> Result<FuncInfo, BtfError> {
        let func = self
            .func(name)
            .ok_or_else(|| BtfError::NoFunc(name.to_owned()))?;
        func.check_signature(ret, params)?;
        Ok(func)
    }

    /// Value of the enumerator `name` in any enum (named or anonymous), e.g.
    /// `FOLL_PIN`. If several enums define it, the one with the lowest type
    /// id wins. Unsigned 64-bit values above `i64::MAX` wrap to negative.
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        let (id, index) = *self.find_enumerators(name).first()?;
        self.raw(id)
            .enumerators()
            .nth(index as usize)
            .map(|(_, value)| value)
    }

    /// Value of enumerator `name` in `enum enum_name`.
    pub fn enum_value_in(&self, enum_name: &str, name: &str) -> Option<i64> {
        self.find_types(enum_name, |k| k == KIND_ENUM || k == KIND_ENUM64)
            .into_iter()
            .find_map(|id| {
                self.raw(id)
                    .enumerators()
                    .find(|&(name_off, _)| self.str_bytes(name_off) == name.as_bytes())
                    .map(|(_, value)| value)
            })
    }
}
