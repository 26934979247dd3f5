//! The id join of `georag eval`: ground truth and predictions into the evaluated records, with
//! polars (the analysis plane).
//!
//! Invariants: the records are the ground truth's first rows of each non-empty id, in file
//! order; the first prediction row of an id is the one used; every other row that is not used
//! is an [`Issue`] naming its file, row and id, in row order per file.

use super::{Issue, IssueKind, Issues};
use crate::eval::read::{Loaded, Loc, Locs, Num, NumColumn};
use crate::record::{CoordError, LatLon, PredictionRecord, Status};
use polars::prelude::{
    ChunkTake, DataFrame, DataFrameJoinOps, IdxCa, IdxSize, IntoColumn, JoinArgs, JoinType, MaintainOrderJoin,
    NewChunkedArray, PolarsResult, StringChunked, UniqueKeepStrategy,
};
use rayon::prelude::*;
use std::path::Path;

/// A ground-truth or prediction row: location, id and two numeric cells (lat, lon).
#[derive(Clone, Copy, Debug)]
pub struct Cells<'a> {
    pub loc: Loc,
    pub id: &'a str,
    pub lat: &'a Num,
    pub lon: &'a Num,
}

/// One side of the id join: a file's ids, its two coordinate columns, where its rows are.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    pub file: &'a Path,
    /// Trimmed ids, one chunk, no nulls (as [`Loaded::ids`]).
    pub ids: &'a StringChunked,
    pub lat: &'a NumColumn,
    pub lon: &'a NumColumn,
    pub locs: &'a Locs,
    /// Records left out of the rows for having every cell read empty ([`Loaded::empty_rows`]).
    pub empty_rows: &'a [Loc],
}

impl<'a> Side<'a> {
    /// Columns `lat_at` and `lon_at` of `values` of a loaded file.
    pub fn of(l: &'a Loaded, lat_at: usize, lon_at: usize) -> Self {
        Side { file: &l.path, ids: &l.ids, lat: &l.values[lat_at], lon: &l.values[lon_at], locs: &l.locs, empty_rows: &l.empty_rows }
    }

    fn id(&self, i: usize) -> &'a str {
        self.ids.get(i).unwrap_or("")
    }
}

fn coord(lat: &Num, lon: &Num) -> Result<LatLon, (Status, String)> {
    match (lat, lon) {
        (Num::Value(a), Num::Value(b)) => LatLon::new(*a, *b).map_err(|e| {
            let st = if e == CoordError::NotFinite { Status::Unparseable } else { Status::OutOfRange };
            (st, format!("({a}, {b}): {e}"))
        }),
        (Num::Garbage(g), _) | (_, Num::Garbage(g)) => Err((Status::Unparseable, format!("`{g}` is not a number"))),
        _ => Err((Status::Unparseable, "empty coordinate".into())),
    }
}

/// Name of the row-number column of the frames joined here.
const ROW: &str = "row";

/// The rows with a non-empty id as a frame (`id`, `row`), the first row of each id (same
/// columns, file order: `unique_stable` keeping the first), and every later row of an id with
/// its first row (a left join of those rows on the first rows).
struct Keys {
    firsts: DataFrame,
    /// (row, first row of its id), ascending.
    repeats: Vec<(usize, usize)>,
}

fn row_frame(ids: &StringChunked, rows: Option<&[IdxSize]>) -> PolarsResult<DataFrame> {
    let (ids, rows) = match rows {
        None => (ids.clone(), IdxCa::from_vec(ROW.into(), (0..ids.len() as IdxSize).collect())),
        Some(r) => {
            let idx = IdxCa::from_vec(ROW.into(), r.to_vec());
            (ids.take(&idx)?, idx)
        }
    };
    DataFrame::new(rows.len(), vec![ids.with_name("id".into()).into_column(), rows.into_column()])
}

fn left_ordered() -> JoinArgs {
    let mut a = JoinArgs::new(JoinType::Left);
    a.maintain_order = MaintainOrderJoin::Left;
    a
}

/// True when no two of `ids` are equal, decided from their 64-bit hashes, sorted in parallel:
/// distinct hashes are distinct ids. Any equal pair (a repeated id, or a hash collision) answers
/// false and the caller takes the exact path, so the answer is never wrong, only sometimes
/// conservative. Most files have unique ids, and this costs a fraction of a hash table of
/// strings (`unique_stable`, which was most of the join of a 1 M-row file).
fn surely_distinct(ids: &StringChunked) -> bool {
    use std::hash::{Hash, Hasher};
    let mut h: Vec<u64> = ids
        .iter()
        .map(|v| {
            let mut s = std::collections::hash_map::DefaultHasher::new();
            v.unwrap_or("").hash(&mut s);
            s.finish()
        })
        .collect();
    h.par_sort_unstable();
    h.windows(2).all(|w| w[0] != w[1])
}

