//! Paired comparison of two methods on the same images: McNemar's test on per-image hits.
//!
//! Only the discordant pairs carry information: `b` images hit by A and missed by B, `c` images
//! missed by A and hit by B. Under the null hypothesis (equal accuracy) `b ~ Binomial(b + c, 1/2)`.
//! The p-value is the exact two-sided binomial one (no normal approximation, valid for any
//! `b + c`), computed in log space so that it stays exact for millions of images.

use serde::{Deserialize, Serialize};

/// Result of McNemar's exact test for one threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Images scored by both runs.
    pub n: usize,
    /// Hits of A and of B.
    pub hits_a: usize,
    pub hits_b: usize,
    /// A hit, B miss.
    pub b: usize,
    /// A miss, B hit.
    pub c: usize,
    /// Accuracy difference B - A in percentage points: 100 (c - b) / n.
    pub diff_pp: f64,
    /// 95 % Wald interval of the paired difference (percentage points):
    /// (c - b)/n ± z sqrt(b + c - (c - b)^2 / n) / n.
    pub diff_ci95_pp: [f64; 2],
    /// Exact two-sided p-value: min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2).
    pub p_value: f64,
}

/// McNemar's exact test from paired per-image hits (`a[i]`, `b[i]` for the same image).
pub fn mcnemar(hits_a: &[bool], hits_b: &[bool]) -> McNemar {
    assert_eq!(hits_a.len(), hits_b.len(), "paired hits must have the same length");
    let n = hits_a.len();
    let (mut b, mut c, mut ha, mut hb) = (0usize, 0usize, 0usize, 0usize);
    for (&x, &y) in hits_a.iter().zip(hits_b) {
        ha += x as usize;
        hb += y as usize;
        match (x, y) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    mcnemar_counts(n, ha, hb, b, c)
}

/// McNemar's exact test from counts (see [`McNemar`] for the meaning of each).
pub fn mcnemar_counts(n: usize, hits_a: usize, hits_b: usize, b: usize, c: usize) -> McNemar {
    let (diff_pp, diff_ci95_pp) = if n == 0 {
        (0.0, [0.0, 0.0])
    } else {
        let nf = n as f64;
        let d = (c as f64 - b as f64) / nf;
        let var = ((b + c) as f64 - (c as f64 - b as f64).powi(2) / nf).max(0.0);
        let half = super::interval::Z95 * var.sqrt() / nf;
        (100.0 * d, [100.0 * (d - half), 100.0 * (d + half)])
    };
    McNemar { n, hits_a, hits_b, b, c, diff_pp, diff_ci95_pp, p_value: exact_two_sided_p(b, c) }
}

/// min(1, 2 P(X <= min(b, c))) for X ~ Binomial(b + c, 1/2); 1 when b + c = 0.
pub fn exact_two_sided_p(b: usize, c: usize) -> f64 {
    let m = b + c;
    if m == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // log pmf(i) = ln C(m, i) - m ln 2, accumulated with a running log-sum-exp.
    let ln2m = m as f64 * std::f64::consts::LN_2;
    let mut ln_c = 0.0f64; // ln C(m, 0)
    let mut acc = f64::NEG_INFINITY;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((m - i + 1) as f64).ln() - (i as f64).ln();
        }
        let term = ln_c - ln2m;
        acc = log_add(acc, term);
    }
    (2.0 * acc.exp()).min(1.0)
}

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from scipy.stats.binomtest(k, n, 0.5).pvalue (two-sided, symmetric):
    /// (b, c) = (2, 8) -> 0.109375; (0, 5) -> 0.0625; (10, 10) -> 1.0; (1, 0) -> 1.0.
    #[test]
    fn exact_p_matches_binomial_reference() {
        assert!((exact_two_sided_p(2, 8) - 0.109375).abs() < 1e-12);
        assert!((exact_two_sided_p(0, 5) - 0.0625).abs() < 1e-12);
        assert_eq!(exact_two_sided_p(10, 10), 1.0);
        assert_eq!(exact_two_sided_p(1, 0), 1.0);
        assert_eq!(exact_two_sided_p(0, 0), 1.0);
        // Large counts do not underflow: 2 P(X <= 4900) for X ~ Bin(10000, 1/2) =
        // 0.0465855277 (exact rational sum with Python's math.comb).
        let p = exact_two_sided_p(4900, 5100);
        assert!((p - 0.046_585_527_7).abs() < 1e-8, "{p}");
    }

    #[test]
    fn counts_and_difference() {
        let a = [true, true, false, false, true];
        let b = [true, false, true, true, true];
        let m = mcnemar(&a, &b);
        assert_eq!((m.n, m.hits_a, m.hits_b, m.b, m.c), (5, 3, 4, 1, 2));
        assert!((m.diff_pp - 20.0).abs() < 1e-12);
        assert!(m.diff_ci95_pp[0] < m.diff_pp && m.diff_pp < m.diff_ci95_pp[1]);
    }
}
