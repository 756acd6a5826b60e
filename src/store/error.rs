//! How storage fails, whatever the backend.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sqlite(String),
    /// A PostgreSQL failure (connection, query, commit), or a database chatd will not use.
    #[error("{0}")]
    Postgres(String),
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

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => StoreError::Postgres(format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
            None => StoreError::Postgres(format!("PostgreSQL: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => StoreError::Postgres(format!("PostgreSQL connection pool: {e}")),
        }
    }
}
