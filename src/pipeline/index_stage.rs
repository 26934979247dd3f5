//! `georag index CONFIG`: the index stage on its own, over the embedding store on disk (one
//! shard of vectors in memory at a time), on one machine or split over a job array.

use super::PipelineError;
use crate::config::Config;
use crate::embed;
use crate::index::build::{self, PartRecord, TrainRecord};
use crate::index::source::StoreShards;
use crate::index::{tune, BuiltIndex};
use crate::ingest;
use std::path::PathBuf;

/// What `georag index` does.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexAction {
    /// Train, add every shard, measure (or open the complete index).
    Build,
    /// Train only (before a job array's workers).
    Train,
    /// Add the shards worker `i` of `n` owns to a partial index.
    Worker { i: usize, n: usize },
    /// Merge the partial indexes of `n` workers.
    Merge { n: usize },
}

/// What it produced.
pub enum IndexOutcome {
    Built(Box<BuiltIndex>),
    Trained(Box<TrainRecord>, PathBuf),
    Part(Box<PartRecord>),
}

/// Open the database's embedding store of `cfg` (it must be complete: `georag embed` first).
/// The encoder is identified from its files, not built: an index worker decodes no weights.
pub fn store_of(cfg: &Config) -> Result<StoreShards, PipelineError> {
    let (db, _) = ingest::materialize(&cfg.database, &cfg.cache_dir)?;
    let (fp, dim) = embed::identity(&cfg.encoder)?;
    let dir = embed::store_dir_of(&cfg.cache_dir, &fp, &db);
    Ok(StoreShards::open(&dir, dim, db.manifest.shards.len())?)
}

/// Run one index action; `config` is the path as the user typed it (for the commands that
/// error messages suggest).
pub fn index_stage(cfg: &Config, action: &IndexAction, config: &str) -> Result<IndexOutcome, PipelineError> {
    let src = store_of(cfg)?;
    let spec = &cfg.index;
    let cache = &cfg.cache_dir;
    Ok(match action {
        IndexAction::Build => IndexOutcome::Built(Box::new(build::build_or_load(spec, &src, cache)?)),
        IndexAction::Train => {
            let (t, dir) = build::train_only(spec, &src, cache)?;
            IndexOutcome::Trained(Box::new(t), dir)
        }
        IndexAction::Worker { i, n } => IndexOutcome::Part(Box::new(build::worker_part(spec, &src, cache, *i, *n, config)?)),
        IndexAction::Merge { n } => IndexOutcome::Built(Box::new(build::merge_parts(spec, &src, cache, *n, config)?)),
    })
}

/// `--tune`: sweep the built index's search setting.
pub fn tune_index(cfg: &Config, built: &mut BuiltIndex, target: Option<f64>) -> Result<tune::Tuning, PipelineError> {
    Ok(tune::tune(&cfg.index, built, target)?)
}
