//! Dataset ingest: every dataset, generated or prepared from real files, becomes a directory of
//! Parquet shards plus a manifest (see [`shard`]). Stages downstream only ever read shards.

pub mod cities;
pub mod def;
pub mod leakage;
pub mod prepare;
pub mod verify;
pub mod shard;
pub mod synthetic;

pub use shard::{Dataset, DatasetRow, Manifest, ShardError, ShardWriter};

use crate::util::progress::Progress;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a dataset comes from, chosen by `kind:` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSpec {
    /// The embedded synthetic world (generated on first use, then cached by fingerprint).
    Synthetic {
        #[serde(default)]
        world: synthetic::WorldParams,
        split: synthetic::Split,
        n: usize,
        #[serde(default = "default_shard_rows")]
        shard_rows: usize,
    },
    /// A dataset directory written by the shard writer (a `manifest.json` and its shards).
    Shards { dir: PathBuf },
}

fn default_shard_rows() -> usize {
    4096
}

/// Error materialising a dataset.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// Open the dataset a spec names, generating it into the cache first when needed.
/// Returns the dataset and whether it was reused from the cache.
pub fn materialize(spec: &DatasetSpec, cache_dir: &Path) -> Result<(Dataset, bool), IngestError> {
    match spec {
        DatasetSpec::Synthetic { world, split, n, shard_rows } => {
            let s = synthetic::SyntheticSpec { world: world.clone(), split: *split, n: *n };
            let dir = cache_dir.join("datasets").join(format!("synthetic-{}-{}", split.name(), s.fingerprint()));
            if let Ok(d) = Dataset::open(&dir) {
                if d.manifest.shard_rows == *shard_rows {
                    return Ok((d, true));
                }
            }
            let progress = Progress::new(&format!("generate {}", split.name()), *n as u64);
            synthetic::generate(&s, &dir, *shard_rows, &progress)?;
            progress.finish();
            Ok((Dataset::open(&dir)?, false))
        }
        DatasetSpec::Shards { dir } => Ok((Dataset::open(dir)?, true)),
    }
}
