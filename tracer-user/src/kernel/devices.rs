//! Device memory present at start-up: persistent-memory and soft-reserved
//! (CXL, EFI specific-purpose) ranges from `/proc/iomem`, and the nvdimm
//! namespaces and dax devices carved from them, with their modes.

use std::{fs, path::Path};

use refscope_core::{model::PgmapType, trace::Device};

/// Top-level `/proc/iomem` resources whose pages can be ZONE_DEVICE memory.
const DEVICE_RESOURCES: &[&str] = &[
    "Persistent Memory",
    "Persistent Memory (legacy)",
    "Soft Reserved",
    "CXL Window",
];

/// One `/proc/iomem` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    pub name: String,
    pub depth: usize,
}

pub fn parse_iomem(text: &str) -> Vec<Resource> {
    text.lines()
        .filter_map(|line| {
            let depth = line.len() - line.trim_start().len();
            let (range, name) = line.trim_start().split_once(" : ")?;
            let (a, b) = range.split_once('-')?;
            Some(Resource {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                name: name.trim().to_owned(),
                depth: depth / 2,
            })
        })
        .collect()
}

/// What was found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// pfn ranges `[start, end)` for the in-kernel filter.
    pub filter_ranges: Vec<(u64, u64)>,
    /// Named devices (namespaces, dax devices) for the trace header.
    pub devices: Vec<Device>,
    /// `/proc/iomem` showed zero addresses (not root).
    pub addresses_hidden: bool,
}

/// Read `/proc/iomem` and the nvdimm/dax sysfs.
pub fn discover() -> std::io::Result<Discovery> {
    let text = fs::read_to_string("/proc/iomem")?;
    Ok(discover_from(&parse_iomem(&text), mode_of))
}

/// The mode of a namespace or dax device, from sysfs.
fn mode_of(name: &str) -> Option<String> {
    let nd = Path::new("/sys/bus/nd/devices").join(name).join("mode");
    if let Ok(mode) = fs::read_to_string(nd) {
        return Some(mode.trim().to_owned());
    }
    if name.starts_with("dax") && Path::new("/sys/bus/dax/devices").join(name).exists() {
        return Some("devdax".into());
    }
    None
}

pub fn discover_from(res: &[Resource], mode: impl Fn(&str) -> Option<String>) -> Discovery {
    let mut d = Discovery::default();
    let mut in_device = false;
    for r in res {
        if r.depth == 0 {
            in_device = DEVICE_RESOURCES.iter().any(|n| r.name.starts_with(n));
            if in_device {
                if r.start == 0 && r.end == 0 {
                    d.addresses_hidden = true;
                    continue;
                }
                d.filter_ranges.push((r.start >> 12, (r.end + 1) >> 12));
            }
            continue;
        }
        let named = r.name.starts_with("namespace")
            || r.name.starts_with("dax")
            || r.name.starts_with("pfn");
        if !in_device || !named || r.end == 0 {
            continue;
        }
        // A device-dax instance's resource is its data; its namespace's own
        // resource is then only the metadata reservation before it (and an
        // nd "daxX.Y" device's `mode` says where the memmap is, not the mode).
        let (mode, pgmap_type) = if r.name.starts_with("dax") {
            ("devdax".to_owned(), PgmapType::Generic)
        } else {
            let mode = mode(&r.name).unwrap_or_else(|| "unknown".into());
            match mode.as_str() {
                "fsdax" | "memory" => (mode, PgmapType::FsDax),
                // devdax: the daxX.Y entry covers the data; raw/sector: no struct pages.
                _ => continue,
            }
        };
        d.devices.push(Device {
            name: r.name.clone(),
            mode,
            pfn_start: r.start >> 12,
            pfn_end: (r.end + 1) >> 12,
            pgmap_type,
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOMEM: &str = "\
00000000-00000fff : Reserved
00100000-3fffffff : System RAM
40000000-5fffffff : Persistent Memory (legacy)
  40000000-5fffffff : namespace0.0
60000000-7fffffff : Soft Reserved
  60000000-7fffffff : dax1.0
80000000-8fffffff : Persistent Memory
  80000000-8fffffff : namespace2.0
";

    #[test]
    fn finds_ranges_and_devices() {
        let d = discover_from(&parse_iomem(IOMEM), |n| match n {
            "namespace0.0" => Some("fsdax".into()),
            "dax1.0" => Some("devdax".into()),
            "namespace2.0" => Some("raw".into()),
            _ => None,
        });
        assert_eq!(
            d.filter_ranges,
            vec![(0x40000, 0x60000), (0x60000, 0x80000), (0x80000, 0x90000)]
        );
        assert_eq!(d.devices.len(), 2, "{:?}", d.devices);
        assert_eq!(d.devices[0].name, "namespace0.0");
        assert_eq!(d.devices[0].pgmap_type, PgmapType::FsDax);
        assert_eq!(d.devices[1].pgmap_type, PgmapType::Generic);
        assert!(!d.addresses_hidden);
    }

    #[test]
    fn devdax_namespaces_are_described_by_their_dax_device() {
        // /proc/iomem of a devdax namespace (6.12 guest).
        let iomem = "40000000-5fffffff : Persistent Memory (legacy)\n  40000000-409fffff : namespace0.0\n  40a00000-5fffffff : dax0.0\n";
        let d = discover_from(&parse_iomem(iomem), |n| match n {
            "namespace0.0" => Some("dax".into()),
            "dax0.0" => Some("pmem".into()),
            _ => None,
        });
        assert_eq!(d.filter_ranges, vec![(0x40000, 0x60000)]);
        assert_eq!(d.devices.len(), 1, "{:?}", d.devices);
        assert_eq!(
            (d.devices[0].pfn_start, d.devices[0].pfn_end),
            (0x40a00, 0x60000)
        );
        assert_eq!(d.devices[0].pgmap_type, PgmapType::Generic);
    }

    #[test]
    fn hidden_addresses() {
        let d = discover_from(
            &parse_iomem("00000000-00000000 : Persistent Memory (legacy)\n"),
            |_| None,
        );
        assert!(d.addresses_hidden);
        assert!(d.filter_ranges.is_empty());
    }
}
