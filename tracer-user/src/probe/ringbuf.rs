//! A consumer of the BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`).
//!
//! refscope reads the ring buffer itself rather than through aya's
//! `RingBuf`: it consumes records in batches (one consumer-position store
//! per batch, not per record) and can say what it sees when the stream
//! stalls (positions and the header at the consumer position), which is
//! what `-vv` logs.
//!
//! Layout (kernel/bpf/ringbuf.c): page 0 is the consumer position (mapped
//! read-write); page 1 the producer position; the data pages follow,
//! mapped twice back to back so a record that wraps is contiguous. Each
//! record starts with an 8-byte header whose first word is the length with
//! BUSY (bit 31, still being written) and DISCARD (bit 30) flags.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HDR: u64 = 8;

/// What a read ended on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Everything committed was consumed.
    Empty,
    /// The next record is still being written (BUSY).
    Busy,
}

/// Positions, for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub consumer: u64,
    pub producer: u64,
    /// Header word of the record at the consumer position (if any).
    pub head: Option<u32>,
}

struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: i32, offset: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the ring buffer map's fd; the
        // kernel validates length and offset.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?,
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// What keeps the ring buffer's memory alive.
enum Owner {
    Map(MapData),
    /// A stand-in laid out like a ring buffer map (tests).
    #[cfg(test)]
    Memfd(std::os::fd::OwnedFd),
}

impl Owner {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Owner::Map(m) => m.fd().as_fd(),
            #[cfg(test)]
            Owner::Memfd(f) => f.as_fd(),
        }
    }
}

/// The consumer side of one ring buffer.
pub struct RingReader {
    map: Owner,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    mask: u64,
}

// SAFETY: the mappings are only accessed through &self/&mut self with
// atomics where the kernel writes concurrently.
unsafe impl Send for RingReader {}

impl RingReader {
    /// `size`: the ring buffer's data size (a power of two).
    pub fn new(map: MapData, size: u32) -> io::Result<Self> {
        Self::over(Owner::Map(map), size)
    }

    fn over(map: Owner, size: u32) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let fd = map.fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size as usize, libc::PROT_READ, page)?;
        Ok(RingReader {
            map,
            consumer,
            producer,
            page,
            mask: u64::from(size) - 1,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: page 0 of the map holds the consumer position, u64-aligned.
        unsafe { self.consumer.ptr.cast::<AtomicU64>().as_ref() }
    }

    fn producer_pos(&self) -> u64 {
        // SAFETY: the first word of the producer mapping is its position.
        unsafe { self.producer.ptr.cast::<AtomicU64>().as_ref() }.load(Ordering::Acquire)
    }

    fn header(&self, pos: u64) -> &AtomicU32 {
        let off = self.page + (pos & self.mask) as usize;
        // SAFETY: `off` is inside the first copy of the data pages and
        // 8-aligned (records are 8-aligned).
        unsafe { self.producer.ptr.add(off).cast::<AtomicU32>().as_ref() }
    }

    /// Hand every committed record to `f`, in order, then publish the new
    /// consumer position.
    pub fn read(&mut self, mut f: impl FnMut(&[u8])) -> Stop {
        let start = self.consumer_pos().load(Ordering::Acquire);
        let mut cons = start;
        let mut stop = Stop::Empty;
        loop {
            let prod = self.producer_pos();
            if cons == prod {
                break;
            }
            // Acquire pairs with the kernel's xchg that clears BUSY.
            let hdr = self.header(cons).load(Ordering::Acquire);
            if hdr & BUSY != 0 {
                stop = Stop::Busy;
                break;
            }
            let len = u64::from(hdr & !(BUSY | DISCARD));
            if hdr & DISCARD == 0 {
                let off = self.page + (cons & self.mask) as usize + HDR as usize;
                // SAFETY: the record lies within the double-mapped data
                // area (it is at most the ring size), committed and ours
                // until the consumer position moves past it.
                let data = unsafe {
                    std::slice::from_raw_parts(self.producer.ptr.as_ptr().add(off), len as usize)
                };
                f(data);
            }
            cons += (len + HDR).next_multiple_of(8);
        }
        if cons != start {
            self.consumer_pos().store(cons, Ordering::Release);
        }
        stop
    }

    /// Read until every record reserved before this call has been handed
    /// to `f` (a barrier). A record still being written (BUSY) holds back
    /// the committed ones after it, which a plain [`read`](Self::read)
    /// leaves for later; this waits for it, `patience` at most. On a
    /// preemptible kernel a program can be preempted between reserving and
    /// committing, so that wait is not always short. Returns whether the
    /// barrier was reached.
    pub fn read_through(
        &mut self,
        mut f: impl FnMut(&[u8]),
        patience: std::time::Duration,
    ) -> bool {
        let target = self.producer_pos();
        let deadline = std::time::Instant::now() + patience;
        loop {
            self.read(&mut f);
            if reached(self.consumer_pos().load(Ordering::Acquire), target) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    }

    pub fn state(&self) -> State {
        let consumer = self.consumer_pos().load(Ordering::Acquire);
        let producer = self.producer_pos();
        State {
            consumer,
            producer,
            head: (consumer != producer).then(|| self.header(consumer).load(Ordering::Acquire)),
        }
    }
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_raw_fd()
    }
}

