//! Per-region analysis: accuracy by continent and by country of the ground truth, and the share
//! of predictions that land in the right country (as OSV-5M reports it).
//!
//! The reverse geocoder is offline: the `country-boundaries` crate's 360x180 raster of
//! simplified country boundaries (derived from OpenStreetMap, ODbL, © OpenStreetMap
//! contributors), embedded in the binary. Country codes are ISO 3166-1 alpha-2; names and
//! continents come from `countries.tsv` beside this file.
//!
//! Invariants:
//! - every region row uses the same per-image scores as the method's metrics row (the same
//!   convention: a failure is a miss, dropped, or scored at (0, 0) as the run declared), so the
//!   per-country counts add up to the metrics row's `n_scored`;
//! - a ground truth that no country contains (sea, or a coast the simplified boundaries miss) is
//!   its own row, [`NO_COUNTRY`], never guessed;
//! - intervals are 95 % Wilson intervals ([`crate::metrics::interval`]) on each region's own n.

pub mod outline;

use crate::metrics::interval::{self, Z95};
use crate::metrics::{Convention, Scored};
use crate::record::{LatLon, PredictionRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// Code of the row for ground truths outside every country of the boundaries data.
pub const NO_COUNTRY: &str = "--";
/// A country needs at least this many scored images to enter the best/worst ranking.
pub const MIN_RANKED_N: usize = 10;
/// Attribution of the boundaries data, shown under every region table.
pub const ATTRIBUTION: &str = "countries from the `country-boundaries` crate's offline raster (simplified borders derived from OpenStreetMap, ODbL, © OpenStreetMap contributors)";

/// A continent (the seven-continent model; Russia, Turkey etc. as `pycountry-convert` assigns them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Continent {
    Africa,
    Antarctica,
    Asia,
    Europe,
    NorthAmerica,
    Oceania,
    SouthAmerica,
}

impl Continent {
    fn from_code(c: &str) -> Option<Continent> {
        Some(match c {
            "AF" => Continent::Africa,
            "AN" => Continent::Antarctica,
            "AS" => Continent::Asia,
            "EU" => Continent::Europe,
            "NA" => Continent::NorthAmerica,
            "OC" => Continent::Oceania,
            "SA" => Continent::SouthAmerica,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Continent::Africa => "Africa",
            Continent::Antarctica => "Antarctica",
            Continent::Asia => "Asia",
            Continent::Europe => "Europe",
            Continent::NorthAmerica => "North America",
            Continent::Oceania => "Oceania",
            Continent::SouthAmerica => "South America",
        }
    }
}

/// One country of `countries.tsv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Country {
    pub code: &'static str,
    pub name: &'static str,
    pub continent: Continent,
    /// ISO 3166-1 numeric code (`-` when it has none, as Kosovo).
    pub numeric: &'static str,
}

const COUNTRIES_TSV: &str = include_str!("countries.tsv");

fn countries() -> &'static HashMap<&'static str, Country> {
    static C: OnceLock<HashMap<&'static str, Country>> = OnceLock::new();
    C.get_or_init(|| {
        COUNTRIES_TSV
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let mut f = l.split('\t');
                let (code, name, cont, numeric) = (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or("-"));
                let continent = Continent::from_code(cont).unwrap_or_else(|| panic!("countries.tsv: bad continent in `{l}`"));
                (code, Country { code, name, continent, numeric })
            })
            .collect()
    })
}

/// The `countries.tsv` row of an alpha-2 code.
pub fn country_by_code(code: &str) -> Option<Country> {
    countries().get(code).copied()
}

/// ISO 3166-1 numeric code -> alpha-2 code, for the countries that have one.
fn numeric_codes() -> &'static HashMap<&'static str, &'static str> {
    static N: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    N.get_or_init(|| countries().values().filter(|c| c.numeric != "-").map(|c| (c.numeric, c.code)).collect())
}

fn boundaries() -> &'static country_boundaries::CountryBoundaries {
    static B: OnceLock<country_boundaries::CountryBoundaries> = OnceLock::new();
    B.get_or_init(|| {
        country_boundaries::CountryBoundaries::from_reader(country_boundaries::BOUNDARIES_ODBL_360X180)
            .expect("the country-boundaries crate's embedded data is readable")
    })
}

/// The country containing `p`, if any. Subdivision ids (`US-TX`) are skipped; among country
/// ids the smallest area wins (an enclave before the country around it).
pub fn country_of(p: LatLon) -> Option<Country> {
    let ll = country_boundaries::LatLon::new(p.lat, p.lon).ok()?;
    let ids = boundaries().ids(ll);
    // A code countries.tsv lacked would fall through to the next id; a unit test checks that
    // every country code of the data has a row.
    ids.iter().filter(|id| !id.contains('-')).find_map(|id| countries().get(id).copied())
}

