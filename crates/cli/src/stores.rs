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
    /// directory; `file` means `default_dir`. Any other `scheme:` is an
    /// error, so `mysql://db` never becomes a directory named `mysql:`.
    pub fn parse(spec: &str, default_dir: &std::path::Path) -> anyhow::Result<Self> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            return Ok(StoreSpec::Postgres(spec.to_owned()));
        }
        if spec == "file" {
            return Ok(StoreSpec::File(default_dir.to_path_buf()));
        }
        if let Some(dir) = spec.strip_prefix("file:") {
            return Ok(StoreSpec::File(PathBuf::from(dir)));
        }
        if let Some((scheme, _)) = spec.split_once(':')
            && !scheme.is_empty()
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
        {
            anyhow::bail!(
                "unknown store {scheme:?}: use `file`, `file:<dir>`, a directory, or a postgres:// URL"
            );
        }
        if spec.is_empty() {
            anyhow::bail!(
                "the store is empty: use `file`, `file:<dir>`, a directory, or a postgres:// URL"
            );
        }
        Ok(StoreSpec::File(PathBuf::from(spec)))
    }

    /// Fails unless the store already holds a log (a migration source that
    /// does not exist is a mistake, not an empty store).
    pub fn require_existing(&self) -> anyhow::Result<()> {
        if let StoreSpec::File(dir) = self
            && !cart_store::file::holds_log(dir)
        {
            anyhow::bail!(
                "no event store at {}: it holds no {} (nor later segments of one)",
                dir.display(),
                cart_store::file::LOG_FILE
            );
        }
        Ok(())
    }

    /// Opens the store; `password` is PostgreSQL's when it is not in the
    /// URL; a file store compacts by itself above `compact_above` bytes
    /// (0: only when asked).
    pub async fn open(
        &self,
        fsync: FsyncPolicy,
        commit_wait: Duration,
        pg_pool_size: usize,
        password: Option<String>,
        compact_above: u64,
    ) -> anyhow::Result<Arc<dyn EventStore>> {
        Ok(match self {
            StoreSpec::File(dir) => {
                let auto_compaction = (compact_above > 0).then(|| cart_store::AutoCompaction {
                    min_bytes: compact_above,
                    ..Default::default()
                });
                let options = FileStoreOptions {
                    dir: dir.clone(),
                    fsync,
                    commit_wait,
                    auto_compaction,
                    checkpoint_every: Some(FileStoreOptions::DEFAULT_CHECKPOINT_EVERY),
                    segment_bytes: FileStoreOptions::DEFAULT_SEGMENT_BYTES,
                };
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
        let parse = |s: &str| StoreSpec::parse(s, d).unwrap();
        assert_eq!(parse("file"), StoreSpec::File("./data".into()));
        assert_eq!(parse("file:/x"), StoreSpec::File("/x".into()));
        assert_eq!(parse("/y"), StoreSpec::File("/y".into()));
        assert_eq!(parse("./rel/dir"), StoreSpec::File("./rel/dir".into()));
        let pg = parse("postgres://u:secret@db:5432/carts");
        assert_eq!(pg, StoreSpec::Postgres("postgres://u:secret@db:5432/carts".into()));
        assert!(!pg.redacted().contains("secret"));
        let pg = parse("postgres://db/carts?password=secret&sslmode=require");
        assert_eq!(pg.redacted(), "postgres://db/carts?sslmode=require");
        for bad in ["mysql://x", "redis:6379", "s3://bucket/x", ""] {
            let e = StoreSpec::parse(bad, d).unwrap_err().to_string();
            assert!(e.contains("use `file`"), "{bad}: {e}");
        }
    }
}
