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

/// The single most similar candidate (Jaro-Winkler on lower case), however far; `None` when
/// there are no candidates.
pub fn nearest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&name.to_lowercase(), &c.to_lowercase()), *c))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// For a column name that a file lacks: the file's columns (at most 60 listed) and the closest
/// match ("did you mean", or the nearest one when none is close).
pub fn not_a_column(name: &str, columns: &[&str]) -> String {
    const MAX: usize = 60;
    let mut list = columns.iter().take(MAX).map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    if columns.len() > MAX {
        list.push_str(&format!(", ... ({} more)", columns.len() - MAX));
    }
    let close = closest(name, columns);
    let tail = if !close.is_empty() {
        format!("did you mean {}?", close.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" or "))
    } else if let Some(n) = nearest(name, columns) {
        format!("none is close to `{name}`; the nearest is `{n}`")
    } else {
        "it has no columns".into()
    };
    format!("the file's {} columns are {list}; {tail}", columns.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_close_names() {
        assert_eq!(super::closest("knn_densty", &["nearest", "knn_density"]), vec!["knn_density"]);
        assert!(super::hint("zzz", &["nearest"]).contains("valid names"));
    }

    #[test]
    fn not_a_column_lists_the_columns_and_the_closest() {
        let h = super::not_a_column("LATT", &["IMG_ID", "LAT", "LON"]);
        assert_eq!(h, "the file's 3 columns are `IMG_ID`, `LAT`, `LON`; did you mean `LAT`?");
        let h = super::not_a_column("zzz", &["IMG_ID", "LAT", "LON"]);
        assert!(h.starts_with("the file's 3 columns are `IMG_ID`, `LAT`, `LON`; none is close to `zzz`; the nearest is `"), "{h}");
    }
}
