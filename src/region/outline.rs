//! World outlines for the map plots: Natural Earth's 1:110m countries (public domain), as the
//! `world-atlas` 2.0.2 npm package ships them (TopoJSON, embedded byte for byte; provenance and
//! licence in `world-atlas/README.md` beside this file).
//!
//! The plots draw land, coastlines and borders from it, and the country choropleth fills its
//! polygons. Which country a ground truth belongs to is decided elsewhere (the
//! `country-boundaries` raster, [`super::country_of`]); this module only joins its outlines to
//! those ISO alpha-2 codes, through the ISO 3166-1 numeric ids of the TopoJSON and the numeric
//! column of `countries.tsv`.
//!
//! Invariants:
//! - every outline with an id joins a row of `countries.tsv` (a unit test checks all 177); the
//!   three features Natural Earth leaves without an ISO id are joined by name to the code the
//!   boundaries raster gives their territory ([`UNCODED`]);
//! - coordinates are (longitude, latitude) in degrees, decoded exactly as TopoJSON's quantized
//!   delta arcs define them;
//! - the TopoJSON is spherical: Fiji's, Russia's and Antarctica's rings cross the antimeridian.
//!   [`CountryOutline::fill_rings`] are their planar equivalents on the equirectangular map:
//!   longitudes unwrapped, a ring around a pole closed along it, then clipped to [-180, 180]
//!   once per 360° shift it overlaps. Point lookups and fills use those rings;
//! - each arc is drawn once: a [`LineKind::Border`] when two countries share it, otherwise a
//!   [`LineKind::Coast`]; a line is broken where it jumps across the antimeridian and where it
//!   runs along it (the data's cut), which are not coasts;
//! - [`World::fill_order`] is largest country first, so an enclave (Lesotho in South Africa's
//!   hole, the only hole at this scale) is painted over the country around it.

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::OnceLock;

const TOPOJSON: &str = include_str!("world-atlas/countries-110m.json");

/// Natural Earth features without an ISO 3166-1 numeric id, and the code the
/// `country-boundaries` raster gives the territory they cover.
pub const UNCODED: [(&str, &str); 3] = [("Kosovo", "XK"), ("N. Cyprus", "CY"), ("Somaliland", "SO")];

/// (longitude, latitude) in degrees.
pub type Point = (f64, f64);

/// One country's outline.
#[derive(Clone, Debug)]
pub struct CountryOutline {
    /// ISO 3166-1 alpha-2 code, as [`super::country_code`] spells it.
    pub code: &'static str,
    /// Natural Earth's name.
    pub name: String,
    /// Polygons as the data has them (spherical rings), each an outer ring followed by its
    /// holes; rings are closed (last = first).
    pub polygons: Vec<Vec<Vec<Point>>>,
    /// The outer rings as planar polygons within [-180, 180] (see the module invariants).
    pub fill_rings: Vec<Vec<Point>>,
    /// The holes, likewise (none crosses the antimeridian at this scale).
    pub hole_rings: Vec<Vec<Point>>,
}

/// How a line of the outlines is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// Land against sea (an arc only one country uses).
    Coast,
    /// Between two countries.
    Border,
}

/// The decoded outlines.
#[derive(Debug)]
pub struct World {
    pub countries: Vec<CountryOutline>,
    /// Indexes into `countries`, largest outer area first.
    pub fill_order: Vec<usize>,
    /// Coastlines and borders, each a polyline.
    pub lines: Vec<(LineKind, Vec<Point>)>,
}

#[derive(Deserialize)]
struct Topology {
    transform: Transform,
    arcs: Vec<Vec<[i64; 2]>>,
    objects: Objects,
}

#[derive(Deserialize)]
struct Transform {
    scale: [f64; 2],
    translate: [f64; 2],
}

#[derive(Deserialize)]
struct Objects {
    countries: Collection,
}

#[derive(Deserialize)]
struct Collection {
    geometries: Vec<Geometry>,
}

#[derive(Deserialize)]
struct Props {
    name: String,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Geometry {
    Polygon { arcs: Vec<Vec<i64>>, id: Option<String>, properties: Props },
    MultiPolygon { arcs: Vec<Vec<Vec<i64>>>, id: Option<String>, properties: Props },
}

/// The outlines, decoded once.
pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| decode(TOPOJSON).unwrap_or_else(|e| panic!("src/region/world-atlas/countries-110m.json: {e}")))
}

