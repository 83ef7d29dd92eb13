//! Pure helpers: size parsing, alignment math, kernel release parsing, errno
//! names. Everything here is unit-tested and does no I/O.

use anyhow::{Context as _, bail};

/// Base page size on x86_64.
pub const PAGE_SIZE: usize = 4096;
/// PMD mapping size on x86_64 (order 9).
pub const PMD_SIZE: usize = 2 << 20;
/// Pages in a PMD mapping.
pub const PMD_PAGES: usize = PMD_SIZE / PAGE_SIZE;

/// Parse a size such as `4096`, `4k`, `2M`, `2MiB`, `1g`, `1.5M`. A bare
/// number is multiplied by `default_unit` (1 for bytes, 1 << 20 for MiB).
/// Suffixes are binary (K = 1024) and case-insensitive; a trailing `b`, `ib`
/// or `iB` is accepted.
pub fn parse_size(s: &str, default_unit: u64) -> anyhow::Result<u64> {
    let t = s.trim();
    if t.is_empty() {
        bail!("empty size");
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let num: String = num.chars().filter(|c| *c != '_').collect();
    if num.is_empty() {
        bail!("size {s:?} has no number");
    }
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" => default_unit,
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "page" | "pages" => PAGE_SIZE as u64,
        other => bail!("size {s:?}: unknown unit {other:?} (use K, M, G, T or pages)"),
    };
    if num.contains('.') {
        let v: f64 = num.parse().with_context(|| format!("size {s:?}"))?;
        let bytes = v * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            bail!("size {s:?} out of range");
        }
        if bytes.fract() != 0.0 {
            bail!("size {s:?} is not a whole number of bytes");
        }
        Ok(bytes as u64)
    } else {
        let v: u64 = num.parse().with_context(|| format!("size {s:?}"))?;
        v.checked_mul(mult)
            .with_context(|| format!("size {s:?} overflows"))
    }
}

/// clap value parser: a size in bytes (bare numbers are bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size(s, 1).map_err(|e| format!("{e:#}"))
}

/// clap value parser: a size whose bare numbers are MiB.
pub fn parse_mib(s: &str) -> Result<u64, String> {
    parse_size(s, 1 << 20).map_err(|e| format!("{e:#}"))
}

