//! Kernel module metadata and load order.
//!
//! `depmod` (run on the host, see `kernels.rs`) writes `modules.dep`,
//! `modules.softdep` and `modules.alias`; the kernel package ships
//! `modules.builtin`. From those this module answers: which files, in which
//! order, must the guest `insmod` so that a wanted set of modules is loaded.
//! The guest has no real `modprobe` (busybox's cannot read `.ko.xz` and
//! ignores soft dependencies), so the order is computed here.

use std::collections::{BTreeMap, BTreeSet};

/// A module's canonical name from its path or name: the file name without
/// `.ko[.xz|.zst|.gz]`, with `-` turned into `_` (as the kernel does).
pub fn module_name(path_or_name: &str) -> String {
    let file = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = match file.find(".ko") {
        Some(i) => &file[..i],
        None => file,
    };
    stem.replace('-', "_")
}

/// The path of an uncompressed copy: `x.ko.xz` -> `x.ko`.
pub fn uncompressed_path(path: &str) -> &str {
    match path.find(".ko") {
        Some(i) => &path[..i + 3],
        None => path,
    }
}

/// What depmod knows about one kernel's modules.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Module name -> path relative to `lib/modules/<release>`.
    paths: BTreeMap<String, String>,
    /// Module name -> names of the modules it needs (hard dependencies).
    deps: BTreeMap<String, Vec<String>>,
    /// Module name -> `pre:` soft dependencies (module names or aliases).
    pre: BTreeMap<String, Vec<String>>,
    /// Exact (wildcard-free) alias -> module names.
    aliases: BTreeMap<String, Vec<String>>,
    /// Names of modules built into the kernel image.
    builtin: BTreeSet<String>,
}

/// The outcome of [`ModuleIndex::load_order`].
#[derive(Debug, PartialEq, Eq)]
pub struct LoadOrder {
    /// Module names, dependencies first.
    pub order: Vec<String>,
    /// Wanted modules that are neither loadable nor built in.
    pub missing: Vec<String>,
}