fn keys(ids: &StringChunked, non_empty: Option<&[IdxSize]>) -> PolarsResult<Keys> {
    let df = row_frame(ids, non_empty)?;
    if non_empty.is_none() && surely_distinct(ids) {
        return Ok(Keys { firsts: df, repeats: Vec::new() });
    }
    let firsts = df.unique_stable(Some(&["id".to_string()][..]), UniqueKeepStrategy::First, None)?;
    if firsts.height() == df.height() {
        return Ok(Keys { firsts, repeats: Vec::new() });
    }
    let mut first = vec![false; ids.len()];
    for r in firsts.column(ROW)?.idx()?.iter().flatten() {
        first[r as usize] = true;
    }
    let later: Vec<IdxSize> = df.column(ROW)?.idx()?.iter().flatten().filter(|r| !first[*r as usize]).collect();
    let j = row_frame(ids, Some(&later))?.join(&firsts, ["id"], ["id"], left_ordered(), None)?;
    let rows = j.column(ROW)?.idx()?;
    let of = j.column(&format!("{ROW}_right"))?.idx()?;
    let repeats = rows.iter().zip(of.iter()).map(|(r, f)| (r.unwrap() as usize, f.unwrap() as usize)).collect();
    Ok(Keys { firsts, repeats })
}

/// An issue whose row is not located yet (locations are found at the end, once per file).
struct Pending {
    kind: IssueKind,
    row: usize,
    message: String,
}

/// The issues of one side in file order: `pending` located, and each of the side's
/// [`Side::empty_rows`] as a row without id (`empty`: its kind and message).
fn locate(side: &Side, mut pending: Vec<Pending>, empty: Option<(IssueKind, &str)>) -> Vec<Issue> {
    pending.sort_by_key(|p| p.row);
    let mut v: Vec<Issue> = pending
        .into_iter()
        .map(|p| Issue {
            kind: p.kind,
            file: side.file.to_path_buf(),
            loc: side.locs.loc(p.row),
            id: side.id(p.row).to_string(),
            message: p.message,
        })
        .collect();
    if let Some((kind, message)) = empty
        && !side.empty_rows.is_empty()
    {
        v.extend(side.empty_rows.iter().map(|&loc| Issue {
            kind,
            file: side.file.to_path_buf(),
            loc,
            id: String::new(),
            message: message.to_string(),
        }));
        v.sort_by_key(|i| match i.loc {
            Loc::Line(n) | Loc::Row(n) => n,
        });
    }
    v
}

