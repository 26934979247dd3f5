//! `georag align train CONFIG` through the real binary on a small synthetic world (the IM2GPS
//! descriptor as the frozen image encoder): an interrupted run (`--max-steps`) resumes to the end
//! and its held-out image->GPS accuracy rises; then `georag run` uses the trained heads in
//! `geo_verify` (`aligned:`) against the in-process TEST DOUBLE server, and run.json names the
//! model's fingerprint; the `gallery` method predicts every query from a coordinate grid.

mod common;

use common::llm_double::{Double, Fault};
use georag::align::train::ModelCard;
use georag::pipeline::RunRecord;
use std::path::{Path, PathBuf};
use std::process::Command;

fn config(dir: &Path, url: &str, model: &Path) -> PathBuf {
    // A 10-degree grid as the GPS gallery of the `gallery` method.
    let gallery = dir.join("grid.csv");
    let mut csv = String::from("LAT,LON\n");
    for i in 0..18 {
        for j in 0..36 {
            csv.push_str(&format!("{},{}\n", -85 + 10 * i, -175 + 10 * j));
        }
    }
    std::fs::write(&gallery, csv).unwrap();
    let cfg = format!(
        r#"
name: align-it
cache_dir: {cache}
database: {{kind: synthetic, split: database, n: 1200, shard_rows: 512}}
queries: {{kind: synthetic, split: queries, n: 24, shard_rows: 16}}
encoder: {{kind: im2gps}}
index: {{factory: "Flat", nprobe: 1, train_sample: 1200}}
align:
  kind: g3
  location: {{rff_features: 32, hidden: 64, out_dim: 32}}
  heads: {{shared_dim: 32}}
  train: {{lr: 0.002, batch_size: 128, epochs: 6, holdout: 200, seed: 1}}
methods:
  - kind: nearest
  - {{kind: gallery, name: gallery, model: {model}, gallery: {gallery}}}
  - kind: mllm
    name: rag-verified
    variants:
      - {{prompt: street_rag, neighbours: {{similar: 4, dissimilar: 2}}, samples: 3}}
    sampling: {{temperature: 0.7, max_tokens: 32, seed: 1}}
    parser: lenient
    pool_retrieval_top1: true
    selector: {{kind: geo_verify, aligned: {model}}}
generator:
  kind: openai_compatible
  base_url: {url}
  model: tiny-vlm
  max_in_flight: 4
  timeout_s: 5
"#,
        cache = dir.join("cache").display(),
        model = model.display(),
        gallery = gallery.display()
    );
    let path = dir.join("align.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn georag(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_georag")).args(args).env("GEORAG_QUIET", "1").output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn align_train_resumes_and_geo_verify_uses_the_trained_heads() {
    let dir = common::tmp("align-cli");
    let d = Double::start("tiny-vlm", |_, _| Fault::None);
    let model = dir.join("heads");
    let cfg = config(&dir, &d.url(), &model);
    let c = cfg.to_str().unwrap();
    let m = model.to_str().unwrap();
    // 1000 training rows in batches of 128: 8 steps per epoch, 48 in all.
    let o = georag(&["align", "train", c, "--out", m, "--max-steps", "11"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("stopped at step 11"), "{}", text(&o));
    assert!(!model.join("model.json").exists());
    let o = georag(&["align", "train", c, "--out", m]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("resumed from the checkpoint at step 11"), "{t}");
    assert!(t.contains("epoch  6:"), "{t}");
    let card: ModelCard = serde_json::from_slice(&std::fs::read(model.join("model.json")).unwrap()).unwrap();
    assert_eq!(card.curve.steps.len(), 48);
    assert_eq!((card.n_train, card.n_holdout, card.image_dim), (1000, 200, 1024));
    let acc = |e: usize| card.curve.evals[e].accuracy.iter().find(|a| a.0 == 2500.0).unwrap().1;
    eprintln!("held-out image->GPS accuracy at 2500 km (top-1 over the 200 held-out coordinates): untrained {:.3}, 6 epochs {:.3}", acc(0), acc(6));
    assert!(acc(6) > acc(0) + 0.1, "untrained {}, trained {}", acc(0), acc(6));

    let out = dir.join("run");
    let o = georag(&["run", c, "--out", out.to_str().unwrap()]);
    assert!(o.status.code() == Some(0) || o.status.code() == Some(2), "{}", text(&o));
    let rr: RunRecord = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let sel = &rr.mllm_methods[0].selector;
    assert!(sel.contains(&card.model_fingerprint), "{sel}");
    // The gallery method: every query predicted, at one of the 648 grid points.
    let metrics = georag::metrics::MetricsFile::read(&out.join("metrics.json")).unwrap();
    let g = metrics.rows.iter().find(|r| r.method == "gallery").expect("gallery row");
    assert_eq!((g.n_expected, g.n_scored), (24, 24));
    eprintln!("gallery (10-degree grid, 648 points): accuracy at 2500 km {:.1}% of 24 queries", g.acc(2500.0).unwrap());
    assert!(rr.stages.iter().any(|s| s.stage == "gallery"));
    let cached: Vec<_> = std::fs::read_dir(dir.join("cache/gallery")).unwrap().collect();
    assert_eq!(cached.len(), 1, "one cached gallery embedding file");
    // The report shows the model's training curves (one model, named by both the selector and
    // the gallery method) and its fingerprint in the notes.
    let plots: Vec<String> = std::fs::read_dir(out.join("plots")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(plots.iter().filter(|p| p.starts_with("align_loss_") && p.ends_with(".svg")).count(), 1, "{plots:?}");
    assert_eq!(plots.iter().filter(|p| p.starts_with("align_holdout_") && p.ends_with(".svg")).count(), 1, "{plots:?}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Held-out image-&gt;GPS accuracy") || html.contains("Held-out image->GPS accuracy"), "no held-out curve in the report");
    assert!(html.contains(&format!("model fingerprint {}", card.model_fingerprint)), "no model fingerprint in the notes");

    // G3's retrieval with the same heads (`encoder: aligned` over the descriptor): its vectors
    // derive from the cached descriptor store, and geo_verify and the gallery still feed the
    // heads the base's query embeddings (not the concatenated ones).
    let out2 = dir.join("run-aligned");
    let set = format!("encoder={{kind: aligned, base: {{kind: im2gps}}, model: {m}}}");
    let o = georag(&["run", c, "--set", &set, "--out", out2.to_str().unwrap()]);
    assert!(o.status.code() == Some(0) || o.status.code() == Some(2), "{}", text(&o));
    let metrics2 = georag::metrics::MetricsFile::read(&out2.join("metrics.json")).unwrap();
    for method in ["nearest", "gallery", "rag-verified"] {
        let r = metrics2.rows.iter().find(|r| r.method == method).unwrap_or_else(|| panic!("no {method} row"));
        assert_eq!(r.n_expected, 24, "{method}");
    }
    let g2 = metrics2.rows.iter().find(|r| r.method == "gallery").unwrap();
    assert_eq!(g2.acc(2500.0), g.acc(2500.0), "the gallery prediction does not depend on the retrieval encoder");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// G3's place texts end to end: `align.text: {clip: DIR, fields: [...]}` builds each database
/// row's place string from its metadata, embeds it with the TINY RANDOM-WEIGHT CLIP text tower
/// of `tests/fixtures/encoders/clip-text-tiny` (real weights cannot exist in CI; the tower
/// itself is parity-tested against transformers in `clip_text_parity.rs`), trains the text
/// heads on it, counts the rows without a text, and reuses the cached text store on a second
/// run; a misspelt key under `text:` is an error that names it.
#[test]
fn align_train_embeds_place_texts_with_the_clip_text_tower() {
    let dir = common::tmp("align-text");
    let tower = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders/clip-text-tiny");
    // The suite's tiny world (600 database rows in 3 shards) with small G3 heads and place texts
    // from `fields` (`key` is `fields`, or a misspelling of it).
    let cfg = |fields: &str, key: &str| {
        let align = format!(
            "align:\n  kind: g3\n  location: {{rff_features: 16, hidden: 32, out_dim: 16}}\n  heads: {{shared_dim: 16}}\n  train: {{lr: 0.002, batch_size: 64, epochs: 1, holdout: 50, seed: 1}}\n  text: {{clip: {}, {key}: [{fields}]}}",
            tower.display()
        );
        common::tiny_world_config(&dir, &format!("text-{key}"), &align)
    };
    // The synthetic world's metadata names a landmark only for landmark photos: every other row
    // has no place text under `fields: [landmark]`.
    let ds = georag::ingest::materialize(
        &georag::ingest::DatasetSpec::Synthetic { world: Default::default(), split: georag::ingest::synthetic::Split::Database, n: 600, shard_rows: 256 },
        &dir.join("cache"),
    )
    .unwrap()
    .0;
    let mut without = 0;
    for s in &ds.manifest.shards {
        for r in georag::ingest::shard::read_meta(&ds.dir.join(&s.file)).unwrap() {
            let m: serde_json::Value = serde_json::from_str(r.3.as_deref().unwrap()).unwrap();
            without += usize::from(m["landmark"].is_null());
        }
    }
    assert!(without > 0 && without < 600, "{without} rows without a landmark");

    let c = cfg("landmark", "fields");
    let m = dir.join("heads-landmark");
    let o = georag(&["align", "train", c.to_str().unwrap(), "--out", m.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("embedded now"), "{t}");
    assert!(t.contains(&format!("{without} rows have no place text, {without} of them with a usable image left out of training")), "{t}");
    let card: ModelCard = serde_json::from_slice(&std::fs::read(m.join("model.json")).unwrap()).unwrap();
    assert_eq!(card.text_dim, Some(24), "the tiny tower's projection dimension");
    assert_eq!(card.n_train + card.n_holdout, 600 - without);

    // City and continent: every row has a text; the store is computed once, then reused.
    let c = cfg("city, continent", "fields");
    for (run, expect) in [("a", "embedded now"), ("b", "reused")] {
        let m = dir.join(format!("heads-city-{run}"));
        let o = georag(&["align", "train", c.to_str().unwrap(), "--out", m.to_str().unwrap()]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains(expect) && t.contains("0 rows have no place text"), "run {run}: {t}");
        let card: ModelCard = serde_json::from_slice(&std::fs::read(m.join("model.json")).unwrap()).unwrap();
        assert_eq!(card.n_train + card.n_holdout, 600);
    }
    let stores: Vec<_> = std::fs::read_dir(dir.join("cache/text-embeddings")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(stores.len(), 2, "one text store per field list, no partial left: {stores:?}");

    // `kind: aligned` over these heads (base ⊕ image->text ⊕ image->GPS): derived from the base
    // encoder's cached store (written by `align train`) shard by shard, no image decoded.
    use georag::embed::{self, EmbedOptions, EncoderSpec};
    let spec: EncoderSpec = serde_yaml::from_str(&format!("{{kind: aligned, base: {{kind: im2gps}}, model: {}}}", dir.join("heads-city-a").display())).unwrap();
    let enc = embed::build(&spec).unwrap();
    let opts = EmbedOptions::default();
    let derived_dir = embed::store_dir(&dir.join("cache"), enc.as_ref(), &ds);
    let (derived, st) = embed::embed_to_dir(&derived_dir, &ds, enc.as_ref(), &opts, "aligned (derived)").unwrap();
    assert_eq!((st.shards_derived, st.shards_written, st.base_shards_written, st.images), (3, 3, 0, 0), "{st:?}");
    // In a cache without the base's store, the base's store is filled first (the images are
    // embedded once, by the base) and every shard is still derived; the base store is complete.
    let fresh = dir.join("fresh-cache");
    let (fresh_emb, st) = embed::embed_to_dir(&embed::store_dir(&fresh, enc.as_ref(), &ds), &ds, enc.as_ref(), &opts, "aligned (fresh)").unwrap();
    assert_eq!((st.shards_derived, st.shards_written, st.base_shards_written, st.images), (3, 3, 3, 600), "{st:?}");
    let base = embed::build(spec.heads_input()).unwrap();
    let (_, st) = embed::embed_to_dir(&embed::store_dir(&fresh, base.as_ref(), &ds), &ds, base.as_ref(), &opts, "base (reused)").unwrap();
    assert_eq!((st.shards_written, st.images, st.shards_present), (0, 0, 3), "the base store was filled: {st:?}");
    // The reference: the aligned encoder run on the images themselves (the decode every
    // embedding uses, the encoder's own preprocessing, in batches of 64).
    let mut direct = Vec::new();
    let mut ids = Vec::new();
    for si in 0..ds.manifest.shards.len() {
        ds.for_each_chunk(si, 64, |rows| -> Result<(), georag::ingest::shard::ShardError> {
            let prepared: Vec<_> = rows
                .iter()
                .map(|r| enc.prepare(georag::decode::decode_rgb_draft(&ds.image_bytes(r).unwrap(), opts.max_pixels, enc.decode_min_size()).unwrap()).unwrap())
                .collect();
            direct.extend(enc.encode_prepared(prepared).unwrap());
            ids.extend(rows.into_iter().map(|r| r.id));
            Ok(())
        })
        .unwrap();
    }
    let (derived, fresh_emb) = (derived.unwrap(), fresh_emb.unwrap());
    assert_eq!(derived.dim, 1024 + 2 * 16);
    assert_eq!(derived.ids, ids);
    assert_eq!((derived.ids.clone(), derived.status.clone(), derived.vectors.clone()), (fresh_emb.ids, fresh_emb.status, fresh_emb.vectors));
    assert!(derived.status.iter().all(|s| *s == georag::record::Status::Ok));
    let worst = derived.vectors.iter().zip(&direct).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "derived vs from images: max |diff| {worst}");

    let c = cfg("city", "feilds");
    let o = georag(&["align", "train", c.to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("feilds"), "{t}");
    std::fs::remove_dir_all(&dir).unwrap();
}
