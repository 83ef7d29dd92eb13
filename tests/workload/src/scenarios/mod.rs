//! The scenarios, one module per family, and what they share: touch mode,
//! file options, and the "backing" (a file on the DAX mount or a device-dax
//! character device).

pub mod bench;
pub mod devdax;
pub mod gup;
pub mod layout;
pub mod touch;
pub mod unplug;

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd as _, unix::fs::FileTypeExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use crate::{
    ctx::{Ctx, MapRecord, touch_pages},
    json::Obj,
    sys::{self, Fill, Mapping, TestFile},
    util::{PAGE_SIZE, align_up, order_of},
};

/// `--write` / `--read`.
#[derive(Debug, Clone, Args)]
pub struct TouchMode {
    /// Touch each page with a one-byte store: a write fault (the default).
    #[arg(long, conflicts_with = "read")]
    pub write: bool,
    /// Touch each page with a one-byte load: a read fault (read-only PTE).
    #[arg(long)]
    pub read: bool,
}

impl TouchMode {
    pub fn is_write(&self) -> bool {
        !self.read
    }
    pub fn name(&self) -> &'static str {
        if self.read { "read" } else { "write" }
    }
}

/// How test files are prepared and mapped.
#[derive(Debug, Clone, Args)]
pub struct FileOpts {
    /// Map with MAP_SHARED_VALIDATE|MAP_SYNC: write faults complete through
    /// dax_finish_sync_fault (needs a DAX file).
    #[arg(long)]
    pub map_sync: bool,
    /// Leave the fallocated extents unwritten (no pattern write). A read
    /// fault on an unwritten extent maps the shared zero page, not device
    /// memory; a write fault converts and zeroes in the fault path.
    #[arg(long)]
    pub no_fill: bool,
}

impl FileOpts {
    pub fn fill(&self) -> Fill {
        if self.no_fill {
            Fill::Allocate
        } else {
            Fill::Write
        }
    }
    pub fn map_flags(&self) -> libc::c_int {
        if self.map_sync {
            libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC
        } else {
            libc::MAP_SHARED
        }
    }
    pub fn obj(&self) -> Obj {
        Obj::new()
            .with("map_sync", self.map_sync)
            .with("filled", !self.no_fill)
    }
}

/// Who unmaps / acts first in two-process scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Who {
    Parent,
    Child,
}

/// Map `len` bytes of `fd` at `off`, MAP_SHARED (or MAP_SYNC), RW.
pub fn map_shared(
    fd: i32,
    len: usize,
    off: u64,
    align: usize,
    flags: libc::c_int,
) -> anyhow::Result<Mapping> {
    Mapping::file(
        fd,
        len,
        off,
        align,
        libc::PROT_READ | libc::PROT_WRITE,
        flags,
    )
    .with_context(|| format!("mmap {len} bytes at offset {off} (align {align:#x})"))
}

/// Forbid PMD faults on a mapping (VM_NOHUGEPAGE: checked before the DAX
/// case in the THP allowance of 6.1, 6.12 and 7.3, so the fault is a PTE
/// fault whatever the alignment).
pub fn force_pte(ctx: &Ctx, m: &Mapping) {
    if let Err(e) = m.madvise(libc::MADV_NOHUGEPAGE) {
        ctx.say(format!("warning: MADV_NOHUGEPAGE: {e}"));
    }
}

/// What is mapped: a file on the DAX mount, or a device-dax device.
pub enum Backing {
    File(TestFile),
    Dev {
        path: PathBuf,
        file: File,
        align: usize,
        size: Option<u64>,
    },
}

impl Backing {
    pub fn fd(&self) -> i32 {
        match self {
            Backing::File(f) => f.fd(),
            Backing::Dev { file, .. } => file.as_raw_fd(),
        }
    }
    pub fn name(&self) -> String {
        match self {
            Backing::File(f) => f.path.display().to_string(),
            Backing::Dev { path, .. } => path.display().to_string(),
        }
    }
    /// The fault granularity: 4 KiB for files (PTE faults are forced), the
    /// device alignment for device-dax.
    pub fn align(&self) -> usize {
        match self {
            Backing::File(_) => PAGE_SIZE,
            Backing::Dev { align, .. } => *align,
        }
    }
    pub fn env(&self, ctx: &Ctx) -> Obj {
        match self {
            Backing::File(f) => ctx.file_env(f),
            Backing::Dev {
                path, align, size, ..
            } => {
                let mut o = Obj::new()
                    .with("devdax", path.display().to_string())
                    .with("align", *align)
                    .with("dev_size", *size);
                let nd = sys::nd_devices();
                if nd != Obj::new() {
                    o.set("nd", nd);
                }
                o
            }
        }
    }
    pub fn keep(&mut self) {
        if let Backing::File(f) = self {
            f.keep();
        }
    }
}

