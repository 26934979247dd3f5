//! GeoCLIP's own prediction, the `gallery` method with `location:` (GeoCLIP's location tower,
//! REAL weights from the geoclip wheel that `make test` fetches; skips with a printed reason
//! without them): argmax over a coordinate gallery of the cosine between the query's GeoCLIP
//! image feature and each coordinate's GeoCLIP location feature, as `GeoCLIP.predict` top-1.
//! The image tower in the end-to-end run is GeoCLIP's MLP on the TINY RANDOM-WEIGHT CLIP fixture
//! (real ViT-L/14 weights cannot exist in CI), so its predictions are checked for wiring, not
//! for accuracy.

mod common;

use georag::align::gallery::{GalleryPredictor, GalleryTower};
use georag::embed::Embeddings;
use georag::embed::geoclip::LocationEncoder;
use georag::record::Status;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A 10-degree grid of 648 coordinates, as a LAT,LON CSV.
fn grid(dir: &Path) -> (PathBuf, Vec<(f64, f64)>) {
    let mut pts = Vec::new();
    for i in 0..18 {
        for j in 0..36 {
            pts.push(((-85 + 10 * i) as f64, (-175 + 10 * j) as f64));
        }
    }
    let mut csv = String::from("LAT,LON\n");
    for (a, b) in &pts {
        csv.push_str(&format!("{a},{b}\n"));
    }
    let p = dir.join("grid.csv");
    std::fs::write(&p, csv).unwrap();
    (p, pts)
}

/// A query whose image feature IS a gallery coordinate's location feature is predicted at that
/// coordinate (its cosine is 1, every other is below); the gallery's embeddings are cached and
/// the cached copy gives the same predictions; a 1024-d query set is refused.
#[test]
fn geoclip_gallery_predicts_the_coordinate_whose_feature_matches() {
    let Some(gdir) = common::geoclip_dir() else { return };
    let dir = common::tmp("gallery-geoclip-unit");
    let (csv, pts) = grid(&dir);
    let cache = dir.join("cache");
    let g = GalleryPredictor::load(&cache, None, Some(&gdir), &csv).unwrap();
    assert!(matches!(g.tower, GalleryTower::Geoclip(_)));
    assert_eq!((g.coords.len(), g.dim), (648, 512));
    let enc = LocationEncoder::load(&gdir, &candle_core::Device::Cpu).unwrap();
    let pick = [0usize, 17, 300, 647, 411];
    let chosen: Vec<(f64, f64)> = pick.iter().map(|&i| pts[i]).collect();
    let vectors = enc.encode(&chosen).unwrap();
    let n = pick.len() + 1;
    let mut q = Embeddings {
        dim: 512,
        ids: (0..n).map(|i| format!("q{i}")).collect(),
        lat: vec![0.0; n],
        lon: vec![0.0; n],
        status: vec![Status::Ok; n],
        errors: vec![None; n],
        vectors: vectors.clone(),
        dir: dir.clone(),
    };
    // The last query failed to decode: it keeps its status.
    q.status[n - 1] = Status::DecodeFailed;
    q.vectors.extend(std::iter::repeat_n(0.0, 512));
    let got = g.predict(&q).unwrap();
    for (k, &i) in pick.iter().enumerate() {
        let p = got[k].pred.expect("predicted");
        assert_eq!((p.lat, p.lon), pts[i], "query {k}");
    }
    assert!(got[n - 1].pred.is_none() && got[n - 1].status == Status::DecodeFailed);
    let cached: Vec<_> = std::fs::read_dir(cache.join("gallery")).unwrap().collect();
    assert_eq!(cached.len(), 1);
    let again = GalleryPredictor::load(&cache, None, Some(&gdir), &csv).unwrap();
    assert_eq!(again.vectors, g.vectors, "the cached gallery embeddings are the computed ones");
    assert_eq!(again.fingerprint, g.fingerprint);
    // The geoclip package's folder stands for its 100K gallery.
    let file = georag::align::gallery::gallery_file(&gdir).unwrap();
    assert!(file.ends_with("coordinates_100K.csv"), "{}", file.display());
    let wide = Embeddings { dim: 1024, vectors: vec![0.0; n * 1024], ..q };
    let e = g.predict(&wide).err().expect("1024-d queries are not GeoCLIP features").to_string();
    assert!(e.contains("encoder kind `geoclip`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn run_config(dir: &Path, encoder: &str, method: &str) -> PathBuf {
    let cfg = format!(
        "name: gallery-geoclip\ncache_dir: {cache}\ndatabase: {{kind: synthetic, split: database, n: 200, shard_rows: 128}}\nqueries: {{kind: synthetic, split: queries, n: 12, shard_rows: 16}}\nencoder: {encoder}\nindex: {{factory: \"Flat\", nprobe: 1, train_sample: 200}}\nmethods:\n  - kind: nearest\n  - {method}\nmetrics: {{distance: geodesic, threshold_op: le}}\n",
        cache = dir.join("cache").display()
    );
    let p = dir.join("gallery.yaml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn georag(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_georag")).args(args).env("GEORAG_QUIET", "1").output().unwrap()
}

/// `georag run` with `encoder: {kind: geoclip}` and a `gallery` method with `location:`: a
/// "GeoCLIP (gallery)" row with every query predicted at a grid point; the config is refused
/// with a named key when the encoder is not GeoCLIP's or when both towers are given.
#[test]
fn run_with_a_geoclip_gallery_method() {
    let Some(gdir) = common::geoclip_dir() else { return };
    let dir = common::tmp("gallery-geoclip-run");
    let (csv, pts) = grid(&dir);
    let clip = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders/clip-tiny");
    let encoder = format!("{{kind: geoclip, dir: {}, weights: {}}}", clip.display(), gdir.display());
    let method = format!("{{kind: gallery, location: {}, gallery: {}}}", gdir.display(), csv.display());
    let cfg = run_config(&dir, &encoder, &method);
    let out = dir.join("run");
    let o = georag(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let metrics = georag::metrics::MetricsFile::read(&out.join("metrics.json")).unwrap();
    let g = metrics.rows.iter().find(|r| r.method == "GeoCLIP (gallery)").expect("GeoCLIP (gallery) row");
    assert_eq!((g.n_expected, g.n_scored), (12, 12));
    // Every prediction is a gallery coordinate.
    let mut n = 0;
    for r in csv::Reader::from_path(out.join("per_image.csv")).unwrap().records() {
        let r = r.unwrap();
        if &r[0] == "GeoCLIP (gallery)" {
            let p: (f64, f64) = (r[5].parse().unwrap(), r[6].parse().unwrap());
            assert!(pts.contains(&p), "{p:?} is not a grid point");
            n += 1;
        }
    }
    assert_eq!(n, 12);

    // Refused before any work, naming the method.
    for (enc, m, want) in [
        ("{kind: im2gps}", method.clone(), "needs GeoCLIP image features"),
        (encoder.as_str(), format!("{{kind: gallery, location: {}, model: {}, gallery: {}}}", gdir.display(), dir.display(), csv.display()), "exactly one"),
    ] {
        let cfg = run_config(&dir, enc, &m);
        let o = georag(&["run", cfg.to_str().unwrap(), "--out", dir.join("refused").to_str().unwrap()]);
        let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!o.status.success() && t.contains("methods[1]") && t.contains(want), "{t}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
