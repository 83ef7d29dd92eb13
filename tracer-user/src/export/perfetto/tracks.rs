//! The track descriptors of the Perfetto export, each emitted before the
//! track's first use: a global track for events of no page, one track per
//! device, one per page under its device, with a "refcount" counter child
//! and one lane per concurrently live mapping or GUP reference, taken and
//! freed as slices open and close so that slices on a track never overlap.

use std::io;

use refscope_core::analysis::Analyzer;

use super::{
    Lane, MAX_PAGES, PageTracks, Perfetto,
    fields::{
        CD_UNIT, P_TRACK_DESCRIPTOR, P_TRACK_EVENT, TD_COUNTER, TD_NAME, TD_PARENT, TD_UUID,
        TE_COUNTER, TE_TRACK, TE_TYPE, TYPE_COUNTER, UNIT_COUNT,
    },
};
use crate::export::Context;

/// Track uuids: a kind in the top byte, an id below.
const UUID_GLOBAL: u64 = 0x72_6566_7363_6f70; // "refscop"
const UUID_DEVICE: u64 = 1 << 56;
const UUID_PAGE: u64 = 2 << 56;
const UUID_COUNTER: u64 = 3 << 56;
const UUID_LANE: u64 = 4 << 56;

impl<W: io::Write> Perfetto<W> {
    fn descriptor(
        &mut self,
        t: u64,
        uuid: u64,
        parent: Option<u64>,
        name: &str,
        counter: bool,
    ) -> io::Result<()> {
        self.start(t, false);
        self.pkt.message(P_TRACK_DESCRIPTOR, |d| {
            d.uint(TD_UUID, uuid);
            if let Some(parent) = parent {
                d.uint(TD_PARENT, parent);
            }
            d.string(TD_NAME, name);
            if counter {
                d.message(TD_COUNTER, |c| c.uint(CD_UNIT, UNIT_COUNT));
            }
        });
        self.stats.tracks += 1;
        self.flush_packet()
    }

    pub(super) fn global_track(&mut self, t: u64) -> io::Result<u64> {
        if !self.global {
            self.global = true;
            self.descriptor(t, UUID_GLOBAL, None, "refscope: other events", false)?;
        }
        Ok(UUID_GLOBAL)
    }

    /// The device track of pgmap index `idx` (None: unknown device).
    pub(super) fn device_track(
        &mut self,
        t: u64,
        a: &Analyzer,
        idx: Option<usize>,
    ) -> io::Result<u64> {
        let uuid = UUID_DEVICE | idx.map_or(0, |i| i as u64 + 1);
        if self.devices.insert(uuid) {
            let name = match idx.and_then(|i| a.pgmaps().get(i)) {
                Some(g) => {
                    let who = if g.name.is_empty() {
                        format!("pgmap {}", g.id)
                    } else {
                        g.name.clone()
                    };
                    let range = g
                        .ranges
                        .first()
                        .map(|(lo, hi)| format!(" pfn {lo:#x}-{:#x}", hi.saturating_sub(1)))
                        .unwrap_or_default();
                    format!("{who} ({}){range}", g.ty.as_str())
                }
                None => "unknown device".into(),
            };
            self.descriptor(t, uuid, None, &name, false)?;
        }
        Ok(uuid)
    }

    /// The page's track (and its device's), emitted on first use.
    pub(super) fn page_track(&mut self, t: u64, cx: &Context<'_>, pfn: u64) -> io::Result<u64> {
        let uuid = UUID_PAGE | pfn;
        if self.pages.contains_key(&pfn) {
            return Ok(uuid);
        }
        if self.pages.len() >= self.evict_at {
            self.pages.retain(|_, p| p.busy());
            // Busy pages stay: evict again only once as many more came.
            self.evict_at = MAX_PAGES.max(self.pages.len() * 2);
        }
        let idx = cx.pgmap_index(pfn);
        let dev = self.device_track(t, cx.analyzer, idx)?;
        self.descriptor(t, uuid, Some(dev), &format!("pfn {pfn:#x}"), false)?;
        self.pages.insert(
            pfn,
            PageTracks {
                counter: false,
                maps: Vec::new(),
                pins: Vec::new(),
            },
        );
        Ok(uuid)
    }

    pub(super) fn counter(
        &mut self,
        t: u64,
        cx: &Context<'_>,
        pfn: u64,
        value: i64,
    ) -> io::Result<()> {
        let page = self.page_track(t, cx, pfn)?;
        let uuid = UUID_COUNTER | pfn;
        if let Some(p) = self.pages.get_mut(&pfn)
            && !p.counter
        {
            p.counter = true;
            self.descriptor(t, uuid, Some(page), "refcount", true)?;
        }
        self.start(t, true);
        self.pkt.message(P_TRACK_EVENT, |e| {
            e.uint(TE_TYPE, TYPE_COUNTER);
            e.uint(TE_TRACK, uuid);
            e.int(TE_COUNTER, value);
        });
        self.stats.counters += 1;
        self.flush_packet()
    }

    /// A free lane of `pfn` for a mapping or a pin, created if needed.
    pub(super) fn take_lane(
        &mut self,
        t: u64,
        cx: &Context<'_>,
        pfn: u64,
        pin: bool,
    ) -> io::Result<u64> {
        let page = self.page_track(t, cx, pfn)?;
        let Some(p) = self.pages.get_mut(&pfn) else {
            return Ok(page);
        };
        let lanes = if pin { &mut p.pins } else { &mut p.maps };
        if let Some(l) = lanes.iter_mut().find(|l| !l.busy) {
            l.busy = true;
            return Ok(l.uuid);
        }
        let n = lanes.len();
        let uuid = UUID_LANE | self.next_lane;
        self.next_lane += 1;
        lanes.push(Lane { uuid, busy: true });
        let name = if pin {
            format!("GUP refs #{n}")
        } else {
            format!("mappings #{n}")
        };
        self.descriptor(t, uuid, Some(page), &name, false)?;
        Ok(uuid)
    }

    pub(super) fn free_lane(&mut self, pfn: u64, uuid: u64) {
        if let Some(p) = self.pages.get_mut(&pfn)
            && let Some(l) = p
                .maps
                .iter_mut()
                .chain(&mut p.pins)
                .find(|l| l.uuid == uuid)
        {
            l.busy = false;
        }
    }
}
