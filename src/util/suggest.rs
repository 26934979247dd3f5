//! "Did you mean" suggestions for unknown names.

/// The candidates closest to `name` (Jaro-Winkler >= 0.7 or small edit distance), best first.
pub fn closest<'a>(name: &str, candidates: &[&'a str]) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&name.to_lowercase(), &c.to_lowercase()), *c))
        .filter(|(s, c)| *s >= 0.7 || strsim::levenshtein(name, c) <= 2)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// "did you mean `a` or `b`?" or, when nothing is close, the full list of valid names.
pub fn hint(name: &str, candidates: &[&str]) -> String {
    let close = closest(name, candidates);
    if close.is_empty() {
        format!("valid names: {}", candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))
    } else {
        format!("did you mean {}?", close.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" or "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_close_names() {
        assert_eq!(super::closest("knn_densty", &["nearest", "knn_density"]), vec!["knn_density"]);
        assert!(super::hint("zzz", &["nearest"]).contains("valid names"));
    }
}
