//! Files: test files on the DAX filesystem, FIEMAP, fallocate, truncate.

use super::*;

/// How a test file's blocks are prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// fallocate in 2 MiB pieces (unwritten extents; a read fault maps the
    /// zero page, a write fault converts and zeroes).
    Allocate,
    /// fallocate, then write a pattern so every block is written (both read
    /// and write faults map device pages).
    Write,
}

/// The byte every byte of page `i` of a pattern-filled file holds.
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// What a file lives on.
#[derive(Debug, Clone, Default)]
pub struct FileInfo {
    /// STATX_ATTR_DAX; None if the kernel does not report it.
    pub dax: Option<bool>,
    pub fs: String,
    pub dev: (u32, u32),
}

impl FileInfo {
    pub fn of_fd(fd: RawFd) -> anyhow::Result<Self> {
        // SAFETY: plain data.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers; empty path with AT_EMPTY_PATH.
        let rc = unsafe {
            libc::statx(
                fd,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_BASIC_STATS,
                &mut stx,
            )
        };
        if rc != 0 {
            bail!("statx: {}", io::Error::last_os_error());
        }
        let dax_bit = libc::STATX_ATTR_DAX as u64;
        let dax =
            (stx.stx_attributes_mask & dax_bit != 0).then_some(stx.stx_attributes & dax_bit != 0);
        // SAFETY: plain data.
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer.
        let fs = if unsafe { libc::fstatfs(fd, &mut sfs) } == 0 {
            fs_name(sfs.f_type as u64)
        } else {
            "unknown".into()
        };
        Ok(Self {
            dax,
            fs,
            dev: (stx.stx_dev_major, stx.stx_dev_minor),
        })
    }
}

/// Filesystem name from a statfs magic.
pub fn fs_name(magic: u64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x8584_58f6 => "ramfs".into(),
        0x9123_683e => "btrfs".into(),
        0x6573_5546 => "fuse".into(),
        0x6264_6576 => "devtmpfs".into(),
        m => format!("{m:#x}"),
    }
}

/// A file created for a scenario, removed on drop unless kept.
#[derive(Debug)]
pub struct TestFile {
    pub path: PathBuf,
    pub file: File,
    pub info: FileInfo,
    keep: bool,
}

impl TestFile {
    /// Create `dir/name` of `size` bytes (fresh, O_EXCL), with blocks
    /// prepared per `fill`. `extsize_hint`: ask XFS for aligned allocation.
    pub fn create(
        dir: &Path,
        name: &str,
        size: u64,
        fill: Fill,
        keep: bool,
        extsize_hint: bool,
    ) -> anyhow::Result<Self> {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let info = FileInfo::of_fd(file.as_raw_fd())?;
        let tf = Self {
            path,
            file,
            info,
            keep,
        };
        if extsize_hint {
            let _ = set_extsize_hint(tf.fd(), PMD_SIZE as u32);
        }
        tf.allocate(0, size)?;
        // fallocate does not grow i_size past what it allocates when the
        // file system rounds; make the size exact.
        tf.file
            .set_len(size)
            .with_context(|| format!("ftruncate {}", tf.path.display()))?;
        if fill == Fill::Write {
            tf.write_pattern(0, size)?;
        }
        Ok(tf)
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// fallocate [off, off+len) in 2 MiB pieces: each power-of-two request
    /// lets ext4's buddy allocator hand out a naturally aligned extent,
    /// which is what a PMD fault needs.
    pub fn allocate(&self, off: u64, len: u64) -> anyhow::Result<()> {
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let n = (end - pos).min(PMD_SIZE as u64);
            // SAFETY: valid fd.
            let rc = unsafe { libc::fallocate(self.fd(), 0, pos as i64, n as i64) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                bail!("fallocate {} at {pos}+{n}: {e}", self.path.display());
            }
            pos += n;
        }
        Ok(())
    }

    /// Write the page pattern over [off, off+len) (page aligned).
    pub fn write_pattern(&self, off: u64, len: u64) -> anyhow::Result<()> {
        const CHUNK: usize = 1 << 20;
        let mut buf = vec![0u8; CHUNK];
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            for (i, page) in buf[..n].chunks_mut(PAGE_SIZE).enumerate() {
                page.fill(pattern_byte(pos as usize / PAGE_SIZE + i));
            }
            self.file
                .write_all_at(&buf[..n], pos)
                .with_context(|| format!("write {} at {pos}", self.path.display()))?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Keep the file after the scenario (e.g. when the fs is dead).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            eprintln!(
                "refscope-workload: warning: cannot remove {}: {e}",
                self.path.display()
            );
        }
    }
}

/// One FIEMAP extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
pub(super) const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;

/// The file's extents (FS_IOC_FIEMAP); Err on file systems without it
/// (tmpfs).
pub fn fiemap(fd: RawFd) -> io::Result<Vec<Extent>> {
    const MAX: usize = 128;
    // struct fiemap (32 bytes) followed by MAX struct fiemap_extent (56).
    let mut buf = vec![0u64; (32 + 56 * MAX) / 8];
    buf[1] = u64::MAX; // fm_length
    // fm_flags (u32 at byte 16) = 0; fm_extent_count (u32 at byte 24).
    buf[3] = MAX as u64;
    // SAFETY: buf is large enough for the header and MAX extents.
    let rc = unsafe { libc::ioctl(fd, FS_IOC_FIEMAP, buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mapped = (buf[2] >> 32) as usize; // fm_mapped_extents at byte 20
    let mut out = Vec::with_capacity(mapped);
    for i in 0..mapped.min(MAX) {
        let b = 4 + i * 7; // u64 index of extent i
        out.push(Extent {
            logical: buf[b],
            physical: buf[b + 1],
            length: buf[b + 2],
            flags: (buf[b + 5] & 0xffff_ffff) as u32,
        });
    }
    Ok(out)
}

impl Extent {
    pub fn unwritten(&self) -> bool {
        self.flags & FIEMAP_EXTENT_UNWRITTEN != 0
    }
}

/// The physical byte offset (on the block device) of file offset `off`,
/// from FIEMAP extents.
pub fn physical_of(extents: &[Extent], off: u64) -> Option<u64> {
    extents
        .iter()
        .find(|e| (e.logical..e.logical + e.length).contains(&off))
        .map(|e| e.physical + (off - e.logical))
}

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801C_581F;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401C_5820;
const FS_XFLAG_EXTSIZE: u32 = 0x800;

/// Set an XFS extent size hint on an empty file (ENOTTY/EOPNOTSUPP on
/// ext4: the caller ignores it).
pub fn set_extsize_hint(fd: RawFd, bytes: u32) -> io::Result<()> {
    // struct fsxattr: xflags, extsize, nextents, projid, cowextsize, pad[8].
    let mut x = [0u32; 7];
    // SAFETY: 28-byte buffer for the 28-byte struct.
    if unsafe { libc::ioctl(fd, FS_IOC_FSGETXATTR, x.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    x[0] |= FS_XFLAG_EXTSIZE;
    x[1] = bytes;
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, FS_IOC_FSSETXATTR, x.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
