//! The mount table and block devices.

use super::*;

/// One line of /proc/self/mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: String,
    pub dev: (u32, u32),
    pub fstype: String,
    pub source: String,
    pub options: String,
    pub super_options: String,
}

/// Parse mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        let Some((ma, mi)) = l[2].split_once(':') else {
            continue;
        };
        let (Ok(ma), Ok(mi)) = (ma.parse(), mi.parse()) else {
            continue;
        };
        out.push(MountInfo {
            mount_point: unescape_mount(l[4]),
            dev: (ma, mi),
            fstype: r[0].to_owned(),
            source: unescape_mount(r[1]),
            options: l[5].to_owned(),
            super_options: r[2].to_owned(),
        });
    }
    out
}

fn unescape_mount(s: &str) -> String {
    // \040 (space), \011 (tab), \012, \134 (backslash).
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path`: the last mountinfo line with that device
/// whose mount point is a prefix of the canonical path.
pub fn mount_of(path: &Path) -> Option<MountInfo> {
    let canon = std::fs::canonicalize(path).ok()?;
    let c = canon.to_string_lossy().into_owned();
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts = parse_mountinfo(&text);
    pick_mount(&mounts, &c)
}

/// The longest (latest on ties) mount point that contains `path`.
pub fn pick_mount(mounts: &[MountInfo], path: &str) -> Option<MountInfo> {
    let mut best: Option<&MountInfo> = None;
    for m in mounts {
        let mp = m.mount_point.as_str();
        let inside = path == mp
            || mp == "/"
            || (path.starts_with(mp) && path.as_bytes().get(mp.len()) == Some(&b'/'));
        if inside && best.is_none_or(|b| mp.len() >= b.mount_point.len()) {
            best = Some(m);
        }
    }
    best.cloned()
}

/// The device node of block device `maj:min`: the mount source when it is
/// that block device, else /dev/<DEVNAME from sysfs uevent>.
pub fn block_dev_path(dev: (u32, u32), hint: Option<&str>) -> Option<PathBuf> {
    let is_it = |p: &Path| {
        std::fs::metadata(p).ok().is_some_and(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.file_type().is_block_device() && {
                let rdev = m.rdev();
                (libc::major(rdev), libc::minor(rdev)) == dev
            }
        })
    };
    if let Some(h) = hint {
        let p = Path::new(h);
        if is_it(p) {
            return Some(p.to_owned());
        }
    }
    let uevent =
        std::fs::read_to_string(format!("/sys/dev/block/{}:{}/uevent", dev.0, dev.1)).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let p = Path::new("/dev").join(name);
    is_it(&p).then_some(p)
}
