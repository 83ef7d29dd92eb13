//! Loop devices.

use super::*;

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// A loop block device over a backing file, detached on drop.
#[derive(Debug)]
pub struct LoopDev {
    pub path: PathBuf,
    dev: File,
}

impl LoopDev {
    pub fn attach(backing: &Path) -> anyhow::Result<Self> {
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .context("open /dev/loop-control (is the loop module loaded?)")?;
        let bfile = OpenOptions::new()
            .read(true)
            .write(true)
            .open(backing)
            .with_context(|| format!("open {}", backing.display()))?;
        let mut last = String::new();
        for _ in 0..8 {
            // SAFETY: ioctl without argument.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                bail!("LOOP_CTL_GET_FREE: {}", io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            if !path.exists() {
                // devtmpfs normally creates it; make one if not.
                let c = CString::new(path.as_os_str().as_bytes())?;
                // SAFETY: valid path.
                unsafe {
                    libc::mknod(
                        c.as_ptr(),
                        libc::S_IFBLK | 0o600,
                        libc::makedev(7, n as u32),
                    )
                };
            }
            let dev = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) => {
                    last = format!("open {}: {e}", path.display());
                    continue;
                }
            };
            // SAFETY: both fds valid.
            if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, bfile.as_raw_fd()) } != 0 {
                let e = io::Error::last_os_error();
                last = format!("LOOP_SET_FD {}: {e}", path.display());
                if e.raw_os_error() == Some(libc::EBUSY) {
                    continue;
                }
                bail!("{last}");
            }
            // struct loop_info64 (232 bytes); lo_flags is the u32 at 52.
            let mut info = [0u8; 232];
            info[52..56].copy_from_slice(&LO_FLAGS_AUTOCLEAR.to_ne_bytes());
            // SAFETY: correctly sized struct.
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, info.as_ptr()) };
            return Ok(Self { path, dev });
        }
        bail!("no free loop device: {last}")
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // SAFETY: valid fd.
        unsafe { libc::ioctl(self.dev.as_raw_fd(), LOOP_CLR_FD, 0) };
    }
}