/// Join ground truth and predictions by id into the evaluated records (ground-truth order), with
/// polars: the first row of each id on each side (`unique_stable`), then a left join of the
/// ground truth's on the predictions'. `same_file`: both sides are the rows of one file (truth
/// and prediction columns side by side), which pairs every row with itself without a join.
///
/// Issues: per side, in row order, ground truth first: an empty ground-truth id, a repeated id
/// (the first row is used), a ground truth that is not a coordinate or is (0, 0); a prediction
/// whose id is not in the ground truth, a repeated prediction id.
pub fn join(gt: &Side, pred: &Side, same_file: bool) -> PolarsResult<(Vec<PredictionRecord>, Issues)> {
    let mut gt_issues = Vec::new();
    let mut pred_issues = Vec::new();
    let empty: Vec<usize> = gt.ids.iter().enumerate().filter(|(_, v)| v.is_none_or(str::is_empty)).map(|(i, _)| i).collect();
    for &row in &empty {
        gt_issues.push(Pending { kind: IssueKind::GtEmptyId, row, message: "no id: not evaluated".into() });
    }
    let non_empty: Option<Vec<IdxSize>> = (!empty.is_empty()).then(|| {
        let mut is_empty = vec![false; gt.ids.len()];
        for &e in &empty {
            is_empty[e] = true;
        }
        (0..gt.ids.len()).filter(|i| !is_empty[*i]).map(|i| i as IdxSize).collect()
    });
    let g = keys(gt.ids, non_empty.as_deref())?;
    for &(row, first) in &g.repeats {
        let message = format!("duplicate of {}: not evaluated twice", gt.locs.loc(first));
        gt_issues.push(Pending { kind: IssueKind::GtDuplicate, row, message });
    }
    let g_rows: Vec<usize> = g.firsts.column(ROW)?.idx()?.iter().flatten().map(|r| r as usize).collect();
    // For each first ground-truth row (file order): the first prediction row of its id.
    let (pairs, p_repeats): (Vec<(usize, Option<usize>)>, Vec<(usize, usize)>) = if same_file {
        for &row in &empty {
            pred_issues.push(Pending { kind: IssueKind::PredUnknownId, row, message: "id not in the ground truth: ignored".into() });
        }
        (g_rows.iter().map(|&r| (r, Some(r))).collect(), g.repeats.clone())
    } else {
        let p = keys(pred.ids, None)?;
        let j = g.firsts.join(&p.firsts, ["id"], ["id"], left_ordered(), None)?;
        let gr = j.column(ROW)?.idx()?;
        let pr = j.column(&format!("{ROW}_right"))?.idx()?;
        let pairs: Vec<(usize, Option<usize>)> = gr.iter().zip(pr.iter()).map(|(g, p)| (g.unwrap() as usize, p.map(|p| p as usize))).collect();
        // First prediction rows whose id the ground truth lacks; their repeats are unknown too.
        let back = p.firsts.join(&g.firsts, ["id"], ["id"], left_ordered(), None)?;
        let mut unknown = vec![false; pred.ids.len()];
        let pr = back.column(ROW)?.idx()?;
        let gr = back.column(&format!("{ROW}_right"))?.idx()?;
        for (p, g) in pr.iter().zip(gr.iter()) {
            if g.is_none() {
                unknown[p.unwrap() as usize] = true;
            }
        }
        let mut repeats = Vec::new();
        for (row, first) in p.repeats {
            if unknown[first] {
                unknown[row] = true;
            } else {
                repeats.push((row, first));
            }
        }
        for (row, _) in unknown.iter().enumerate().filter(|(_, u)| **u) {
            pred_issues.push(Pending { kind: IssueKind::PredUnknownId, row, message: "id not in the ground truth: ignored".into() });
        }
        (pairs, repeats)
    };
    for (row, first) in p_repeats {
        let same = pred.lat.get(first) == pred.lat.get(row) && pred.lon.get(first) == pred.lon.get(row);
        let how = if same { "same values" } else { "DIFFERENT values" };
        let message = format!("duplicate of {} ({how}): the first row is used", pred.locs.loc(first));
        pred_issues.push(Pending { kind: IssueKind::PredDuplicate, row, message });
    }
    // Records in parallel: each ground-truth row checked, each prediction parsed. One vector of
    // results, turned into the records in place (a 1 M-row file allocates it once).
    let built: Vec<Result<PredictionRecord, Pending>> = pairs
        .par_iter()
        .map(|&(g, p)| {
            let t = coord(&gt.lat.get(g), &gt.lon.get(g)).map_err(|(_, msg)| Pending {
                kind: IssueKind::GtInvalid,
                row: g,
                message: format!("ground truth {msg}: not evaluated"),
            })?;
            let id = gt.id(g);
            Ok(match p {
                None => PredictionRecord::failed(id, t, Status::Missing),
                Some(p) => match coord(&pred.lat.get(p), &pred.lon.get(p)) {
                    Ok(q) => PredictionRecord::ok(id, t, q),
                    Err((st, _)) => PredictionRecord::failed(id, t, st),
                },
            })
        })
        .collect();
    for (b, &(g, _)) in built.iter().zip(&pairs) {
        if let Ok(r) = b
            && r.truth.lat == 0.0
            && r.truth.lon == 0.0
        {
            let message = "ground truth is (0, 0), Flickr's \"no location\": evaluated, check it".into();
            gt_issues.push(Pending { kind: IssueKind::GtNullIsland, row: g, message });
        }
    }
    let records: Vec<PredictionRecord> = built
        .into_iter()
        .filter_map(|b| match b {
            Ok(r) => Some(r),
            Err(p) => {
                gt_issues.push(p);
                None
            }
        })
        .collect();
    let no_id = "every cell read is empty (no id): not evaluated";
    let mut issues = locate(gt, gt_issues, Some((IssueKind::GtEmptyId, no_id)));
    // As rows with an empty id on each side (one file: on both, as such rows are above).
    let pred_empty = Some((IssueKind::PredUnknownId, "every cell read is empty (no id): ignored"));
    issues.extend(locate(pred, pred_issues, pred_empty));
    Ok((records, Issues(issues)))
}

/// [`join`] over rows given one by one (two files).
pub fn build_records<'a>(
    gt_file: &Path,
    gt: impl IntoIterator<Item = Cells<'a>>,
    pred_file: &Path,
    preds: impl IntoIterator<Item = Cells<'a>>,
) -> PolarsResult<(Vec<PredictionRecord>, Issues)> {
    let columns = |rows: Vec<Cells>| {
        let ids = StringChunked::from_iter_values("id".into(), rows.iter().map(|c| c.id.trim()));
        let lat = NumColumn::Cells(rows.iter().map(|c| c.lat.clone()).collect());
        let lon = NumColumn::Cells(rows.iter().map(|c| c.lon.clone()).collect());
        (ids, lat, lon, Locs::Given(rows.iter().map(|c| c.loc).collect()))
    };
    let g = columns(gt.into_iter().collect());
    let p = columns(preds.into_iter().collect());
    join(
        &Side { file: gt_file, ids: &g.0, lat: &g.1, lon: &g.2, locs: &g.3, empty_rows: &[] },
        &Side { file: pred_file, ids: &p.0, lat: &p.1, lon: &p.2, locs: &p.3, empty_rows: &[] },
        false,
    )
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_ids_take_the_fast_path_and_repeats_do_not() {
        let ids = |v: &[&str]| StringChunked::from_iter_values("id".into(), v.iter().copied());
        assert!(surely_distinct(&ids(&["a", "b", "c", ""])));
        assert!(!surely_distinct(&ids(&["a", "b", "a"])));
        let k = keys(&ids(&["x", "y", "z"]), None).unwrap();
        assert!(k.repeats.is_empty() && k.firsts.height() == 3);
        let k = keys(&ids(&["x", "y", "x", "y"]), None).unwrap();
        assert_eq!(k.repeats, vec![(2, 0), (3, 1)]);
        assert_eq!(k.firsts.height(), 2);
    }
}
