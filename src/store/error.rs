//! How storage fails, whatever the backend.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sqlite(String),
    #[error("{path} is not a chatd database ({why}); refusing to touch it")]
    Foreign { path: PathBuf, why: String },
    #[error("{path} is damaged ({why}); refusing to start on it: restore it from a backup")]
    Damaged { path: PathBuf, why: String },
    #[error("the storage thread has stopped")]
    Closed,
    #[error("cannot create {path}: {why}")]
    Create { path: PathBuf, why: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}
