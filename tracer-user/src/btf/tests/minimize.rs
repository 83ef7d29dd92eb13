//! Shrinks a full vmlinux BTF to the types refscope asks about, so that the
//! tests can run against real kernels' layouts without the ~5 MB blobs.
//!
//! Kept: the root structs and everything they contain by value (anonymous
//! structs and unions, embedded structs, typedefs, arrays, enums), the root
//! functions with their prototypes and by-value parameter types, the root
//! enums. A pointer to a root struct keeps pointing to its full definition;
//! a pointer to any other named struct or union points to a forward
//! declaration of it instead, which is all a pointer's [`Pointee`] needs and
//! stops the walk from pulling in the whole kernel.
//!
//! [`Pointee`]: super::super::Pointee

use std::collections::{HashMap, HashSet, VecDeque};

use super::super::Btf;
use super::super::raw::{
    KIND_ARRAY, KIND_CONST, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_FUNC, KIND_FUNC_PROTO,
    KIND_FWD, KIND_INT, KIND_PTR, KIND_RESTRICT, KIND_STRUCT, KIND_TYPE_TAG, KIND_TYPEDEF,
    KIND_UNION, KIND_VOLATILE,
};
use super::builder::Builder;

/// What refscope needs from a kernel's BTF.
pub struct Roots<'a> {
    /// Structs (or unions) kept whole.
    pub structs: &'a [&'a str],
    /// Functions kept with their prototypes.
    pub funcs: &'a [&'a str],
    /// Named enums kept.
    pub enums: &'a [&'a str],
    /// Enumerators whose (possibly anonymous) enums are kept.
    pub enumerators: &'a [&'a str],
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Ctx {
    /// The type is stored by value: keep composites whole.
    Value,
    /// The type is only pointed to: non-root named composites become FWDs.
    Pointer,
}

struct Minimizer<'a> {
    btf: &'a Btf,
    root_names: HashSet<&'a [u8]>,
    ids: HashMap<(u32, Ctx), u32>,
    queue: VecDeque<(u32, Ctx)>,
    next_id: u32,
}

impl<'a> Minimizer<'a> {
    fn normalize(&self, old: u32, ctx: Ctx) -> Ctx {
        let t = self.btf.raw(old);
        match t.kind() {
            KIND_STRUCT | KIND_UNION => {
                let name = self.btf.str_bytes(t.name_off);
                if ctx == Ctx::Pointer && !name.is_empty() && !self.root_names.contains(name) {
                    Ctx::Pointer
                } else {
                    Ctx::Value
                }
            }
            KIND_PTR | KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT
            | KIND_TYPE_TAG | KIND_ARRAY => ctx,
            _ => Ctx::Value,
        }
    }

    /// New id of `(old, ctx)`, scheduling it for output on first sight.
    fn map(&mut self, old: u32, ctx: Ctx) -> u32 {
        if old == 0 {
            return 0;
        }
        let key = (old, self.normalize(old, ctx));
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.ids.insert(key, id);
        self.queue.push_back(key);
        id
    }

    fn name(&self, off: u32) -> String {
        String::from_utf8(self.btf.str_bytes(off).to_vec()).expect("utf-8 name")
    }

    /// Writes the record of `(old, ctx)`; ids are assigned in queue order
    /// and records written in the same order, so they line up.
    fn emit(&mut self, out: &mut Builder, (old, ctx): (u32, Ctx)) {
        let t = self.btf.raw(old);
        let name = self.name(t.name_off);
        let kind = t.kind();
        let id = match kind {
            KIND_STRUCT | KIND_UNION if ctx == Ctx::Pointer => {
                out.record(KIND_FWD, &name, 0, kind == KIND_UNION, 0, &[])
            }
            KIND_STRUCT | KIND_UNION => {
                let raw_members: Vec<(u32, u32, u32)> = t.members().collect();
                let mut members = Vec::new();
                for (name_off, ty, offset) in raw_members {
                    members.push((self.name(name_off), self.map(ty, Ctx::Value), offset));
                }
                let members: Vec<(&str, u32, u32)> = members
                    .iter()
                    .map(|(n, t, o)| (n.as_str(), *t, *o))
                    .collect();
                out.composite(kind, &name, t.size_or_type, t.kflag(), &members)
            }
            KIND_PTR => {
                let target = self.map(t.size_or_type, Ctx::Pointer);
                out.ptr(target)
            }
            KIND_TYPEDEF | KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                let target = self.map(t.size_or_type, ctx);
                out.record(kind, &name, 0, t.kflag(), target, &[])
            }
            KIND_ARRAY => {
                let elem = self.map(t.extra[0], ctx);
                let index = self.map(t.extra[1], Ctx::Value);
                out.array(elem, index, t.extra[2])
            }
            KIND_INT | KIND_FLOAT | KIND_FWD => {
                out.record(kind, &name, t.vlen(), t.kflag(), t.size_or_type, t.extra)
            }
            KIND_ENUM | KIND_ENUM64 => {
                let values: Vec<(String, i64)> = t
                    .enumerators()
                    .map(|(off, value)| (self.name(off), value))
                    .collect();
                let values: Vec<(&str, i64)> =
                    values.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                if kind == KIND_ENUM {
                    out.enum_(&name, t.size_or_type, t.kflag(), &values)
                } else {
                    out.enum64(&name, t.size_or_type, t.kflag(), &values)
                }
            }
            KIND_FUNC_PROTO => {
                let ret = self.map(t.size_or_type, Ctx::Value);
                let params: Vec<(String, u32)> = t
                    .params()
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|(off, ty)| (self.name(off), self.map(ty, Ctx::Value)))
                    .collect();
                let params: Vec<(&str, u32)> =
                    params.iter().map(|(n, t)| (n.as_str(), *t)).collect();
                out.func_proto(ret, &params)
            }
            KIND_FUNC => {
                let proto = self.map(t.size_or_type, Ctx::Value);
                out.func(&name, proto, t.vlen())
            }
            other => panic!("minimizer reached unexpected kind {other} at [{old}]"),
        };
        assert_eq!(id, self.ids[&(old, ctx)], "minimizer ids out of step");
    }
}

/// A new base BTF blob holding only what `roots` needs from `btf`.
///
/// Roots missing from `btf` are skipped: structs, functions and enums all
/// differ between kernels (e.g. `pagetable_move_control` is 7.x only).
pub fn minimize(btf: &Btf, roots: &Roots<'_>) -> Vec<u8> {
    let mut m = Minimizer {
        btf,
        root_names: roots.structs.iter().map(|s| s.as_bytes()).collect(),
        ids: HashMap::new(),
        queue: VecDeque::new(),
        next_id: 1,
    };
    for name in roots.structs {
        if let Some(id) = btf.struct_id(name) {
            m.map(id, Ctx::Value);
        }
    }
    for name in roots.enums {
        for id in btf.find_types(name, |k| k == KIND_ENUM || k == KIND_ENUM64) {
            m.map(id, Ctx::Value);
        }
    }
    for name in roots.enumerators {
        for (id, _) in btf.find_enumerators(name) {
            m.map(id, Ctx::Value);
        }
    }
    for name in roots.funcs {
        if let Some(id) = btf.find_type(name, |k| k == KIND_FUNC) {
            m.map(id, Ctx::Value);
        }
    }
    let mut out = Builder::new();
    while let Some(node) = m.queue.pop_front() {
        m.emit(&mut out, node);
    }
    out.build()
}