/// Decode a world-atlas TopoJSON topology (its `countries` object).
fn decode(text: &str) -> Result<World, String> {
    let topo: Topology = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let [sx, sy] = topo.transform.scale;
    let [tx, ty] = topo.transform.translate;
    let arcs: Vec<Vec<Point>> = topo
        .arcs
        .iter()
        .map(|arc| {
            let (mut x, mut y) = (0i64, 0i64);
            arc.iter()
                .map(|&[dx, dy]| {
                    x += dx;
                    y += dy;
                    (x as f64 * sx + tx, y as f64 * sy + ty)
                })
                .collect()
        })
        .collect();
    let by_numeric = super::numeric_codes();
    let mut uses = vec![0u32; arcs.len()];
    let mut countries = Vec::new();
    for g in topo.objects.countries.geometries {
        let (polys, id, name) = match g {
            Geometry::Polygon { arcs, id, properties } => (vec![arcs], id, properties.name),
            Geometry::MultiPolygon { arcs, id, properties } => (arcs, id, properties.name),
        };
        let code = match &id {
            Some(id) => *by_numeric.get(id.as_str()).ok_or_else(|| format!("`{name}`: ISO numeric id {id} is not in countries.tsv"))?,
            None => UNCODED.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).ok_or_else(|| format!("`{name}` has no id and no entry in UNCODED"))?,
        };
        let mut polygons = Vec::with_capacity(polys.len());
        for rings in polys {
            let mut out = Vec::with_capacity(rings.len());
            for ring in rings {
                let mut pts: Vec<Point> = Vec::new();
                for &a in &ring {
                    let (i, rev) = if a >= 0 { (a as usize, false) } else { (!a as usize, true) };
                    let arc = arcs.get(i).ok_or_else(|| format!("`{name}`: arc {a} out of range"))?;
                    uses[i] += 1;
                    let skip = usize::from(!pts.is_empty());
                    if rev {
                        pts.extend(arc.iter().rev().skip(skip));
                    } else {
                        pts.extend(arc.iter().skip(skip));
                    }
                }
                if pts.len() < 4 || pts.first() != pts.last() {
                    return Err(format!("`{name}`: a ring of {} points is not closed", pts.len()));
                }
                out.push(pts);
            }
            polygons.push(out);
        }
        let fill_rings = polygons.iter().flat_map(|p| planar(&p[0])).collect();
        let hole_rings = polygons.iter().flat_map(|p| p[1..].iter().flat_map(|h| planar(h))).collect();
        countries.push(CountryOutline { code, name, polygons, fill_rings, hole_rings });
    }
    let area = |c: &CountryOutline| c.fill_rings.iter().map(|r| ring_area(r).abs()).sum::<f64>();
    let mut fill_order: Vec<usize> = (0..countries.len()).collect();
    fill_order.sort_by(|&a, &b| area(&countries[b]).total_cmp(&area(&countries[a])));
    let mut lines = Vec::new();
    for (arc, &n) in arcs.iter().zip(&uses) {
        let kind = if n >= 2 { LineKind::Border } else { LineKind::Coast };
        lines.extend(off_frame(arc).into_iter().map(|l| (kind, l)));
    }
    Ok(World { countries, fill_order, lines })
}

