//! Confidence intervals for proportions.

/// Two-sided 95 % normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval for `k` successes in `n` trials, as fractions in [0, 1].
/// `(0, 1)` when `n == 0` (nothing is known).
pub fn wilson(k: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n_f = n as f64;
    let p = k as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    // At k = 0 (k = n) the lower (upper) bound is exactly 0 (1); the closed form leaves a
    // rounding residue such as 5.6e-15 there.
    let lo = if k == 0 { 0.0 } else { (centre - half).max(0.0) };
    let hi = if k >= n { 1.0 } else { (centre + half).min(1.0) };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    /// Reference values for 13/100 from the closed form evaluated independently in Python:
    /// (0.077572, 0.209804).
    #[test]
    fn wilson_matches_reference() {
        let (lo, hi) = wilson(13, 100, Z95);
        assert!((lo - 0.07757).abs() < 1e-4 && (hi - 0.20980).abs() < 1e-4, "{lo} {hi}");
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
        let (lo, _) = wilson(0, 10, Z95);
        assert_eq!(lo, 0.0);
        for n in 1..200 {
            assert_eq!(wilson(0, n, Z95).0, 0.0, "n = {n}");
            assert_eq!(wilson(n, n, Z95).1, 1.0, "n = {n}");
        }
    }
}
