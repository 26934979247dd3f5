//! Config loading: `include:`, `--set`, and errors that name the file, the key and the closest
//! valid names.

use georag::config;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("georag-cfg-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const BASE: &str = "database: {kind: synthetic, split: database, n: 10}\nqueries: {kind: synthetic, split: queries, n: 5}\nencoder: {kind: im2gps}\n";

fn write(d: &Path, name: &str, text: &str) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn include_merges_and_set_overrides() {
    let d = dir();
    write(&d, "base.yaml", BASE);
    let p = write(&d, "exp.yaml", "include: base.yaml\nname: x\nqueries: {n: 7}\nmethods: [{kind: nearest}, {kind: knn_density}]\n");
    let cfg = config::load(&p, &["index.nprobe=3".into(), "methods.1.k=5".into(), "metrics.distance=geodesic".into()]).unwrap();
    assert_eq!(cfg.index.nprobe, 3);
    assert_eq!(cfg.methods[1].name(), "knn_density(k=5, bw=200km)");
    assert_eq!(cfg.metrics.distance, georag::metrics::DistanceModel::Geodesic);
    match &cfg.queries {
        georag::ingest::DatasetSpec::Synthetic { n, split, .. } => {
            assert_eq!(*n, 7);
            assert_eq!(*split, georag::ingest::synthetic::Split::Queries);
        }
        other => panic!("{other:?}"),
    }
    // The resolved config round-trips.
    let back: config::Config = serde_yaml::from_str(&cfg.to_yaml()).unwrap();
    assert_eq!(back.to_yaml(), cfg.to_yaml());
}

#[test]
fn unknown_key_names_file_key_and_suggestion() {
    let d = dir();
    let p = write(&d, "exp.yaml", &format!("{BASE}name: x\nmethods: [{{kind: nearest}}]\nindex: {{nprobes: 4}}\n"));
    let e = config::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("exp.yaml") && e.contains("index") && e.contains("did you mean `nprobe`"), "{e}");
}

#[test]
fn unknown_component_in_included_file_names_that_file() {
    let d = dir();
    write(&d, "base.yaml", &BASE.replace("im2gps", "im2gsp"));
    let p = write(&d, "exp.yaml", "include: base.yaml\nname: x\nmethods: [{kind: knn_densty}]\n");
    let e = config::load(&p, &[]).unwrap_err().to_string();
    // The first error serde meets is the encoder, defined in base.yaml.
    assert!(e.contains("base.yaml") && e.contains("encoder") && e.contains("`im2gps`"), "{e}");
    write(&d, "base.yaml", BASE);
    let e = config::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("exp.yaml") && e.contains("methods") && e.contains("did you mean `knn_density`"), "{e}");
}

#[test]
fn bad_set_and_include_cycles_are_errors() {
    let d = dir();
    let p = write(&d, "a.yaml", "include: b.yaml\nname: a\n");
    write(&d, "b.yaml", "include: a.yaml\n");
    assert!(config::load(&p, &[]).unwrap_err().to_string().contains("cycle"));
    let p = write(&d, "ok.yaml", &format!("{BASE}name: x\nmethods: [{{kind: nearest}}]\n"));
    assert!(config::load(&p, &["no_equals_sign".into()]).is_err());
    let e = config::load(&p, &["methods.5.k=1".into()]).unwrap_err().to_string();
    assert!(e.contains("methods.5.k=1"), "{e}");
    let e = config::load(&p, &["index.nprob=1".into()]).unwrap_err().to_string();
    assert!(e.contains("--set index.nprob=1") && e.contains("nprobe"), "{e}");
}

/// Every shipped method file and the example experiment load, with `include:` inside the
/// methods list, overrides beside it, and a different `kind:` replacing the included selector.
#[test]
fn shipped_methods_and_examples_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let cfg = config::load(&root.join("examples/rag_vllm.yaml"), &[]).unwrap();
    cfg.validate().unwrap();
    let names: Vec<String> = cfg.methods.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["nearest", "street_rag", "img2loc", "g3"]);
    let g3 = cfg.mllm_methods().find(|m| m.name == "g3").unwrap();
    assert_eq!(g3.variants.len(), 4);
    assert_eq!(g3.variants.iter().map(|v| v.samples).sum::<usize>(), 40);
    assert!(matches!(g3.selector, georag::select::generated::PoolSelectorSpec::GeoVerify { .. }));
    let demo = config::load(&root.join("demo.yaml"), &[]).unwrap();
    let g3 = demo.mllm_methods().find(|m| m.name == "g3 (medoid)").unwrap();
    assert_eq!(g3.selector, georag::select::generated::PoolSelectorSpec::Medoid, "kind: medoid replaced geo_verify whole");
    for f in std::fs::read_dir(root.join("methods")).unwrap() {
        let f = f.unwrap().path();
        let d = dir();
        let p = write(&d, "exp.yaml", &format!("{BASE}name: x\nmethods: [{{include: {}}}]\ngenerator: {{kind: replay, model: m}}\n", f.display()));
        let cfg = config::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        cfg.validate().unwrap();
        for m in cfg.mllm_methods() {
            for v in &m.variants {
                let t = georag::prompt::Template::load(&v.prompt).unwrap();
                t.check_neighbours(v.neighbours.similar, v.neighbours.dissimilar).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            }
        }
    }
}

/// Misspelt MLLM settings are errors with the closest valid names.
#[test]
fn mllm_method_errors_suggest_names() {
    let d = dir();
    let p = write(&d, "exp.yaml", &format!("{BASE}name: x\ngenerator: {{kind: replay, model: m}}\nmethods: [{{kind: mllm, name: a, variants: [{{prompt: zero_shot}}], parser: lenent}}]\n"));
    let e = config::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("lenent") && e.contains("lenient"), "{e}");
    let p = write(&d, "exp2.yaml", &format!("{BASE}name: x\ngenerator: {{kind: openai_compatibel, model: m}}\nmethods: [{{kind: nearest}}]\n"));
    let e = config::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("openai_compatible"), "{e}");
    let p = write(&d, "exp3.yaml", &format!("{BASE}name: x\nmethods: [{{kind: mllm, name: a, variants: [{{prompt: zero_shot}}]}}]\n"));
    let e = config::load(&p, &[]).unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("generator"), "{e}");
}