/// Split a polyline where it jumps across the antimeridian or runs along it; the pieces of
/// two or more points that remain.
fn off_frame(arc: &[Point]) -> Vec<Vec<Point>> {
    const EPS: f64 = 1e-6;
    let on_frame = |a: Point, b: Point| (a.0 - b.0).abs() > 180.0 || (a.0.abs() >= 180.0 - EPS && b.0.abs() >= 180.0 - EPS && (a.0 - b.0).abs() < EPS);
    let mut out = Vec::new();
    let mut cur: Vec<Point> = Vec::new();
    for w in arc.windows(2) {
        if on_frame(w[0], w[1]) {
            if cur.len() >= 2 {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
        } else {
            if cur.is_empty() {
                cur.push(w[0]);
            }
            cur.push(w[1]);
        }
    }
    if cur.len() >= 2 {
        out.push(cur);
    }
    out
}

/// A closed spherical ring as closed planar rings within longitude [-180, 180]: longitudes
/// unwrapped (each step taken the short way round), a ring that circles a pole closed along it,
/// then the copies at -360, 0 and +360 degrees clipped to the map.
fn planar(ring: &[Point]) -> Vec<Vec<Point>> {
    let mut u: Vec<Point> = Vec::with_capacity(ring.len() + 2);
    for &(lon, lat) in ring {
        let lon = match u.last() {
            Some(&(prev, _)) => lon + 360.0 * ((prev - lon) / 360.0).round(),
            None => lon,
        };
        u.push((lon, lat));
    }
    let (first, last) = (u[0], u[u.len() - 1]);
    if (last.0 - first.0).abs() > 180.0 {
        // Around a pole: down (or up) to it, along it, back to the start.
        let pole = if u.iter().map(|p| p.1).sum::<f64>() < 0.0 { -90.0 } else { 90.0 };
        u.push((last.0, pole));
        u.push((first.0, pole));
        u.push(first);
    }
    let (lo, hi) = u.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let mut out = Vec::new();
    for shift in [-360.0, 0.0, 360.0] {
        if hi + shift <= -180.0 || lo + shift >= 180.0 {
            continue;
        }
        let shifted: Vec<Point> = u.iter().map(|&(x, y)| (x + shift, y)).collect();
        let mut c = clip_x(&clip_x(&shifted, -180.0, false), 180.0, true);
        if c.len() >= 3 {
            c.push(c[0]);
            out.push(c);
        }
    }
    out
}

/// Sutherland-Hodgman: the part of a closed ring on one side of the meridian `x = c`
/// (`keep_le`: x <= c), as an open ring.
fn clip_x(ring: &[Point], c: f64, keep_le: bool) -> Vec<Point> {
    let open = if ring.len() > 1 && ring.first() == ring.last() { &ring[..ring.len() - 1] } else { ring };
    let inside = |p: Point| if keep_le { p.0 <= c } else { p.0 >= c };
    let cross = |a: Point, b: Point| (c, a.1 + (b.1 - a.1) * (c - a.0) / (b.0 - a.0));
    let mut out = Vec::with_capacity(open.len() + 4);
    for i in 0..open.len() {
        let (a, b) = (open[i], open[(i + 1) % open.len()]);
        match (inside(a), inside(b)) {
            (true, true) => out.push(b),
            (true, false) => out.push(cross(a, b)),
            (false, true) => {
                out.push(cross(a, b));
                out.push(b);
            }
            (false, false) => {}
        }
    }
    out
}

/// Signed area of a closed ring in square degrees (shoelace).
fn ring_area(r: &[Point]) -> f64 {
    r.windows(2).map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1).sum::<f64>() / 2.0
}

/// Whether `p` lies inside `ring` (even-odd rule).
fn in_ring(p: Point, ring: &[Point]) -> bool {
    let mut inside = false;
    for w in ring.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if (y0 > p.1) != (y1 > p.1) && p.0 < x0 + (p.1 - y0) * (x1 - x0) / (y1 - y0) {
            inside = !inside;
        }
    }
    inside
}

/// The outline containing `p` (lon, lat): inside an outer ring and none of its holes.
pub fn outline_at(p: Point) -> Option<&'static CountryOutline> {
    world().countries.iter().find(|c| c.fill_rings.iter().any(|r| in_ring(p, r)) && !c.hole_rings.iter().any(|h| in_ring(p, h)))
}

