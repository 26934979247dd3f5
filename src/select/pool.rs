//! Pure functions that choose among a pool of candidate coordinates (MLLM samples, retrieved
//! GPS, or both).
//!
//! Distances are great-circle distances on a sphere of radius [`EARTH_RADIUS_KM`]
//! ([`haversine_km`]), so candidates on either side of the antimeridian (lon 179.9 and -179.9)
//! are 22 km apart at the equator, not 40 000 km. Every function is deterministic, never
//! panics, and returns `None` for an empty pool. All of them except [`geometric_median`] return
//! indices into the pool, so the chosen coordinate is always one of the candidates;
//! [`geometric_median`] returns a new coordinate.
//!
//! Costs: [`medoid`] and [`largest_cluster`] compute all pairwise distances (O(n²));
//! [`geometric_median`] adds O(n) per iteration, at most 1000 iterations.

use crate::metrics::{EARTH_RADIUS_KM, haversine_km};
use crate::record::LatLon;

/// Summed distances closer than this (km) count as a tie in [`medoid`].
const TIE_KM: f64 = 1e-9;

/// Most Weiszfeld iterations [`geometric_median`] runs.
const MEDIAN_MAX_ITER: usize = 1000;

/// [`geometric_median`] stops when an iteration moves the estimate less than this (unit-sphere
/// chord, about 6 µm on the Earth).
const MEDIAN_TOL: f64 = 1e-12;

/// Unit vectors closer than this (chord) are the same point.
const COINCIDE: f64 = 1e-12;

/// Index of the first candidate (`None` if empty).
pub fn first(c: &[LatLon]) -> Option<usize> {
    (!c.is_empty()).then_some(0)
}

/// Medoid: the candidate with the least summed haversine distance to the others (ties: lowest
/// index; sums within 1e-9 km count as tied). `None` if empty.
pub fn medoid(c: &[LatLon]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &p) in c.iter().enumerate() {
        let sum: f64 = c.iter().map(|&q| haversine_km(p, q, EARTH_RADIUS_KM)).sum();
        if best.is_none_or(|(_, b)| sum < b - TIE_KM) {
            best = Some((i, sum));
        }
    }
    best.map(|(i, _)| i)
}

type V3 = [f64; 3];

fn to_v3(p: LatLon) -> V3 {
    let (phi, lam) = (p.lat.to_radians(), p.lon.to_radians());
    [phi.cos() * lam.cos(), phi.cos() * lam.sin(), phi.sin()]
}

fn to_latlon(v: V3) -> LatLon {
    let lat = v[2].clamp(-1.0, 1.0).asin().to_degrees();
    let lon = v[1].atan2(v[0]).to_degrees();
    LatLon { lat: lat.clamp(-90.0, 90.0), lon: lon.clamp(-180.0, 180.0) }
}

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

fn scale(a: V3, k: f64) -> V3 {
    [a[0] * k, a[1] * k, a[2] * k]
}

fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn chord_sum(y: V3, xs: &[V3]) -> f64 {
    xs.iter().map(|&x| norm(sub(x, y))).sum()
}

