//! Medians and spreads of repeated measurements.

use serde::Serialize;

/// The median of several measurements and their range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many measurements.
    pub n: usize,
}

impl Spread {
    /// The same measurements through `f`, which must not decrease (a
    /// scale or a shift): median, minimum and maximum map to theirs.
    pub fn map(self, f: impl Fn(f64) -> f64) -> Spread {
        Spread {
            median: f(self.median),
            min: f(self.min),
            max: f(self.max),
            n: self.n,
        }
    }

    /// Whether the ranges `[min, max]` of the two share a value: then the
    /// measurements do not separate them, whatever the medians say.
    pub fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// `0.93 [0.90–0.97]`, with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        if self.n == 1 {
            return format!("{:.digits$}", self.median);
        }
        format!(
            "{:.digits$} [{:.digits$}–{:.digits$}]",
            self.median, self.min, self.max
        )
    }
}

/// Median (mean of the middle two for an even count); `None` when empty or
/// when a value is not finite.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

pub fn spread(xs: &[f64]) -> Option<Spread> {
    let median = median(xs)?;
    Some(Spread {
        median,
        min: xs.iter().copied().fold(f64::INFINITY, f64::min),
        max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        n: xs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, f64::NAN]), None);
        let s = spread(&[0.9, 1.0, 0.8]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (0.9, 0.8, 1.0, 3));
        assert_eq!(s.show(2), "0.90 [0.80–1.00]");
        assert_eq!(spread(&[0.5]).unwrap().show(2), "0.50");
        let t = s.map(|x| x / 2.0 + 0.1);
        assert_eq!((t.median, t.min, t.max, t.n), (0.55, 0.5, 0.6, 3));
        let other = spread(&[1.05, 1.2]).unwrap();
        assert!(!s.overlaps(&other) && !other.overlaps(&s));
        let touching = spread(&[1.0, 1.2]).unwrap();
        assert!(s.overlaps(&touching) && touching.overlaps(&s));
        assert!(s.overlaps(&spread(&[0.85]).unwrap()));
    }
}