/// The country code of `p`, or [`NO_COUNTRY`].
pub fn country_code(p: LatLon) -> &'static str {
    country_of(p).map(|c| c.code).unwrap_or(NO_COUNTRY)
}

/// Which grouping a [`RegionRow`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Continent,
    Country,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Continent => "continent",
            Level::Country => "country",
        }
    }
}

/// Accuracy of one method on the images whose ground truth lies in one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionRow {
    pub level: Level,
    /// ISO 3166-1 alpha-2 code, a continent name, or [`NO_COUNTRY`].
    pub code: String,
    pub name: String,
    /// Continent of a country row (empty for continent rows and [`NO_COUNTRY`]).
    pub continent: String,
    /// Images of the region in the evaluated set.
    pub n_expected: usize,
    /// The denominator (the images counted under the failure policy).
    pub n_scored: usize,
    /// Hits per threshold (same order as [`RegionAnalysis::thresholds_km`]).
    pub hits: Vec<usize>,
    /// 100 * hits / n_scored.
    pub acc_pct: Vec<f64>,
    /// 95 % Wilson interval of each accuracy, percent.
    pub ci95_pct: Vec<[f64; 2]>,
    /// Counted images whose prediction lies in the ground truth's country.
    pub same_country: usize,
    /// Denominator of `same_country`: counted images whose ground truth has a country.
    pub same_country_n: usize,
}

impl RegionRow {
    pub fn same_country_pct(&self) -> Option<f64> {
        (self.same_country_n > 0).then(|| 100.0 * self.same_country as f64 / self.same_country_n as f64)
    }
}

/// Per-region results of one method on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionAnalysis {
    pub method: String,
    pub dataset: String,
    pub thresholds_km: Vec<f64>,
    /// The threshold the best/worst ranking sorts by (750 km when the convention has it, else
    /// its largest threshold).
    pub rank_threshold_km: f64,
    /// Continents in name order, then the [`NO_COUNTRY`] row if any.
    pub continents: Vec<RegionRow>,
    /// Countries by descending n, then code.
    pub countries: Vec<RegionRow>,
    /// Over every counted image whose truth has a country: prediction in the same country.
    pub same_country: usize,
    pub same_country_n: usize,
}

#[derive(Default)]
struct Acc {
    n_expected: usize,
    n_scored: usize,
    hits: Vec<usize>,
    same: usize,
    same_n: usize,
}

impl Acc {
    fn row(&self, level: Level, code: &str, name: &str, continent: &str) -> RegionRow {
        let n = self.n_scored;
        RegionRow {
            level,
            code: code.into(),
            name: name.into(),
            continent: continent.into(),
            n_expected: self.n_expected,
            n_scored: n,
            hits: self.hits.clone(),
            acc_pct: self.hits.iter().map(|&k| if n == 0 { 0.0 } else { 100.0 * k as f64 / n as f64 }).collect(),
            ci95_pct: self
                .hits
                .iter()
                .map(|&k| {
                    let (lo, hi) = interval::wilson(k, n, Z95);
                    [100.0 * lo, 100.0 * hi]
                })
                .collect(),
            same_country: self.same,
            same_country_n: self.same_n,
        }
    }
}