/// Codes of the countries that have an outline at this scale (small states such as Singapore or
/// Malta have none at 1:110m).
pub fn outlined_codes() -> &'static HashMap<&'static str, usize> {
    static C: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    C.get_or_init(|| world().countries.iter().enumerate().map(|(i, c)| (c.code, i)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LatLon;

    #[test]
    fn every_outline_decodes_and_joins_a_country() {
        let w = world();
        assert_eq!(w.countries.len(), 177);
        for c in &w.countries {
            assert!(super::super::country_by_code(c.code).is_some(), "{} ({}) has no countries.tsv row", c.name, c.code);
            for poly in &c.polygons {
                for r in poly {
                    assert_eq!(r.first(), r.last(), "{}", c.name);
                    assert!(r.iter().all(|&(lon, lat)| (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat)), "{}", c.name);
                }
            }
        }
        let fr = w.countries.iter().find(|c| c.code == "FR").expect("France");
        assert_eq!(fr.name, "France");
        assert!(w.lines.iter().any(|l| l.0 == LineKind::Border) && w.lines.iter().any(|l| l.0 == LineKind::Coast));
    }

    /// The join is right where it matters: the outline that contains a city is the country the
    /// boundaries raster (which assigns ground truths) puts it in.
    #[test]
    fn outlines_agree_with_the_region_assignment() {
        let cities = [
            ("FR", 48.857, 2.352),
            ("JP", 35.68, 139.69),
            ("KE", -1.29, 36.82),
            ("PE", -12.05, -77.04),
            ("AU", -33.87, 151.21),
            ("US", 39.74, -104.99),
            ("CA", 45.42, -75.70),
            ("BR", -15.79, -47.88),
            ("RU", 55.75, 37.62),
            ("IN", 28.61, 77.21),
            ("ZA", -25.75, 28.19),
            ("LS", -29.31, 27.48),
            ("XK", 42.66, 21.17),
            ("SO", 9.56, 44.06),
            ("CY", 35.34, 33.32),
            ("NZ", -41.29, 174.78),
        ];
        for (code, lat, lon) in cities {
            let o = outline_at((lon, lat)).unwrap_or_else(|| panic!("no outline at {code}'s city"));
            assert_eq!(o.code, code, "outline {} at ({lat}, {lon})", o.name);
            assert_eq!(super::super::country_code(LatLon { lat, lon }), code, "boundaries raster at ({lat}, {lon})");
        }
        // Over a 2-degree grid, where both place a point in a country they agree; a wrong
        // numeric join would make them disagree nearly everywhere.
        let (mut both, mut agree) = (0usize, 0usize);
        for lat in (-56..=72).step_by(2) {
            for lon in (-180..180).step_by(2) {
                let (lat, lon) = (lat as f64 + 0.5, lon as f64 + 0.5);
                let raster = super::super::country_code(LatLon { lat, lon });
                if let (Some(o), false) = (outline_at((lon, lat)), raster == super::super::NO_COUNTRY) {
                    both += 1;
                    agree += usize::from(o.code == raster);
                }
            }
        }
        assert!(both > 2500 && agree as f64 >= 0.95 * both as f64, "{agree} of {both} grid points agree");
    }

    #[test]
    fn holes_are_covered_by_an_enclave_painted_later() {
        let w = world();
        let rank: HashMap<usize, usize> = w.fill_order.iter().enumerate().map(|(r, &i)| (i, r)).collect();
        let mut holes = 0;
        for (i, c) in w.countries.iter().enumerate() {
            for poly in &c.polygons {
                for h in &poly[1..] {
                    holes += 1;
                    let n = (h.len() - 1) as f64;
                    let centre = (h[..h.len() - 1].iter().map(|p| p.0).sum::<f64>() / n, h[..h.len() - 1].iter().map(|p| p.1).sum::<f64>() / n);
                    let (j, e) = w.countries.iter().enumerate().find(|(j, e)| *j != i && e.fill_rings.iter().any(|r| in_ring(centre, r))).expect("an enclave fills the hole");
                    assert!(rank[&j] > rank[&i], "{} is painted after {}", e.name, c.name);
                }
            }
        }
        assert_eq!(holes, 1, "South Africa's hole (Lesotho)");
    }

    #[test]
    fn no_line_or_fill_crosses_the_map() {
        let w = world();
        for (_, l) in &w.lines {
            for s in l.windows(2) {
                assert!((s[0].0 - s[1].0).abs() < 180.0, "a line jumps across the map: {s:?}");
                assert!(!(s[0].0.abs() >= 180.0 - 1e-6 && s[0].0 == s[1].0), "a line runs along the antimeridian: {s:?}");
            }
        }
        for c in &w.countries {
            for r in &c.fill_rings {
                assert!(r.iter().all(|p| (-180.0..=180.0).contains(&p.0) && (-90.0..=90.0).contains(&p.1)), "{}", c.name);
                assert_eq!(r.first(), r.last());
            }
        }
        // The antimeridian's countries: both halves present and found by lookup.
        for (code, west, east) in [("FJ", (-179.9, -16.4), (178.0, -17.8)), ("RU", (-175.0, 66.5), (150.0, 62.0)), ("AQ", (-179.5, -85.0), (179.5, -85.0))] {
            for p in [west, east] {
                assert_eq!(outline_at(p).map(|c| c.code), Some(code), "{p:?}");
            }
        }
        let aq = w.countries.iter().find(|c| c.code == "AQ").expect("Antarctica");
        assert!(aq.fill_rings.iter().any(|r| r.iter().any(|p| p.1 == -90.0)), "Antarctica closes along the pole");
        // Splitting: a jump and a run along the cut both break the line.
        let cut = off_frame(&[(170.0, 10.0), (180.0, 10.0), (180.0, 20.0), (170.0, 20.0), (-170.0, 20.0), (-160.0, 20.0)]);
        assert_eq!(cut, vec![vec![(170.0, 10.0), (180.0, 10.0)], vec![(180.0, 20.0), (170.0, 20.0)], vec![(-170.0, 20.0), (-160.0, 20.0)]]);
        // Clipping a square straddling 180 gives one piece on each side.
        let sq = planar(&[(170.0, 0.0), (-170.0, 0.0), (-170.0, 10.0), (170.0, 10.0), (170.0, 0.0)]);
        assert_eq!(sq.len(), 2, "{sq:?}");
        let area: f64 = sq.iter().map(|r| ring_area(r).abs()).sum();
        assert!((area - 200.0).abs() < 1e-9, "{area}");
    }
}
