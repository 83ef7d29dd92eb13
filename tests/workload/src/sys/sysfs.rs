//! sysfs and procfs lookups.

use super::*;

pub fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The nvdimm pfn and dax devices with their mode, alignment and bound
/// namespace: `{"pfn0.0": {"mode": "pmem", "align": 2097152, "namespace":
/// "namespace0.0"}}`. Empty where there is no nvdimm bus.
pub fn nd_devices() -> Obj {
    let mut o = Obj::new();
    let Ok(rd) = std::fs::read_dir("/sys/bus/nd/devices") else {
        return o;
    };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pfn") || n.starts_with("dax"))
        .collect();
    names.sort();
    for n in names {
        let base = Path::new("/sys/bus/nd/devices").join(&n);
        let ns = read_trim(base.join("namespace")).unwrap_or_default();
        if ns.is_empty() {
            continue; // an unconfigured seed device
        }
        let mut d = Obj::new().with("namespace", ns);
        if let Some(m) = read_trim(base.join("mode")) {
            d.set("mode", m);
        }
        if let Some(a) = read_trim(base.join("align")).and_then(|a| a.parse::<u64>().ok()) {
            d.set("align", a);
        }
        let driver = std::fs::read_link(base.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
        d.set("driver", driver);
        o.set(&n, d);
    }
    o
}

/// Alignment and size of device-dax `name` (e.g. "dax0.0") from sysfs.
pub fn devdax_geometry(name: &str) -> (Option<usize>, Option<u64>) {
    for base in ["/sys/bus/dax/devices", "/sys/class/dax"] {
        let b = Path::new(base).join(name);
        if b.exists() {
            let align = read_trim(b.join("align")).and_then(|s| s.parse().ok());
            let size = read_trim(b.join("size")).and_then(|s| s.parse().ok());
            return (align, size);
        }
    }
    (None, None)
}

/// The physical address a device-dax device starts at (its sysfs
/// `resource`, hexadecimal), when it has one range.
pub fn devdax_resource(name: &str) -> Option<u64> {
    ["/sys/bus/dax/devices", "/sys/class/dax"]
        .iter()
        .map(|base| Path::new(base).join(name).join("resource"))
        .find_map(read_trim)
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
}

/// Elapsed milliseconds as f64.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