impl ModuleIndex {
    /// Parse depmod's text files. Any of them may be empty.
    pub fn parse(dep: &str, softdep: &str, alias: &str, builtin: &str) -> Self {
        let mut index = Self::default();
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let name = module_name(path);
            let deps = rest.split_whitespace().map(module_name).collect();
            index.paths.insert(name.clone(), path.to_owned());
            index.deps.insert(name, deps);
        }
        // "softdep ext4 pre: crypto-crc32c post: foo"
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            let mut in_pre = false;
            let mut pre = Vec::new();
            for word in words {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    w if in_pre => pre.push(w.to_owned()),
                    _ => {}
                }
            }
            if !pre.is_empty() {
                index.pre.entry(module_name(name)).or_default().extend(pre);
            }
        }
        // "alias crypto-crc32c crc32c_generic"; skip device-match wildcards.
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("alias") {
                continue;
            }
            let (Some(alias), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            if alias.contains(['*', '?', '[']) {
                continue;
            }
            index
                .aliases
                .entry(alias.to_owned())
                .or_default()
                .push(module_name(module));
        }
        index.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        index
    }

    /// The file of a loadable module, relative to `lib/modules/<release>`.
    pub fn path(&self, name: &str) -> Option<&str> {
        self.paths.get(&module_name(name)).map(String::as_str)
    }

    /// The loadable module that provides `name` (a module name or an alias),
    /// preferring the portable `*_generic` implementation when an alias has
    /// several (e.g. `crc32c_generic` over `crc32c_intel`).
    fn provider(&self, name: &str) -> Option<String> {
        let canonical = module_name(name);
        if self.paths.contains_key(&canonical) {
            return Some(canonical);
        }
        let candidates: Vec<&String> = self
            .aliases
            .get(name)
            .into_iter()
            .flatten()
            .filter(|m| self.paths.contains_key(*m))
            .collect();
        candidates
            .iter()
            .find(|m| m.ends_with("_generic"))
            .or_else(|| candidates.first())
            .map(|m| (*m).clone())
    }

    /// Modules to load, in order, so that every module in `wanted` is
    /// present. Soft `pre:` dependencies are honoured when they resolve to a
    /// loadable module (they are optional by definition); built-in modules
    /// are skipped; `wanted` order is kept where dependencies allow.
    pub fn load_order(&self, wanted: &[&str]) -> LoadOrder {
        let mut out = LoadOrder {
            order: Vec::new(),
            missing: Vec::new(),
        };
        let mut seen = BTreeSet::new();
        for want in wanted {
            let name = module_name(want);
            if self.paths.contains_key(&name) {
                self.visit(&name, &mut seen, &mut out.order);
            } else if !self.builtin.contains(&name) {
                out.missing.push(name);
            }
        }
        out
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        for soft in self.pre.get(name).into_iter().flatten() {
            if let Some(provider) = self.provider(soft) {
                self.visit(&provider, seen, order);
            }
        }
        for dep in self.deps.get(name).into_iter().flatten() {
            if self.paths.contains_key(dep) {
                self.visit(dep, seen, order);
            }
        }
        order.push(name.to_owned());
    }

    /// A `modules.dep` for a subset of modules, with uncompressed paths
    /// (what the guest's copy looks like), for busybox `modprobe`.
    pub fn subset_dep(&self, names: &BTreeSet<String>) -> String {
        let mut text = String::new();
        for name in names {
            let Some(path) = self.paths.get(name) else {
                continue;
            };
            text.push_str(uncompressed_path(path));
            text.push(':');
            for dep in self.deps.get(name).into_iter().flatten() {
                if let Some(dep_path) = self.paths.get(dep) {
                    text.push(' ');
                    text.push_str(uncompressed_path(dep_path));
                }
            }
            text.push('\n');
        }
        text
    }

    /// The same index restricted to `names` (paths made uncompressed), with
    /// soft dependencies, aliases and built-ins kept: what the kernel cache
    /// stores after extraction.
    pub fn restricted(&self, names: &BTreeSet<String>) -> Self {
        let mut index = self.clone();
        index.paths.retain(|n, _| names.contains(n));
        index.deps.retain(|n, _| names.contains(n));
        for path in index.paths.values_mut() {
            *path = uncompressed_path(path).to_owned();
        }
        index
    }

    /// `modules.softdep`, `modules.alias` and `modules.builtin` text for the
    /// restricted aliases and soft dependencies (so a cached index can be
    /// parsed back).
    pub fn to_files(&self) -> [String; 4] {
        let names: BTreeSet<String> = self.paths.keys().cloned().collect();
        let dep = self.subset_dep(&names);
        let mut softdep = String::new();
        for (name, pre) in &self.pre {
            softdep.push_str(&format!("softdep {name} pre: {}\n", pre.join(" ")));
        }
        let mut alias = String::new();
        for (a, modules) in &self.aliases {
            for m in modules.iter().filter(|m| self.paths.contains_key(*m)) {
                alias.push_str(&format!("alias {a} {m}\n"));
            }
        }
        let builtin = self
            .builtin
            .iter()
            .map(|n| format!("{n}.ko\n"))
            .collect::<String>();
        [dep, softdep, alias, builtin]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/drivers/nvdimm/nd_pmem.ko.xz: kernel/drivers/nvdimm/nd_btt.ko.xz kernel/drivers/nvdimm/libnvdimm.ko.xz
kernel/drivers/nvdimm/nd_btt.ko.xz: kernel/drivers/nvdimm/libnvdimm.ko.xz
kernel/drivers/nvdimm/libnvdimm.ko.xz:
kernel/drivers/nvdimm/nd_e820.ko.xz: kernel/drivers/nvdimm/libnvdimm.ko.xz
";
    const SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep dax_hmem pre: cxl_acpi post: foo
";
    const ALIAS: &str = "\
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias pci:v00001AF4d00001004sv*sd*bc*sc*i* virtio_scsi
";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio_console.ko\nkernel/drivers/dax/dax.ko\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(DEP, SOFTDEP, ALIAS, BUILTIN)
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.xz"), "ext4");
        assert_eq!(module_name("kernel/x/crc32c-intel.ko"), "crc32c_intel");
        assert_eq!(module_name("9pnet_virtio"), "9pnet_virtio");
        assert_eq!(uncompressed_path("a/b.ko.zst"), "a/b.ko");
        assert_eq!(uncompressed_path("a/b.ko"), "a/b.ko");
    }

    #[test]
    fn dependencies_come_first_and_softdeps_prefer_generic() {
        let order = index().load_order(&["ext4", "nd_pmem", "nd_e820"]);
        assert_eq!(
            order.order,
            [
                "crc32c_generic",
                "crc16",
                "mbcache",
                "jbd2",
                "ext4",
                "libnvdimm",
                "nd_btt",
                "nd_pmem",
                "nd_e820"
            ]
        );
        assert!(order.missing.is_empty());
    }

    #[test]
    fn builtin_is_skipped_and_unknown_is_missing() {
        let order = index().load_order(&["virtio_console", "xfs", "nd_e820"]);
        assert_eq!(order.order, ["libnvdimm", "nd_e820"]);
        assert_eq!(order.missing, ["xfs"]);
    }

    #[test]
    fn wildcard_aliases_are_ignored() {
        assert!(!index().aliases.keys().any(|a| a.contains('*')));
    }

    #[test]
    fn restricted_index_round_trips() {
        let full = index();
        let keep: BTreeSet<String> = full.load_order(&["ext4"]).order.into_iter().collect();
        let small = full.restricted(&keep);
        let [dep, softdep, alias, builtin] = small.to_files();
        assert!(dep.contains("kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko"));
        assert!(!dep.contains("nd_pmem"));
        let back = ModuleIndex::parse(&dep, &softdep, &alias, &builtin);
        assert_eq!(back.load_order(&["ext4"]), small.load_order(&["ext4"]));
        assert_eq!(back.path("ext4"), Some("kernel/fs/ext4/ext4.ko"));
        assert!(back.builtin.contains("virtio_console"));
    }
}