/// Open a device-dax device: its alignment (sysfs unless overridden) and
/// size.
pub fn open_devdax(ctx: &Ctx, path: &Path, align: Option<u64>) -> anyhow::Result<Backing> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let meta = file.metadata()?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (sys_align, sys_size) = sys::devdax_geometry(&name);
    if !meta.file_type().is_char_device() {
        if !ctx.g.allow_non_dax {
            bail!(
                "{} is not a character device (device-dax is /dev/daxX.Y); --allow-non-dax maps it anyway",
                path.display()
            );
        }
        ctx.say(format!(
            "warning: {} is not a device-dax device",
            path.display()
        ));
    }
    let align = match (align, sys_align) {
        (Some(a), _) => a as usize,
        (None, Some(a)) => a,
        (None, None) => {
            ctx.say(format!(
                "warning: no sysfs align for {name}; assuming 4096 (use --align)"
            ));
            PAGE_SIZE
        }
    };
    if order_of(align).is_none() {
        bail!("alignment {align} is not a power-of-two multiple of 4096");
    }
    let size = sys_size.or((meta.len() > 0).then_some(meta.len()));
    Ok(Backing::Dev {
        path: path.to_owned(),
        file,
        align,
        size,
    })
}

/// A file of `len` bytes on the DAX mount, or the device-dax device.
pub fn open_backing(
    ctx: &Ctx,
    devdax: Option<&Path>,
    tag: &str,
    len: usize,
    fill: Fill,
) -> anyhow::Result<Backing> {
    match devdax {
        Some(p) => open_devdax(ctx, p, None),
        None => Ok(Backing::File(
            ctx.create_file(tag, len as u64, fill, false)?,
        )),
    }
}

/// Map `pages` pages of a backing (rounded up to its alignment), force PTE
/// faults for files, touch, and return the records: one per page at 4 KiB
/// granularity, one per block for huge-aligned device-dax.
pub fn map_and_touch(
    ctx: &Ctx,
    b: &Backing,
    pages: usize,
    write: bool,
    flags: libc::c_int,
) -> anyhow::Result<(Mapping, Vec<MapRecord>)> {
    let align = b.align();
    let len = align_up(pages * PAGE_SIZE, align);
    let m = map_shared(b.fd(), len, 0, align, flags)?;
    let recs = if align == PAGE_SIZE {
        if matches!(b, Backing::File(_)) {
            force_pte(ctx, &m);
        }
        let order: Vec<usize> = (0..pages).collect();
        touch_pages(&m, &order, write, false);
        ctx.page_records(&m, &order, &b.name(), 0, None)?
    } else {
        let order = order_of(align).unwrap_or(0);
        let per = align / PAGE_SIZE;
        let blocks: Vec<usize> = (0..len / align).map(|k| k * per).collect();
        touch_pages(&m, &blocks, write, false);
        ctx.block_records(&m, order, &b.name(), 0)?
    };
    ctx.check_present(&recs)?;
    Ok((m, recs))
}

/// Known GUP flavour of a kernel path, by kernel release, from reading the
/// 6.1.192, 6.12.117 and 7.3.4 sources. `None` for other releases.
pub fn known_flavour(kernel: &str, table: &[((u32, u32), &'static str)]) -> Option<&'static str> {
    let (ma, mi, _) = crate::util::parse_release(kernel)?;
    table.iter().find(|(v, _)| *v == (ma, mi)).map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_table() {
        let t = [((6, 1), "FOLL_GET"), ((6, 12), "FOLL_PIN")];
        assert_eq!(known_flavour("6.1.0-56-amd64", &t), Some("FOLL_GET"));
        assert_eq!(known_flavour("6.12.117+deb12-amd64", &t), Some("FOLL_PIN"));
        assert_eq!(known_flavour("6.6.1", &t), None);
    }
}