/// clap value parser: a duration in seconds (`1.5`, `10`, `250ms`).
pub fn parse_secs(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (seconds, e.g. 1.5, 250ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(v * mult)
}

/// Round `x` up to a multiple of `align` (a power of two).
pub const fn align_up(x: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (x + align - 1) & !(align - 1)
}

/// Whether `x` is a multiple of `align` (a power of two).
pub const fn is_aligned(x: u64, align: u64) -> bool {
    x & (align - 1) == 0
}

/// The page order of a mapping size: 4 KiB -> 0, 2 MiB -> 9, 1 GiB -> 18.
/// `None` if `size` is not a power-of-two multiple of the page size.
pub fn order_of(size: usize) -> Option<u32> {
    if size < PAGE_SIZE || !size.is_power_of_two() {
        return None;
    }
    Some(size.trailing_zeros() - PAGE_SIZE.trailing_zeros())
}

/// Split `total` pages over `parts` files as evenly as possible; the first
/// `total % parts` files get one extra page.
pub fn split_pages(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// A kernel release split into numbers, e.g. "6.12.117+deb12-amd64" ->
/// (6, 12, 117).
pub fn parse_release(release: &str) -> Option<(u32, u32, u32)> {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    // The patch level is optional ("7.3-rc1").
    let rest = &release[release.find('.')? + 1..];
    let patch = rest
        .find('.')
        .and_then(|i| {
            let p: String = rest[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            p.parse().ok()
        })
        .unwrap_or(0);
    Some((major, minor, patch))
}

/// Symbolic name of an errno value (the ones these scenarios can meet).
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EUCLEAN => "EUCLEAN",
        libc::EHWPOISON => "EHWPOISON",
        _ => "E?",
    }
}

/// Smallest power of two >= `x` (and >= `min`).
pub fn pow2_at_least(x: usize, min: usize) -> usize {
    x.max(min).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096", 1).unwrap(), 4096);
        assert_eq!(parse_size("4k", 1).unwrap(), 4096);
        assert_eq!(parse_size("4K", 1).unwrap(), 4096);
        assert_eq!(parse_size("2M", 1).unwrap(), 2 << 20);
        assert_eq!(parse_size("2MiB", 1).unwrap(), 2 << 20);
        assert_eq!(parse_size("2mb", 1).unwrap(), 2 << 20);
        assert_eq!(parse_size("1G", 1).unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5M", 1).unwrap(), 3 << 19);
        assert_eq!(parse_size("64", 1 << 20).unwrap(), 64 << 20);
        assert_eq!(parse_size("3pages", 1).unwrap(), 3 * 4096);
        assert_eq!(parse_size("1_024", 1).unwrap(), 1024);
        assert_eq!(parse_size(" 8 k ", 1).unwrap(), 8192);
        assert!(parse_size("", 1).is_err());
        assert!(parse_size("M", 1).is_err());
        assert!(parse_size("4x", 1).is_err());
        assert!(parse_size("0.3", 1).is_err());
        assert!(parse_size("99999999999999999999T", 1).is_err());
        assert!(parse_size("20000000T", 1).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_secs("1.5").unwrap(), 1.5);
        assert_eq!(parse_secs("250ms").unwrap(), 0.25);
        assert_eq!(parse_secs("2m").unwrap(), 120.0);
        assert_eq!(parse_secs("3s").unwrap(), 3.0);
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("abc").is_err());
    }

    #[test]
    fn alignment() {
        assert_eq!(align_up(0, 4096), 0);
        assert_eq!(align_up(1, 4096), 4096);
        assert_eq!(align_up(4096, 4096), 4096);
        assert_eq!(align_up(0x7f00_0000_1000, PMD_SIZE), 0x7f00_0020_0000);
        assert!(is_aligned(0x40_0000, PMD_SIZE as u64));
        assert!(!is_aligned(0x40_1000, PMD_SIZE as u64));
        assert_eq!(order_of(4096), Some(0));
        assert_eq!(order_of(PMD_SIZE), Some(9));
        assert_eq!(order_of(1 << 30), Some(18));
        assert_eq!(order_of(3 * 4096), None);
        assert_eq!(order_of(512), None);
        assert_eq!(PMD_PAGES, 512);
        assert_eq!(pow2_at_least(5 * 4096, 65536), 65536);
        assert_eq!(pow2_at_least(300 * 4096, 65536), 512 * 4096);
    }

    #[test]
    fn splitting() {
        assert_eq!(split_pages(8, 1), vec![8]);
        assert_eq!(split_pages(8, 2), vec![4, 4]);
        assert_eq!(split_pages(7, 3), vec![3, 2, 2]);
        assert_eq!(split_pages(1, 3), vec![1, 0, 0]);
        assert_eq!(split_pages(5, 0), vec![5]);
    }

    #[test]
    fn releases() {
        assert_eq!(parse_release("6.12.117+deb12-amd64"), Some((6, 12, 117)));
        assert_eq!(parse_release("6.1.0-56-amd64"), Some((6, 1, 0)));
        assert_eq!(parse_release("7.3.4+deb13-amd64"), Some((7, 3, 4)));
        assert_eq!(parse_release("6.18.44-fc-v769"), Some((6, 18, 44)));
        assert_eq!(parse_release("7.3-rc1"), Some((7, 3, 0)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn errnos() {
        assert_eq!(errno_name(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(errno_name(libc::EFAULT), "EFAULT");
        assert_eq!(errno_name(9999), "E?");
    }
}
