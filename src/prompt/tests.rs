use super::*;

fn ll(lat: f64, lon: f64) -> LatLon {
    LatLon { lat, lon }
}

fn c(v: &[LatLon]) -> Vec<Candidate> {
    v.iter().map(|&p| Candidate::at(p)).collect()
}

fn neighbours() -> (Vec<Candidate>, Vec<Candidate>) {
    let sim = c(&[ll(48.85661, 2.35222), ll(51.50722, -0.1275), ll(-33.86882, 151.20929)]);
    let dis = c(&[ll(35.6762, 139.6503), ll(-22.9068, -43.1729)]);
    (sim, dis)
}

/// Snapshot of every built-in template rendered with fixed neighbours: any change of wording,
/// formatting or placeholder handling fails here. After an intended change, regenerate with
/// `GEORAG_UPDATE_SNAPSHOTS=1 cargo test --release --lib prompt` and bump the template's
/// `version`.
#[test]
fn builtin_templates_render_as_snapshotted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/prompt/snapshots");
    let update = std::env::var_os("GEORAG_UPDATE_SNAPSHOTS").is_some();
    let (sim, dis) = neighbours();
    for (name, _) in BUILTIN {
        let t = Template::load(name).unwrap();
        let s = if t.uses("similar") { &sim[..] } else { &[] };
        let d = if t.uses("dissimilar") { &dis[..] } else { &[] };
        let r = t.render(s, d);
        let got = format!(
            "# {} sha256 {}\n# system: {:?}\n# response_format: {:?}\n{}\n",
            t.label(),
            t.sha256,
            r.system,
            t.response_format,
            r.text
        );
        let path = dir.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (GEORAG_UPDATE_SNAPSHOTS=1 writes it)", path.display()));
        assert_eq!(got, want, "rendered prompt `{name}` changed; see {}", path.display());
    }
}

#[test]
fn candidate_styles_and_decimals() {
    let mut v = c(&[ll(48.85661, 2.35222), ll(-33.5, -70.25)]);
    assert_eq!(format_candidates(&v, CandidateStyle::Tuples, 2), "(48.86, 2.35) (-33.50, -70.25)");
    assert_eq!(format_candidates(&v, CandidateStyle::List, 3), "['48.857, 2.352', '-33.500, -70.250']");
    assert_eq!(format_candidates(&v, CandidateStyle::Lines, 1), "48.9, 2.4\n-33.5, -70.2");
    assert_eq!(format_candidates(&[], CandidateStyle::List, 1), "[]");
    v[0].place = Some("Paris, France".into());
    assert_eq!(format_candidates(&v, CandidateStyle::Tuples, 2), "(48.86, 2.35; Paris, France) (-33.50, -70.25)");
    assert_eq!(format_candidates(&v, CandidateStyle::List, 1), "['48.9, 2.4 (Paris, France)', '-33.5, -70.2']");
    assert_eq!(format_candidates(&v, CandidateStyle::Lines, 1), "48.9, 2.4 (Paris, France)\n-33.5, -70.2");
}

#[test]
fn unknown_placeholder_and_unknown_key_are_errors_with_hints() {
    let e = Template::from_yaml("name: x\nversion: 1\ntemplate: 'see {{similr}}'\n", "t.yaml").unwrap_err().to_string();
    assert!(e.contains("t.yaml") && e.contains("similr") && e.contains("similar"), "{e}");
    let e = Template::from_yaml("name: x\nversion: 1\ntemplate: a\ncandidate_styl: list\n", "t.yaml").unwrap_err().to_string();
    assert!(e.contains("candidate_styl") && e.contains("candidate_style"), "{e}");
    let e = Template::from_yaml("name: x\nversion: 1\ntemplate: 'a {{similar'\n", "t.yaml").unwrap_err().to_string();
    assert!(e.contains("unclosed"), "{e}");
    let e = Template::load("street_ragg").unwrap_err().to_string();
    assert!(e.contains("street_rag"), "{e}");
}

#[test]
fn neighbour_use_must_match_the_variant() {
    let t = Template::load("street_rag").unwrap();
    assert!(t.check_neighbours(16, 16).is_ok());
    assert!(t.check_neighbours(16, 0).unwrap_err().to_string().contains("dissimilar"));
    let z = Template::load("zero_shot").unwrap();
    assert!(z.check_neighbours(0, 0).is_ok());
    assert!(z.check_neighbours(5, 0).is_err());
}

#[test]
fn include_overrides_and_changes_the_hash() {
    let dir = std::env::temp_dir().join(format!("georag-prompt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("mine.yaml");
    std::fs::write(&p, "include: g3_rag\nname: mine\ndecimals: 2\n").unwrap();
    let t = Template::load(p.to_str().unwrap()).unwrap();
    let base = Template::load("g3_rag").unwrap();
    assert_eq!(t.name, "mine");
    assert_eq!(t.template, base.template);
    assert_eq!(t.decimals, 2);
    assert_ne!(t.sha256, base.sha256);
    let r = t.render(&c(&[ll(1.234, 5.678)]), &[]);
    assert!(r.text.contains("['1.23, 5.68']"), "{}", r.text);
    // A file including itself is a cycle, not a stack overflow.
    let q = dir.join("loop.yaml");
    std::fs::write(&q, "include: loop.yaml\nname: l\n").unwrap();
    assert!(Template::load(q.to_str().unwrap()).unwrap_err().to_string().contains("cycle"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn counts_follow_the_neighbours_given() {
    let t = Template::load("g3_rag").unwrap();
    let r = t.render(&c(&[ll(1.0, 2.0), ll(3.0, 4.0)]), &[]);
    assert!(r.text.contains("coordinates of 2 photos"), "{}", r.text);
    assert!(r.text.contains(r#"{"latitude": float, "longitude": float}"#), "{}", r.text);
    assert!(!r.text.contains("{{"), "{}", r.text);
}

#[test]
fn place_text_from_database_metadata() {
    let t = Template::from_yaml("name: p\nversion: 1\nplace_fields: [city, state, country]\ntemplate: '{{similar}}'\n", "p.yaml").unwrap();
    assert_eq!(t.place_of(Some(r#"{"city": "Lyon", "state": "", "country": "France", "x": 1}"#)).as_deref(), Some("Lyon, France"));
    assert_eq!(t.place_of(Some(r#"{"other": "y"}"#)), None);
    assert_eq!(t.place_of(None), None);
    assert_eq!(Template::load("street_rag").unwrap().place_of(Some(r#"{"city": "Lyon"}"#)), None, "no place_fields: coordinates only");
}
