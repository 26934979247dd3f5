//! Atomic file writes: write to a temporary file in the destination directory, fsync, rename.
//!
//! Invariant: a reader never observes a partially written file at the final path. A crash leaves
//! at most a `.tmp-*` file beside it, which later writes overwrite.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Error of an atomic write, naming the final path.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct AtomicWriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{}", std::process::id(), name))
}

/// Write a file atomically through a callback that receives a buffered writer.
pub fn write_with<F>(path: &Path, f: F) -> Result<(), AtomicWriteError>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    let err = |source| AtomicWriteError { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        f(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Write bytes atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    write_with(path, |w| w.write_all(bytes))
}

/// Write a value as pretty JSON atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), AtomicWriteError> {
    write_with(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(io::Error::other)?;
        w.write_all(b"\n")
    })
}

/// The temporary path used for `path`, for writers (FAISS, Parquet) that need a file name.
/// Call [`commit`] after the writer has closed the file.
pub fn temp_for(path: &Path) -> Result<PathBuf, AtomicWriteError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| AtomicWriteError { path: path.to_path_buf(), source })?;
    }
    Ok(tmp_path(path))
}

/// Fsync `tmp` and rename it over `path`.
pub fn commit(tmp: &Path, path: &Path) -> Result<(), AtomicWriteError> {
    let err = |source| AtomicWriteError { path: path.to_path_buf(), source };
    File::open(tmp).and_then(|f| f.sync_all()).map_err(err)?;
    fs::rename(tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_no_file_and_no_temp() {
        let dir = std::env::temp_dir().join(format!("georag-atomic-{}", std::process::id()));
        let path = dir.join("x.json");
        let r = write_with(&path, |_| Err(io::Error::other("boom")));
        assert!(r.is_err());
        assert!(!path.exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        write_bytes(&path, b"ok").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"ok");
        fs::remove_dir_all(&dir).unwrap();
    }
}
