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
    #[command(flatten)]
    pub touch: TouchMode,
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
    let recs = if order == 0 {
        ctx.page_records(&m, &firsts, &name, a.offset, None)?
    } else {
        ctx.block_records(&m, order, &name, a.offset)?
    };
    ctx.check_present(&recs)?;
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
