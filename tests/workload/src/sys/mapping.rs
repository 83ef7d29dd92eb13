//! Mappings: mmap/munmap/mremap/madvise wrappers and the `Mapping` owner.

use super::*;

/// An mmap'ed region, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    len: usize,
    mapped: bool,
}

impl Mapping {
    /// Map `len` bytes of `fd` at file `offset`, at a virtual address that is
    /// a multiple of `align` (reserve `len + align` of address space, then
    /// MAP_FIXED over the aligned part and trim the rest).
    pub fn file(
        fd: RawFd,
        len: usize,
        offset: u64,
        align: usize,
        prot: libc::c_int,
        flags: libc::c_int,
    ) -> io::Result<Self> {
        Self::map(Some(fd), len, offset, align, prot, flags)
    }

    /// Anonymous private memory.
    pub fn anon(len: usize, align: usize) -> io::Result<Self> {
        Self::map(
            None,
            len,
            0,
            align,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )
    }

    /// An inaccessible, unbacked reservation of address space (PROT_NONE,
    /// MAP_NORESERVE) at a multiple of `align`: room to place mappings at
    /// chosen addresses with [`Mapping::file_at`].
    pub fn reserve(len: usize, align: usize) -> io::Result<Self> {
        Self::map(
            None,
            len,
            0,
            align,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
    }

    /// Map `len` bytes of `fd` at file `offset` exactly at `addr`
    /// (MAP_FIXED: whatever was there is replaced, so `addr` must lie in
    /// the caller's own reservation).
    pub fn file_at(
        fd: RawFd,
        len: usize,
        offset: u64,
        addr: usize,
        prot: libc::c_int,
        flags: libc::c_int,
    ) -> io::Result<Self> {
        if len == 0 || !addr.is_multiple_of(PAGE_SIZE) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: MAP_FIXED over address space the caller reserved.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                prot,
                flags | libc::MAP_FIXED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            addr: p as usize,
            len,
            mapped: true,
        })
    }

    /// munmap `[addr, addr + len)`, which must lie inside this mapping (a
    /// reservation): leaves a hole with no VMA at all.
    pub fn punch(&self, addr: usize, len: usize) -> io::Result<()> {
        if addr < self.addr || addr + len > self.addr + self.len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if len == 0 {
            return Ok(());
        }
        // SAFETY: a range of our own reservation, checked above.
        let rc = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Move the whole mapping to `new_addr` with
    /// mremap(MREMAP_MAYMOVE|MREMAP_FIXED): its page table entries move
    /// (`move_page_tables`), nothing is faulted again. Whatever was mapped
    /// at the destination is unmapped by the kernel, so it must be the
    /// caller's own.
    pub fn mremap_to(&mut self, new_addr: usize) -> io::Result<()> {
        if !self.mapped {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: our own mapping moves to address space the caller owns;
        // no reference into the old range outlives this.
        let p = unsafe {
            libc::mremap(
                self.addr as *mut libc::c_void,
                self.len,
                self.len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                new_addr as *mut libc::c_void,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.addr = p as usize;
        Ok(())
    }

    fn map(
        fd: Option<RawFd>,
        len: usize,
        offset: u64,
        align: usize,
        prot: libc::c_int,
        flags: libc::c_int,
    ) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let align = align.max(PAGE_SIZE);
        let raw_fd = fd.unwrap_or(-1);
        if align == PAGE_SIZE {
            // SAFETY: a fresh mapping chosen by the kernel.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    flags,
                    raw_fd,
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            return Ok(Self {
                addr: p as usize,
                len,
                mapped: true,
            });
        }
        let span = len + align;
        // SAFETY: an inaccessible reservation chosen by the kernel.
        let res = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if res == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let res = res as usize;
        let aligned = align_up(res, align);
        // SAFETY: [aligned, aligned+len) lies inside our own reservation.
        let p = unsafe {
            libc::mmap(
                aligned as *mut libc::c_void,
                len,
                prot,
                flags | libc::MAP_FIXED,
                raw_fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: our reservation.
            unsafe { libc::munmap(res as *mut libc::c_void, span) };
            return Err(e);
        }
        // SAFETY: trimming the unused head and tail of our reservation.
        unsafe {
            if aligned > res {
                libc::munmap(res as *mut libc::c_void, aligned - res);
            }
            let end = aligned + len;
            if res + span > end {
                libc::munmap(end as *mut libc::c_void, res + span - end);
            }
        }
        Ok(Self {
            addr: aligned,
            len,
            mapped: true,
        })
    }

    pub fn addr(&self) -> usize {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn pages(&self) -> usize {
        self.len / PAGE_SIZE
    }

    pub fn madvise(&self, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: our own mapping.
        let rc = unsafe { libc::madvise(self.addr as *mut libc::c_void, self.len, advice) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Touch byte `byte` of page `page`: a volatile store (write fault) or
    /// load (read fault). Returns the value read (0 for a write).
    pub fn touch_at(&self, page: usize, byte: usize, write: bool) -> u8 {
        assert!(self.mapped && page * PAGE_SIZE + byte < self.len);
        let p = (self.addr + page * PAGE_SIZE + byte) as *mut u8;
        if write {
            // SAFETY: inside our live, writable mapping.
            unsafe { p.write_volatile((page as u8) ^ 0x5a | 1) };
            0
        } else {
            // SAFETY: inside our live mapping.
            unsafe { p.read_volatile() }
        }
    }

    pub fn touch(&self, page: usize, write: bool) -> u8 {
        self.touch_at(page, 0, write)
    }

    pub fn unmap(&mut self) -> io::Result<()> {
        if !self.mapped {
            return Ok(());
        }
        // SAFETY: our own mapping; no references into it outlive this.
        let rc = unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.mapped = false;
        Ok(())
    }

    /// munmap from a forked child, whose copy of this struct is never
    /// dropped (the child `_exit`s).
    pub fn unmap_in_child(&self) -> io::Result<()> {
        // SAFETY: the child's own copy of the mapping; nothing in the child
        // touches it afterwards.
        let rc = unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Leave the mapping in place (for process exit to tear down).
    pub fn leak(mut self) {
        self.mapped = false;
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.mapped {
            let _ = self.unmap();
        }
    }
}