/// Whether consumer position `consumer` is at or past `target` (positions
/// only grow; compared as the kernel does, wrapping).
fn reached(consumer: u64, target: u64) -> bool {
    consumer.wrapping_sub(target) as i64 >= 0
}

/// Wait until the ring buffer is readable, then read everything committed.
///
/// The kernel wakes a consumer only when it has caught up with the
/// producer: a record committed between the last empty read and the reset
/// of readiness would go unnoticed forever. So readiness is reset first and
/// the ring read again after.
pub async fn wait_and_read(
    ring: &mut tokio::io::unix::AsyncFd<RingReader>,
    mut f: impl FnMut(&[u8]),
) -> io::Result<Stop> {
    let mut guard = ring.readable_mut().await?;
    guard.get_inner_mut().read(&mut f);
    guard.clear_ready();
    Ok(guard.get_inner_mut().read(&mut f))
}

/// Notices a record that stays BUSY (a producer that reserved but never
/// committed): the stream cannot move past it, which must not be silent.
#[derive(Default)]
pub struct StallWatch {
    since: Option<(u64, std::time::Instant)>,
    reported: bool,
}

impl StallWatch {
    /// Call after each read; returns a message once a stall lasts 2 s.
    pub fn check(&mut self, stop: Stop, state: State) -> Option<String> {
        if stop != Stop::Busy {
            *self = StallWatch::default();
            return None;
        }
        match self.since {
            Some((pos, t)) if pos == state.consumer => {
                if !self.reported && t.elapsed() >= std::time::Duration::from_secs(2) {
                    self.reported = true;
                    return Some(format!(
                        "the ring buffer is stuck behind a record that is still being written \
                         (consumer {:#x}, producer {:#x}, header {:#x}): events after it are delayed",
                        state.consumer,
                        state.producer,
                        state.head.unwrap_or(0)
                    ));
                }
            }
            _ => self.since = Some((state.consumer, std::time::Instant::now())),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u32 = 1 << 16;

    /// The kernel's side of a stand-in ring buffer: reserves and commits
    /// records the way `bpf_ringbuf_reserve` and `_submit` do.
    struct Producer {
        base: usize,
        page: usize,
    }

    impl Producer {
        fn pos(&self) -> &AtomicU64 {
            // SAFETY: the producer position lives at page 1 of the mapping.
            unsafe { &*((self.base + self.page) as *const AtomicU64) }
        }
        fn header(&self, pos: u64) -> &AtomicU32 {
            // SAFETY: inside the data area (tests never wrap).
            unsafe { &*((self.base + 2 * self.page + pos as usize) as *const AtomicU32) }
        }
        /// Reserve a record holding `byte` repeated; returns its position.
        fn reserve(&self, len: u32, byte: u8) -> u64 {
            let pos = self.pos().load(Ordering::Acquire);
            let data = self.base + 2 * self.page + pos as usize + HDR as usize;
            // SAFETY: the record's bytes, inside the data area.
            unsafe { std::ptr::write_bytes(data as *mut u8, byte, len as usize) };
            self.header(pos).store(BUSY | len, Ordering::Release);
            self.pos().store(
                pos + (u64::from(len) + HDR).next_multiple_of(8),
                Ordering::Release,
            );
            pos
        }
        fn commit(&self, pos: u64) {
            self.header(pos).fetch_and(!BUSY, Ordering::AcqRel);
        }
    }

    /// A reader over a memfd laid out like a ring buffer map, and the
    /// producer side of it (the mapping stays for the test's lifetime).
    fn stand_in() -> (RingReader, Producer) {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: plain syscalls on a fresh memfd we own.
        let (fd, base, page) = unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let raw = libc::memfd_create(c"refscope-ring-test".as_ptr(), 0);
            assert!(raw >= 0, "memfd_create: {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(raw);
            let len = 2 * page + 2 * SIZE as usize;
            assert_eq!(libc::ftruncate(raw, len as libc::off_t), 0);
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            (fd, base as usize, page)
        };
        let reader = RingReader::over(Owner::Memfd(fd), SIZE).expect("map the stand-in");
        (reader, Producer { base, page })
    }

    fn collect(reader: &mut RingReader) -> (Stop, Vec<u8>) {
        let mut got = Vec::new();
        let stop = reader.read(|r| got.push(r[0]));
        (stop, got)
    }

    #[test]
    fn a_record_still_being_written_holds_back_the_committed_ones_after_it() {
        let (mut reader, k) = stand_in();
        let a = k.reserve(24, 1);
        k.commit(a);
        let b = k.reserve(24, 2);
        let c = k.reserve(40, 3);
        k.commit(c);
        assert_eq!(collect(&mut reader), (Stop::Busy, vec![1]));
        // The barrier is not reached while b is being written...
        let mut got = Vec::new();
        let t = std::time::Instant::now();
        assert!(!reader.read_through(|r| got.push(r[0]), std::time::Duration::from_millis(20)));
        assert!(got.is_empty(), "{got:?}");
        assert!(t.elapsed() >= std::time::Duration::from_millis(20));
        // ...and is once its writer commits it, in order.
        let base = k.base;
        let page = k.page;
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            Producer { base, page }.commit(b);
        });
        assert!(reader.read_through(|r| got.push(r[0]), std::time::Duration::from_secs(10)));
        writer.join().unwrap();
        assert_eq!(got, vec![2, 3]);
        assert_eq!(collect(&mut reader), (Stop::Empty, vec![]));
    }

    #[test]
    fn the_barrier_is_reached_at_or_past_its_target() {
        assert!(reached(0x100, 0x100));
        assert!(reached(0x108, 0x100));
        assert!(!reached(0xf8, 0x100));
        assert!(reached(3, u64::MAX - 4), "positions wrap");
        assert!(!reached(u64::MAX - 4, 3));
    }

    #[test]
    fn a_lasting_busy_record_is_reported_once() {
        let mut w = StallWatch::default();
        let st = State {
            consumer: 0x40,
            producer: 0x100,
            head: Some(BUSY | 0x98),
        };
        assert_eq!(w.check(Stop::Busy, st), None);
        w.since = Some((
            0x40,
            std::time::Instant::now() - std::time::Duration::from_secs(3),
        ));
        let msg = w.check(Stop::Busy, st).unwrap();
        assert!(msg.contains("stuck") && msg.contains("0x80000098"), "{msg}");
        assert_eq!(w.check(Stop::Busy, st), None, "reported once");
        assert_eq!(w.check(Stop::Empty, st), None);
        assert!(w.since.is_none());
    }
}