/// Group `records` (scored as `scored`, under `conv`) by the continent and country of their
/// ground truth.
pub fn analyse(method: &str, dataset: &str, records: &[PredictionRecord], scored: &[Scored], conv: &Convention) -> RegionAnalysis {
    let ts = &conv.thresholds_km;
    let mut by_country: BTreeMap<&'static str, Acc> = BTreeMap::new();
    let (mut same, mut same_n) = (0, 0);
    for (rec, s) in records.iter().zip(scored) {
        let truth = country_code(rec.truth);
        let a = by_country.entry(truth).or_insert_with(|| Acc { hits: vec![0; ts.len()], ..Acc::default() });
        a.n_expected += 1;
        if !s.counted {
            continue;
        }
        a.n_scored += 1;
        if let Some(d) = s.distance_km {
            for (h, &t) in a.hits.iter_mut().zip(ts) {
                *h += conv.threshold_op.hit(d, t) as usize;
            }
        }
        if truth != NO_COUNTRY {
            a.same_n += 1;
            same_n += 1;
            if rec.pred.is_some_and(|p| country_code(p) == truth) {
                a.same += 1;
                same += 1;
            }
        }
    }
    let mut by_continent: BTreeMap<String, Acc> = BTreeMap::new();
    let mut countries_out = Vec::new();
    for (code, a) in &by_country {
        let c = countries().get(code);
        let cont = c.map(|c| c.continent.name()).unwrap_or(NO_COUNTRY);
        let name = c.map(|c| c.name).unwrap_or("no country (sea, or outside the simplified borders)");
        countries_out.push(a.row(Level::Country, code, name, if c.is_some() { cont } else { "" }));
        let k = by_continent.entry(cont.to_string()).or_insert_with(|| Acc { hits: vec![0; ts.len()], ..Acc::default() });
        k.n_expected += a.n_expected;
        k.n_scored += a.n_scored;
        k.same += a.same;
        k.same_n += a.same_n;
        for (x, y) in k.hits.iter_mut().zip(&a.hits) {
            *x += y;
        }
    }
    countries_out.sort_by(|a, b| b.n_scored.cmp(&a.n_scored).then_with(|| a.code.cmp(&b.code)));
    let mut continents: Vec<RegionRow> = by_continent
        .iter()
        .map(|(name, a)| if name == NO_COUNTRY { a.row(Level::Continent, NO_COUNTRY, "no country", "") } else { a.row(Level::Continent, name, name, "") })
        .collect();
    continents.sort_by_key(|r| r.code == NO_COUNTRY);
    let rank_threshold_km = if ts.contains(&750.0) { 750.0 } else { ts.iter().copied().fold(f64::NAN, f64::max) };
    RegionAnalysis {
        method: method.into(),
        dataset: dataset.into(),
        thresholds_km: ts.clone(),
        rank_threshold_km,
        continents,
        countries: countries_out,
        same_country: same,
        same_country_n: same_n,
    }
}

impl RegionAnalysis {
    /// Countries with at least [`MIN_RANKED_N`] scored images, best first by accuracy at
    /// [`RegionAnalysis::rank_threshold_km`] (ties: larger n first, then code).
    pub fn ranked(&self) -> Vec<&RegionRow> {
        let Some(i) = self.thresholds_km.iter().position(|&t| t == self.rank_threshold_km) else { return vec![] };
        let mut v: Vec<&RegionRow> = self.countries.iter().filter(|r| r.code != NO_COUNTRY && r.n_scored >= MIN_RANKED_N).collect();
        v.sort_by(|a, b| b.acc_pct[i].total_cmp(&a.acc_pct[i]).then_with(|| b.n_scored.cmp(&a.n_scored)).then_with(|| a.code.cmp(&b.code)));
        v
    }

    /// The 10 best and the 10 worst ranked countries (the worst list leaves out those already
    /// among the best when fewer than 20 are ranked).
    pub fn best_and_worst(&self, k: usize) -> (Vec<&RegionRow>, Vec<&RegionRow>) {
        let r = self.ranked();
        let best: Vec<&RegionRow> = r.iter().take(k).copied().collect();
        let worst: Vec<&RegionRow> = r.iter().rev().take(k.min(r.len().saturating_sub(best.len()))).copied().collect();
        (best, worst)
    }

