//! `/proc/kallsyms`: which functions exist (and whether only as
//! `.isra`/`.constprop` clones), where `vmemmap_base` lives, and
//! address-to-symbol lookup for stacks.

use std::collections::HashMap;

/// A parsed symbol table.
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// Exact name -> (address, type letter), text and data symbols.
    by_name: HashMap<String, (u64, u8)>,
    /// Text symbols sorted by address, for symbolisation.
    text: Vec<(u64, u32)>,
    names: Vec<String>,
    /// Whether addresses are real (false when kptr_restrict hides them).
    addresses_visible: bool,
}

impl Kallsyms {
    /// Parse the text of `/proc/kallsyms`.
    pub fn parse(text: &str) -> Self {
        let mut k = Kallsyms::default();
        let mut nonzero = false;
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let module = it.next();
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let ty = ty.as_bytes().first().copied().unwrap_or(b'?');
            nonzero |= addr != 0;
            // Module symbols ("[ext4]", and "[bpf]" for BPF programs and
            // trampolines) only name stack frames; refscope hooks vmlinux.
            if let Some(module) = module {
                if matches!(ty, b'T' | b't') {
                    let idx = k.names.len() as u32;
                    k.names.push(format!("{name} {module}"));
                    k.text.push((addr, idx));
                }
                continue;
            }
            match ty {
                b'T' | b't' => {
                    let idx = k.names.len() as u32;
                    k.names.push(name.to_owned());
                    k.text.push((addr, idx));
                    k.by_name.entry(name.to_owned()).or_insert((addr, ty));
                }
                b'D' | b'd' | b'B' | b'b' | b'R' | b'r' => {
                    k.by_name.entry(name.to_owned()).or_insert((addr, ty));
                }
                _ => {}
            }
        }
        k.text.sort_unstable();
        k.addresses_visible = nonzero;
        k
    }

    /// Read `/proc/kallsyms`.
    pub fn from_proc() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// Whether a text symbol with exactly this name exists (not just a
    /// compiler clone such as `name.isra.0`).
    pub fn has_function(&self, name: &str) -> bool {
        matches!(self.by_name.get(name), Some((_, b'T' | b't')))
    }

    /// Clones of `name` (`name.isra.0`, `name.constprop.0`, ...).
    pub fn clones_of(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}.");
        self.by_name
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .map(String::as_str)
            .collect()
    }

    /// Address of a symbol (0 when addresses are hidden).
    pub fn address(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|&(a, _)| a)
    }

    /// False when `kptr_restrict` (or missing privileges) zeroes addresses.
    pub fn addresses_visible(&self) -> bool {
        self.addresses_visible
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// `function+0xoff` for a kernel text address (`function+0xoff [module]`
    /// in a module), `None` when unknown or in BPF code (our own frames).
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        /// No function is this large: past it, the address is not in the
        /// symbol before it (e.g. JIT or trampoline memory).
        const MAX_FUNCTION: u64 = 1 << 20;
        let i = self.text.partition_point(|&(a, _)| a <= addr);
        let &(start, idx) = self.text.get(i.checked_sub(1)?)?;
        if addr - start > MAX_FUNCTION {
            return None;
        }
        let name = self.names.get(idx as usize)?;
        if name.ends_with("[bpf]") {
            return None;
        }
        Some(match name.split_once(' ') {
            Some((f, module)) => format!("{f}+{:#x} {module}", addr - start),
            None => format!("{name}+{:#x}", addr - start),
        })
    }

    /// Whether `addr` is in a BPF program or trampoline.
    pub fn is_bpf(&self, addr: u64) -> bool {
        let i = self.text.partition_point(|&(a, _)| a <= addr);
        i.checked_sub(1)
            .and_then(|j| self.text.get(j))
            .and_then(|&(_, idx)| self.names.get(idx as usize))
            .is_some_and(|n| n.ends_with("[bpf]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff8102a340 t insert_pfn
ffffffff8102a500 T vmf_insert_mixed
ffffffff8102b000 t insert_page_into_pte_locked.isra.0
ffffffff82415730 D vmemmap_base
ffffffffc0a00000 t ext4_dax_fault\t[ext4]
ffffffffc0b00000 t bpf_prog_6deef7357e7b4530_insert_pfn_fexit\t[bpf]
";

    #[test]
    fn functions_clones_and_data() {
        let k = Kallsyms::parse(SAMPLE);
        assert!(k.has_function("insert_pfn"));
        assert!(k.has_function("vmf_insert_mixed"));
        assert!(!k.has_function("insert_page_into_pte_locked"));
        assert_eq!(
            k.clones_of("insert_page_into_pte_locked"),
            ["insert_page_into_pte_locked.isra.0"]
        );
        assert!(!k.has_function("vmemmap_base"), "data is not a function");
        assert_eq!(k.address("vmemmap_base"), Some(0xffffffff82415730));
        assert!(
            !k.has_function("ext4_dax_fault"),
            "module symbols are skipped"
        );
        assert!(k.addresses_visible());
    }

    #[test]
    fn symbolize_finds_the_enclosing_function() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(
            k.symbolize(0xffffffff8102a345).as_deref(),
            Some("insert_pfn+0x5")
        );
        assert_eq!(
            k.symbolize(0xffffffff8102a500).as_deref(),
            Some("vmf_insert_mixed+0x0")
        );
        assert_eq!(
            k.symbolize(0xffffffffc0a00010).as_deref(),
            Some("ext4_dax_fault+0x10 [ext4]")
        );
        assert_eq!(k.symbolize(0xffffffffc0b00010), None, "our own BPF frames");
        assert!(k.is_bpf(0xffffffffc0b00010));
        assert_eq!(
            k.symbolize(0xffffffff9f000000),
            None,
            "far past the last symbol"
        );
        assert_eq!(k.symbolize(0x1000), None);
    }

    #[test]
    fn hidden_addresses_are_detected() {
        let k = Kallsyms::parse("0000000000000000 T insert_pfn\n0000000000000000 D vmemmap_base\n");
        assert!(!k.addresses_visible());
        assert!(k.has_function("insert_pfn"));
    }
}
