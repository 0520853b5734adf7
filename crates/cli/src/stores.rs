//! Opening an event store from its description: `file` / `file:<dir>` / a
//! directory, or a PostgreSQL URL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cart_store::{EventStore, FileStore, FileStoreOptions, FsyncPolicy, PgStore, PgStoreOptions};

/// Where events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The file store in this directory.
    File(PathBuf),
    /// PostgreSQL at this URL.
    Postgres(String),
}

impl StoreSpec {
    /// Parses `postgres://...`/`postgresql://...`, `file:<dir>`, or a
    /// directory; `file` means `default_dir`.
    pub fn parse(spec: &str, default_dir: &std::path::Path) -> Self {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            StoreSpec::Postgres(spec.to_owned())
        } else if spec == "file" {
            StoreSpec::File(default_dir.to_path_buf())
        } else {
            StoreSpec::File(PathBuf::from(spec.strip_prefix("file:").unwrap_or(spec)))
        }
    }

    /// Opens the store; `password` is PostgreSQL's when it is not in the
    /// URL.
    pub async fn open(
        &self,
        fsync: FsyncPolicy,
        commit_wait: Duration,
        pg_pool_size: usize,
        password: Option<String>,
    ) -> anyhow::Result<Arc<dyn EventStore>> {
        Ok(match self {
            StoreSpec::File(dir) => {
                let options = FileStoreOptions { dir: dir.clone(), fsync, commit_wait };
                let store = tokio::task::spawn_blocking(move || FileStore::open(options))
                    .await?
                    .with_context(|| format!("cannot open the event store in {}", dir.display()))?;
                Arc::new(store)
            }
            StoreSpec::Postgres(url) => {
                let options = PgStoreOptions {
                    url: url.clone(),
                    password,
                    pool_size: pg_pool_size,
                    timeout: Duration::from_secs(1),
                };
                Arc::new(
                    PgStore::open(options)
                        .await
                        .context("cannot open the PostgreSQL event store")?,
                )
            }
        })
    }

    /// A description without credentials, for logs.
    pub fn redacted(&self) -> String {
        match self {
            StoreSpec::File(dir) => format!("file:{}", dir.display()),
            StoreSpec::Postgres(url) => {
                let (base, query) = url.split_once('?').unwrap_or((url, ""));
                let base = match base.split_once('@') {
                    Some((_, host)) => format!("postgres://…@{host}"),
                    None => base.to_owned(),
                };
                let query: Vec<&str> = query
                    .split('&')
                    .filter(|p| !p.is_empty() && !p.starts_with("password="))
                    .collect();
                if query.is_empty() { base } else { format!("{base}?{}", query.join("&")) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_specs() {
        let d = std::path::Path::new("./data");
        assert_eq!(StoreSpec::parse("file", d), StoreSpec::File("./data".into()));
        assert_eq!(StoreSpec::parse("file:/x", d), StoreSpec::File("/x".into()));
        assert_eq!(StoreSpec::parse("/y", d), StoreSpec::File("/y".into()));
        let pg = StoreSpec::parse("postgres://u:secret@db:5432/carts", d);
        assert_eq!(pg, StoreSpec::Postgres("postgres://u:secret@db:5432/carts".into()));
        assert!(!pg.redacted().contains("secret"));
        let pg = StoreSpec::parse("postgres://db/carts?password=secret&sslmode=require", d);
        assert_eq!(pg.redacted(), "postgres://db/carts?sslmode=require");
    }
}
