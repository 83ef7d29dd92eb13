//! devdax: map a device-dax character device (its own fault handler,
//! dev_dax_huge_fault; pgmap type MEMORY_DEVICE_GENERIC), touch, pin, unmap.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

use super::{TouchMode, map_shared, open_devdax};
use crate::{
    ctx::{Ctx, touch_pages},
    json::Obj,
    sys::{self, Mapping, process_vm_read},
    util::{PAGE_SIZE, align_up, order_of, parse_bytes},
};

#[derive(Debug, Clone, Args)]
pub struct DevDax {
    /// The device-dax character device, e.g. /dev/dax0.0.
    pub path: PathBuf,
    /// Bytes to map (rounded up to the alignment; default: one alignment
    /// unit, at least 8 pages).
    #[arg(long, value_parser = parse_bytes)]
    pub size: Option<u64>,
    /// Override the device alignment (default: the device's sysfs `align`).
    /// The mapping address, length and offset must all be multiples of it.
    #[arg(long, value_parser = parse_bytes)]
    pub align: Option<u64>,
    /// Byte offset into the device (a multiple of the alignment).
    #[arg(long, default_value = "0", value_parser = parse_bytes)]
    pub offset: u64,
    /// Pages to pin with process_vm_readv (the first K pages).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub pin: usize,
    /// With 1 GiB alignment: after the touch and the pins, read our own
    /// /proc/self/pagemap over the mapping. The kernel's page walk splits
    /// (clears) each device-dax PUD to look below it (`__split_huge_pud`),
    /// so the mapping is gone afterwards, with no unmap: a path a tracer
    /// must see.
    #[arg(long)]
    pub split_by_pagemap: bool,
    #[command(flatten)]
    pub touch: TouchMode,
}

/// Order of a 1 GiB (PUD) mapping, in 4 KiB pages.
const PUD_ORDER: u32 = 18;

/// Records of 1 GiB mappings, without reading pagemap: on 6.1 to 7.3 a
/// pagemap (or smaps) walk of a device-dax PUD calls `split_huge_pud`,
/// which clears it, so the reading would undo what it reads. The pfns come
/// from the device's physical start (sysfs `resource`) and the offset; the
/// entries are marked present (the touch faulted them in).
fn pud_records(
    m: &Mapping,
    order: u32,
    name: &str,
    offset: u64,
) -> anyhow::Result<Vec<crate::ctx::MapRecord>> {
    let dev = name.rsplit('/').next().unwrap_or(name);
    let base = sys::devdax_resource(dev)
        .with_context(|| format!("{name}: no sysfs resource to derive pfns from"))?;
    let unit = PAGE_SIZE << order;
    Ok((0..m.len() / unit)
        .map(|b| {
            let off = offset + (b * unit) as u64;
            let pfn = (base + off) / PAGE_SIZE as u64;
            crate::ctx::MapRecord {
                vaddr: m.addr() + b * unit,
                entry: crate::pagemap::PagemapEntry(1 << 63 | pfn),
                order,
                file: name.to_owned(),
                offset: off,
                t_ns: None,
            }
        })
        .collect())
}

pub fn devdax(ctx: &Ctx, a: &DevDax) -> anyhow::Result<()> {
    let b = open_devdax(ctx, &a.path, a.align)?;
    let align = b.align();
    let order = order_of(align).unwrap_or(0);
    let want = a.size.map_or((8 * PAGE_SIZE).max(align), |s| s as usize);
    let len = align_up(want.max(PAGE_SIZE), align);
    if !a.offset.is_multiple_of(align as u64) {
        bail!(
            "--offset {:#x} is not a multiple of the alignment {align:#x}",
            a.offset
        );
    }
    let pages = len / PAGE_SIZE;
    if a.pin > pages {
        bail!("--pin {} is more than the {pages} mapped pages", a.pin);
    }
    let name = b.name();
    let mut m = map_shared(b.fd(), len, a.offset, align, libc::MAP_SHARED)
        .with_context(|| format!("map {name} (align {align:#x})"))?;
    // One touch per fault unit: device-dax refuses faults smaller than its
    // alignment (dev_dax_pte_fault returns SIGBUS when align > 4 KiB).
    let per = align / PAGE_SIZE;
    let firsts: Vec<usize> = (0..pages).step_by(per).collect();
    touch_pages(&m, &firsts, a.touch.is_write(), false);
    let recs = if order >= PUD_ORDER {
        pud_records(&m, order, &name, a.offset)?
    } else if order == 0 {
        ctx.page_records(&m, &firsts, &name, a.offset, None)?
    } else {
        ctx.block_records(&m, order, &name, a.offset)?
    };
    ctx.check_present(&recs)?;
    if order >= PUD_ORDER {
        ctx.say(format!(
            "{name}: 1 GiB mappings: pagemap not read (a pagemap walk splits, that is clears, a device-dax PUD); pfns from sysfs resource"
        ));
    }
    let huge = order > 0 && recs.iter().all(|r| r.order == order);
    ctx.say(format!(
        "{} {} fault unit(s) of {align:#x} at {:#x}{}",
        a.touch.name(),
        firsts.len(),
        m.addr(),
        if order > 0 && !huge {
            " (NOT huge-mapped!)"
        } else {
            ""
        }
    ));
    // Pin the first K pages (process_vm_readv on ourselves).
    if a.pin > 0 {
        let buf = Mapping::anon(a.pin * PAGE_SIZE, PAGE_SIZE)?;
        let n = process_vm_read(sys::getpid(), buf.addr(), m.addr(), a.pin * PAGE_SIZE)
            .context("process_vm_readv of the device-dax mapping")?;
        if n != a.pin * PAGE_SIZE {
            bail!("process_vm_readv: short read {n}");
        }
    }
    ctx.ready(
        ctx.line("ready")
            .with("pages", pages)
            .with("mappings", ctx.records_json(&recs))
            .with("pins", a.pin),
    )?;
    let mut split = None;
    if a.split_by_pagemap {
        if order < PUD_ORDER {
            bail!("--split-by-pagemap needs a 1 GiB-aligned device (align {align:#x})");
        }
        let after = crate::pagemap::read(None, m.addr(), pages)?;
        let present = after.iter().filter(|e| e.present()).count();
        ctx.say(format!(
            "read pagemap over the 1 GiB mapping(s): {present} of {pages} pages present after it"
        ));
        split = Some(present);
    }
    let hold = ctx.hold();
    m.unmap().context("munmap")?;
    ctx.emit(
        &ctx.done_line()
            .with("pages", pages)
            .with("align", align)
            .with("order", order)
            .with("huge", huge)
            .with("touch", a.touch.name())
            .with("mappings", ctx.records_json(&recs))
            .with("pins", a.pin)
            .with("present_after_pagemap", split)
            .with(
                "gup",
                (a.pin > 0).then(|| {
                    Obj::new()
                        .with("api", "process_vm_readv")
                        .with("flags", "FOLL_PIN")
                        .with("pages", a.pin)
                        .with("calls", 1u32)
                }),
            )
            .with("hold", hold)
            .with("munmapped", true)
            .with("env", b.env(ctx)),
    )
}