    pub fn same_country_pct(&self) -> Option<f64> {
        (self.same_country_n > 0).then(|| 100.0 * self.same_country as f64 / self.same_country_n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::score_records;
    use crate::record::Status;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon { lat, lon }
    }

    #[test]
    fn known_cities_are_in_their_countries() {
        for (p, code) in [
            (ll(48.8566, 2.3522), "FR"),
            (ll(52.52, 13.405), "DE"),
            (ll(35.6762, 139.6503), "JP"),
            (ll(-33.8688, 151.2093), "AU"),
            (ll(40.7128, -74.006), "US"),
            (ll(-22.9068, -43.1729), "BR"),
            (ll(30.0444, 31.2357), "EG"),
            (ll(41.9029, 12.4534), "VA"),
            (ll(41.8902, 12.4922), "IT"),
        ] {
            assert_eq!(country_code(p), code, "{p}");
        }
        assert_eq!(country_code(ll(-45.0, -120.0)), NO_COUNTRY, "South Pacific");
        assert_eq!(country_of(ll(48.8566, 2.3522)).unwrap().continent, Continent::Europe);
        assert_eq!(country_of(ll(-22.9068, -43.1729)).unwrap().continent, Continent::SouthAmerica);
    }

    #[test]
    fn every_country_of_the_boundaries_data_has_a_name() {
        let all = boundaries().intersecting_ids(country_boundaries::BoundingBox::new(-90.0, -180.0, 90.0, 180.0).unwrap());
        let missing: Vec<&&str> = all.iter().filter(|id| !id.contains('-') && !countries().contains_key(**id)).collect();
        assert!(missing.is_empty(), "codes without a countries.tsv row: {missing:?}");
    }

    /// Hand-made points in known countries: the per-country and per-continent counts,
    /// accuracies, intervals and same-country shares are exact.
    #[test]
    fn per_country_accuracy_is_exact() {
        let paris = ll(48.8566, 2.3522);
        let lyon = ll(45.764, 4.8357);
        let berlin = ll(52.52, 13.405);
        let tokyo = ll(35.6762, 139.6503);
        let ok = |id: &str, t, p| PredictionRecord::ok(id, t, p);
        let recs = vec![
            ok("fr1", paris, paris),                        // 0 km: hit everywhere, same country
            ok("fr2", paris, lyon),                         // ~392 km: hit at 750, same country
            ok("fr3", paris, berlin),                       // ~878 km: hit at 2500 only, wrong country
            PredictionRecord::failed("fr4", paris, Status::Unparseable), // a miss
            ok("de1", berlin, berlin),
            ok("de2", berlin, tokyo),                       // far, wrong country
            ok("jp1", tokyo, ll(35.0, 139.0)),              // ~95 km, same country
            ok("sea", ll(-45.0, -120.0), paris),               // no country
        ];
        let conv = Convention::default(); // 1 / 25 / 200 / 750 / 2500 km, <, failures miss
        let scored = score_records(&recs, &conv);
        let a = analyse("m", "d", &recs, &scored, &conv);
        let row = |code: &str| a.countries.iter().find(|r| r.code == code).unwrap_or_else(|| panic!("{code}"));
        let fr = row("FR");
        assert_eq!((fr.n_expected, fr.n_scored), (4, 4));
        assert_eq!(fr.hits, vec![1, 1, 1, 2, 3]);
        assert_eq!(fr.acc_pct, vec![25.0, 25.0, 25.0, 50.0, 75.0]);
        let (lo, hi) = interval::wilson(2, 4, Z95);
        assert_eq!(fr.ci95_pct[3], [100.0 * lo, 100.0 * hi]);
        assert_eq!((fr.same_country, fr.same_country_n), (2, 4));
        assert_eq!((fr.name.as_str(), fr.continent.as_str()), ("France", "Europe"));
        let de = row("DE");
        assert_eq!((de.n_scored, de.hits.clone(), de.same_country), (2, vec![1, 1, 1, 1, 1], 1));
        let jp = row("JP");
        assert_eq!((jp.hits.clone(), jp.same_country, jp.continent.as_str()), (vec![0, 0, 1, 1, 1], 1, "Asia"));
        let sea = row(NO_COUNTRY);
        assert_eq!((sea.n_scored, sea.same_country_n), (1, 0));
        // Countries by descending n.
        assert_eq!(a.countries.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(), vec!["FR", "DE", "--", "JP"]);
        let eu = a.continents.iter().find(|r| r.code == "Europe").unwrap();
        assert_eq!((eu.n_scored, eu.hits.clone(), eu.same_country, eu.same_country_n), (6, vec![2, 2, 2, 3, 4], 3, 6));
        assert_eq!(a.continents.last().unwrap().code, NO_COUNTRY);
        assert_eq!((a.same_country, a.same_country_n), (4, 7));
        // The per-country denominators add up to the metrics row's.
        let m = crate::metrics::summarize("m", "d", &recs, &scored, &conv);
        assert_eq!(a.countries.iter().map(|r| r.n_scored).sum::<usize>(), m.n_scored);
        // Under `drop` the failure leaves France's denominator.
        let drop = Convention { failures: crate::metrics::FailurePolicy::Drop, ..Convention::default() };
        let a = analyse("m", "d", &recs, &score_records(&recs, &drop), &drop);
        let fr = a.countries.iter().find(|r| r.code == "FR").unwrap();
        assert_eq!((fr.n_expected, fr.n_scored, fr.same_country_n), (4, 3, 3));
    }

    #[test]
    fn ranking_needs_enough_images_and_splits_best_from_worst() {
        let conv = Convention::default();
        let mut recs = Vec::new();
        // 12 images in France (all hits), 12 in Japan (none), 3 in Germany (too few to rank).
        for i in 0..12 {
            recs.push(PredictionRecord::ok(format!("f{i}"), ll(48.85, 2.35), ll(48.85, 2.35)));
            recs.push(PredictionRecord::ok(format!("j{i}"), ll(35.68, 139.65), ll(-33.0, -70.0)));
        }
        for i in 0..3 {
            recs.push(PredictionRecord::ok(format!("d{i}"), ll(52.52, 13.4), ll(52.52, 13.4)));
        }
        let a = analyse("m", "d", &recs, &score_records(&recs, &conv), &conv);
        assert_eq!(a.rank_threshold_km, 750.0);
        let (best, worst) = a.best_and_worst(10);
        assert_eq!(best.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(), vec!["FR", "JP"]);
        assert!(worst.is_empty(), "fewer than 20 ranked: no second list");
    }
}
