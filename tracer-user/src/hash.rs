//! Kernel addresses in traces: hashed with a per-trace secret salt by
//! default, so a trace shared for analysis does not leak the KASLR layout;
//! raw only when asked for (the trace header says which).

use std::hash::{BuildHasher, RandomState};

/// Maps kernel addresses to the ids written in traces.
pub struct AddrMapper {
    raw: bool,
    /// SipHash keyed with 128 random bits; the key is never written out.
    key: RandomState,
}

impl AddrMapper {
    pub fn new(raw: bool) -> Self {
        AddrMapper {
            raw,
            key: RandomState::new(),
        }
    }

    /// `"hashed"` or `"raw"`, for the trace header.
    pub fn mode(&self) -> &'static str {
        if self.raw { "raw" } else { "hashed" }
    }

    /// The id of a kernel address (0 stays 0: "none").
    pub fn id(&self, addr: u64) -> u64 {
        if self.raw || addr == 0 {
            addr
        } else {
            // Never 0, so "none" stays distinguishable.
            self.key.hash_one(addr) | 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_is_stable_within_a_trace_and_hides_addresses() {
        let m = AddrMapper::new(false);
        let a = 0xffff_8880_1234_5600;
        assert_eq!(m.id(a), m.id(a));
        assert_ne!(m.id(a), a);
        assert_ne!(m.id(a), m.id(a + 64));
        assert_eq!(m.id(0), 0);
        assert_ne!(
            AddrMapper::new(false).id(a),
            m.id(a),
            "salt differs per trace"
        );
        let raw = AddrMapper::new(true);
        assert_eq!(raw.id(a), a);
        assert_eq!((m.mode(), raw.mode()), ("hashed", "raw"));
    }
}