/// Geometric median on the sphere: a coordinate (not necessarily a candidate) that minimises
/// the summed distance to the candidates. `None` if empty; the candidate itself for one
/// candidate; the medoid (the first candidate) for two, where every point of the arc between
/// them is a minimiser.
///
/// **Approximation.** The function minimises the summed *chordal* (straight-line, through the
/// Earth) distance between unit vectors, over points on the sphere, not the summed great-circle
/// distance. Chord = 2 sin(d / 2) for an arc of d radians, so the two objectives agree to
/// relative order d² / 24: for candidates spread over a few hundred km the results differ by
/// metres; for candidates spread over continents the chordal median is pulled less by far
/// outliers than a great-circle one would be, and the two can differ materially.
///
/// **Method.** Projected Weiszfeld iterations, started from the [`medoid`]: with weights
/// wᵢ = 1 / ‖xᵢ − y‖, the next estimate is Σ wᵢ xᵢ normalised back onto the unit sphere. Each
/// step minimises a quadratic majoriser of the summed chord over the sphere, so the summed
/// chord never increases. When the estimate sits on a candidate (where the weight is
/// undefined, as at the start), the candidate is kept if it satisfies the optimality condition
/// (‖tangential part of Σ over the other candidates of unit vectors towards them‖ ≤ the number
/// of candidates at that point); otherwise a backtracking step along the great circle in that
/// descent direction leaves it. Iterations stop after 1000, when a step moves
/// less than 1e-12 (unit chord), or when the weighted sum vanishes (e.g. antipodal pairs). Finally,
/// if some candidate has a summed chord no larger than the estimate's, that candidate's exact
/// coordinate is returned instead, so the result is never worse than the best candidate.
pub fn geometric_median(c: &[LatLon]) -> Option<LatLon> {
    let m = medoid(c)?;
    if c.len() <= 2 {
        return Some(c[m]);
    }
    let xs: Vec<V3> = c.iter().map(|&p| to_v3(p)).collect();
    let mut y = xs[m];
    for _ in 0..MEDIAN_MAX_ITER {
        let coincident = xs.iter().filter(|&&x| norm(sub(x, y)) < COINCIDE).count();
        let next = if coincident > 0 {
            match leave_candidate(y, &xs, coincident) {
                Some(next) => next,
                None => break, // optimal at this candidate
            }
        } else {
            let mut acc = [0.0; 3];
            for &x in &xs {
                acc = add(acc, scale(x, 1.0 / norm(sub(x, y))));
            }
            let n = norm(acc);
            if !n.is_finite() || n <= 1e-300 {
                break;
            }
            scale(acc, 1.0 / n)
        };
        let step = norm(sub(next, y));
        y = next;
        if step < MEDIAN_TOL {
            break;
        }
    }
    let f = chord_sum(y, &xs);
    let best = (0..xs.len())
        .map(|k| (k, chord_sum(xs[k], &xs)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
        .expect("non-empty");
    if best.1 <= f {
        return Some(c[best.0]);
    }
    Some(to_latlon(y))
}

/// At a candidate `y` (held by `eta` candidates): `None` if `y` minimises the summed chord on
/// the sphere, else a point along the steepest-descent great circle with a smaller sum.
fn leave_candidate(y: V3, xs: &[V3], eta: usize) -> Option<V3> {
    let mut r = [0.0; 3];
    let mut nearest = f64::INFINITY;
    for &x in xs {
        let d = norm(sub(x, y));
        if d >= COINCIDE {
            r = add(r, scale(sub(x, y), 1.0 / d));
            nearest = nearest.min(d);
        }
    }
    let rt = sub(r, scale(y, dot(r, y)));
    let nrt = norm(rt);
    if nrt <= eta as f64 || !nearest.is_finite() {
        return None;
    }
    let u = scale(rt, 1.0 / nrt);
    let f0 = chord_sum(y, xs);
    let mut t = nearest; // an angle (radians) about the chord to the nearest other candidate
    for _ in 0..60 {
        let cand = add(scale(y, t.cos()), scale(u, t.sin()));
        let cand = scale(cand, 1.0 / norm(cand));
        if chord_sum(cand, xs) < f0 {
            return Some(cand);
        }
        t *= 0.5;
    }
    None
}

/// DBSCAN over great-circle distance; the indices (ascending) of the largest cluster.
///
/// Two candidates are neighbours when their haversine distance is `<= eps_km` (inclusive, like
/// scikit-learn's radius query); a candidate always neighbours itself, and counts itself
/// towards `min_samples`, as in scikit-learn. A core point has at least `min_samples`
/// neighbours (so with `min_samples <= 1` every point is core and none is noise). Clusters are
/// grown from core points in index order; a border point (not core, but the neighbour of a
/// core point) joins the first cluster that reaches it, as in scikit-learn.
///
/// Returns the largest cluster (ties: the cluster containing the lowest index), or `None` when
/// the pool is empty or every point is noise. A non-finite or negative `eps_km` makes every
/// point its own only neighbour. DualGeo's setting: `eps_km = 50.0`, `min_samples = 2`.
pub fn largest_cluster(c: &[LatLon], eps_km: f64, min_samples: usize) -> Option<Vec<usize>> {
    let n = c.len();
    let neighbours: Vec<Vec<usize>> = (0..n)
        .map(|i| (0..n).filter(|&j| j == i || haversine_km(c[i], c[j], EARTH_RADIUS_KM) <= eps_km).collect())
        .collect();
    let core: Vec<bool> = neighbours.iter().map(|nb| nb.len() >= min_samples).collect();
    let mut assigned = vec![false; n];
    let mut clusters: Vec<Vec<usize>> = Vec::new();
    for seed in 0..n {
        if !core[seed] || assigned[seed] {
            continue;
        }
        assigned[seed] = true;
        let mut members = Vec::new();
        let mut stack = vec![seed];
        while let Some(p) = stack.pop() {
            members.push(p);
            if core[p] {
                for &q in &neighbours[p] {
                    if !assigned[q] {
                        assigned[q] = true;
                        stack.push(q);
                    }
                }
            }
        }
        members.sort_unstable();
        clusters.push(members);
    }
    // Clusters are disjoint and non-empty, so their first elements differ.
    clusters.into_iter().max_by(|a, b| a.len().cmp(&b.len()).then(b[0].cmp(&a[0])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    fn km(a: LatLon, b: LatLon) -> f64 {
        haversine_km(a, b, EARTH_RADIUS_KM)
    }

    fn sum_km(y: LatLon, c: &[LatLon]) -> f64 {
        c.iter().map(|&q| km(y, q)).sum()
    }

    const PARIS: (f64, f64) = (48.8566, 2.3522);
    const SYDNEY: (f64, f64) = (-33.8688, 151.2093);

    /// Paris cluster (indices 1, 2, 4, 5) interleaved with two Sydney points (0, 3) and Tokyo (6).
    fn paris_vs_sydney() -> Vec<LatLon> {
        vec![
            p(SYDNEY.0, SYDNEY.1),
            p(PARIS.0, PARIS.1),
            p(48.8606, 2.3376),    // Louvre, ~1.1 km
            p(-33.8568, 151.2153), // Opera House, ~1.5 km from Sydney
            p(48.8584, 2.2945),    // Eiffel Tower, ~4.2 km
            p(48.8049, 2.1204),    // Versailles, ~17 km
            p(35.6762, 139.6503),  // Tokyo
        ]
    }

    #[test]
    fn first_is_index_zero() {
        assert_eq!(first(&[]), None);
        assert_eq!(first(&[p(1.0, 2.0)]), Some(0));
        assert_eq!(first(&paris_vs_sydney()), Some(0));
    }

    #[test]
    fn medoid_cases() {
        assert_eq!(medoid(&[]), None);
        assert_eq!(medoid(&[p(10.0, 20.0)]), Some(0));
        // Paris majority: the medoid is a central Paris point, not Sydney (0) or Versailles (5).
        let c = paris_vs_sydney();
        let m = medoid(&c).unwrap();
        assert!([1, 2, 4].contains(&m), "{m}");
        assert!((0..c.len()).all(|k| sum_km(c[m], &c) <= sum_km(c[k], &c)));
        // A centre point with one neighbour 5.6 km north and one south (the far outliers above
        // are not negligible: moving north brings Paris closer to Tokyo).
        let c = [p(48.90, 2.35), p(48.85, 2.35), p(48.80, 2.35)];
        assert_eq!(medoid(&c), Some(1));
        // Ties: two points, and two copies equidistant from an outlier.
        assert_eq!(medoid(&[p(0.0, 0.0), p(0.0, 1.0)]), Some(0));
        assert_eq!(medoid(&[p(40.0, 10.0), p(0.0, 0.0), p(0.0, 0.0)]), Some(1));
        // Antimeridian: -179.95 sits between 179.9 and -179.8 (0.15 degrees to each).
        let c = [p(0.0, 179.9), p(0.0, -179.8), p(0.0, -179.95)];
        assert_eq!(medoid(&c), Some(2));
    }

    #[test]
    fn median_empty_single_pair() {
        assert_eq!(geometric_median(&[]), None);
        assert_eq!(geometric_median(&[p(-12.5, 77.25)]), Some(p(-12.5, 77.25)));
        assert_eq!(geometric_median(&[p(1.0, 1.0), p(2.0, 2.0)]), Some(p(1.0, 1.0)));
    }

    #[test]
    fn median_of_a_square_is_its_centre_not_a_corner() {
        let (la, lo) = PARIS;
        let c = [p(la - 0.1, lo - 0.1), p(la - 0.1, lo + 0.1), p(la + 0.1, lo + 0.1), p(la + 0.1, lo - 0.1)];
        let m = geometric_median(&c).unwrap();
        assert!(km(m, p(la, lo)) < 0.2, "{m:?}");
        assert!((m.lon - lo).abs() < 1e-6, "symmetric in longitude: {m:?}");
        assert!(c.iter().all(|&q| km(m, q) > 5.0), "not a candidate: {m:?}");
        let medoid_sum = sum_km(c[medoid(&c).unwrap()], &c);
        assert!(sum_km(m, &c) < medoid_sum - 1.0, "{} vs {}", sum_km(m, &c), medoid_sum);
    }

    #[test]
    fn median_is_robust_to_outliers_and_near_the_brute_force_optimum() {
        let c = paris_vs_sydney();
        let m = geometric_median(&c).unwrap();
        // Four of seven candidates are in Paris: the median stays there.
        assert!(km(m, p(PARIS.0, PARIS.1)) < 20.0, "{m:?}");
        // Never worse (chordal objective) than the medoid it starts from.
        let xs: Vec<V3> = c.iter().map(|&q| to_v3(q)).collect();
        assert!(chord_sum(to_v3(m), &xs) <= chord_sum(xs[medoid(&c).unwrap()], &xs) + 1e-12);
        // Great-circle objective: within 0.1 % of a fine grid search around Paris.
        let mut best = f64::INFINITY;
        for i in -100..=100 {
            for j in -100..=100 {
                let q = p(48.7 + i as f64 * 0.003, 2.2 + j as f64 * 0.003);
                best = best.min(sum_km(q, &c));
            }
        }
        assert!(sum_km(m, &c) <= best * 1.001, "{} vs grid {}", sum_km(m, &c), best);
    }

    #[test]
    fn median_returns_a_candidate_when_that_is_optimal() {
        // Collinear on the equator: the middle point is the exact minimiser.
        let c = [p(0.0, 0.0), p(0.0, 1.0), p(0.0, 3.0)];
        assert_eq!(geometric_median(&c), Some(p(0.0, 1.0)));
        // Two copies of a point outweigh two spread points: the copies win exactly.
        let c = [p(10.0, 10.0), p(10.0, 10.0), p(10.0, 10.0), p(11.0, 10.0), p(10.0, 11.0)];
        assert_eq!(geometric_median(&c), Some(p(10.0, 10.0)));
    }

    #[test]
    fn median_across_the_antimeridian() {
        let c = [p(0.05, 179.9), p(-0.05, -179.9), p(0.0, 179.95), p(0.0, -179.85)];
        let m = geometric_median(&c).unwrap();
        assert!(m.lon.abs() > 179.8, "stays at the antimeridian: {m:?}");
        assert!(m.lat.abs() < 0.05, "{m:?}");
        assert!(c.iter().all(|&q| km(m, q) < 20.0));
    }

    #[test]
    fn median_of_antipodal_pair_plus_one_is_finite() {
        let c = [p(0.0, 0.0), p(0.0, 180.0), p(0.0, 90.0)];
        let m = geometric_median(&c).unwrap();
        assert!(LatLon::new(m.lat, m.lon).is_ok(), "{m:?}");
    }

    #[test]
    fn cluster_paris_beats_sydney() {
        let c = paris_vs_sydney();
        assert_eq!(largest_cluster(&c, 50.0, 2), Some(vec![1, 2, 4, 5]));
        // With a 10 km radius Versailles (17 km) drops out as noise.
        assert_eq!(largest_cluster(&c, 10.0, 2), Some(vec![1, 2, 4]));
        // min_samples counts the point itself: the two Sydney points alone form a cluster at 2...
        assert_eq!(
            largest_cluster(&c[..1].iter().chain(&c[3..4]).copied().collect::<Vec<_>>(), 50.0, 2),
            Some(vec![0, 1])
        );
        // ...but not at 3.
        assert_eq!(largest_cluster(&[c[0], c[3]], 50.0, 3), None);
    }

    #[test]
    fn cluster_ties_prefer_the_cluster_with_the_lowest_index() {
        // Sydney {0, 2} and Paris {1, 3}: equal size, index 0 is in Sydney.
        let c = [p(SYDNEY.0, SYDNEY.1), p(PARIS.0, PARIS.1), p(-33.8568, 151.2153), p(48.8606, 2.3376)];
        assert_eq!(largest_cluster(&c, 50.0, 2), Some(vec![0, 2]));
        let swapped = [c[1], c[0], c[3], c[2]];
        assert_eq!(largest_cluster(&swapped, 50.0, 2), Some(vec![0, 2]));
    }

    #[test]
    fn cluster_empty_single_and_all_noise() {
        assert_eq!(largest_cluster(&[], 50.0, 2), None);
        assert_eq!(largest_cluster(&[p(1.0, 1.0)], 50.0, 2), None);
        assert_eq!(largest_cluster(&[p(1.0, 1.0)], 50.0, 1), Some(vec![0]));
        assert_eq!(largest_cluster(&[p(1.0, 1.0)], 50.0, 0), Some(vec![0]));
        let spread = [p(0.0, 0.0), p(10.0, 10.0), p(-20.0, 50.0), p(60.0, -120.0)];
        assert_eq!(largest_cluster(&spread, 50.0, 2), None);
        // min_samples 1: every point is its own cluster; the tie goes to index 0.
        assert_eq!(largest_cluster(&spread, 50.0, 1), Some(vec![0]));
        // NaN radius: only self-neighbours.
        assert_eq!(largest_cluster(&[p(0.0, 0.0), p(0.0, 0.0)], f64::NAN, 2), None);
    }

    #[test]
    fn cluster_across_the_antimeridian() {
        let c = [p(0.0, 179.9), p(10.0, 0.0), p(0.0, -179.9)];
        assert!(km(c[0], c[2]) < 25.0);
        assert_eq!(largest_cluster(&c, 50.0, 2), Some(vec![0, 2]));
    }

    #[test]
    fn cluster_eps_is_inclusive() {
        let c = [p(0.0, 0.0), p(0.0, 0.4)];
        let d = km(c[0], c[1]);
        assert_eq!(largest_cluster(&c, d, 2), Some(vec![0, 1]));
        assert_eq!(largest_cluster(&c, d * (1.0 - 1e-9), 2), None);
    }

    #[test]
    fn cluster_chains_and_border_points() {
        // A chain 40 km per step: ends 80 km apart, one cluster through the middle.
        let step = 40.0 / 111.195; // degrees of longitude at the equator
        let chain = [p(0.0, 0.0), p(0.0, step), p(0.0, 2.0 * step)];
        assert!(km(chain[0], chain[2]) > 50.0);
        assert_eq!(largest_cluster(&chain, 50.0, 2), Some(vec![0, 1, 2]));
        // min_samples 3: only the middle is core; the ends join as border points.
        assert_eq!(largest_cluster(&chain, 50.0, 3), Some(vec![0, 1, 2]));
        // A point 40 km beyond an end is reached from a border point only: noise.
        let longer = [chain[0], chain[1], chain[2], p(0.0, 3.0 * step)];
        // Now points 1 and 2 are core (3 neighbours each): everything is one cluster.
        assert_eq!(largest_cluster(&longer, 50.0, 3), Some(vec![0, 1, 2, 3]));
        // On the equator, km from the origin: L2 -11, L1 -10, P 0, B 45, C 90 (min_samples 4).
        // Only P is core ({L2, L1, P, B}); B is a border point of P ({P, B, C}: 3 < 4); C
        // neighbours only the border point B, so it is noise.
        let x = |k: f64| p(0.0, k / 111.195);
        let line = [x(-11.0), x(-10.0), x(0.0), x(45.0), x(90.0)];
        assert!(km(line[1], line[3]) > 50.0 && km(line[3], line[4]) < 50.0);
        assert_eq!(largest_cluster(&line, 50.0, 4), Some(vec![0, 1, 2, 3]));
    }
}
