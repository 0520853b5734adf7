//! `cart-actor backup --from <store> --to <dir>` and `cart-actor restore
//! --from <dir> --to <store>`: a copy of a live store (file or PostgreSQL)
//! as a file-store directory, and back.
//!
//! A backup copies every cart's log as it is when that cart is reached
//! (with [`crate::migrate::copy_all`]), so every mutation acknowledged before
//! the backup began is in it, and each cart is whole (a prefix of its log,
//! never a torn one). It also keeps the store's cart-id key, so the ids
//! minted before the backup are still recognised after a restore. The
//! store's identity is not kept: a restored store is a new store.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cart_store::{EventStore, FileStoreOptions, FsyncPolicy};
use clap::Args;

use crate::migrate::{Summary, copy_all};
use crate::stores::StoreSpec;

/// Secrets a backup carries: without the cart-id key, every cookie minted
/// before the backup would be refused after a restore.
const KEPT_SECRETS: &[&str] = &[cart_grain::mint::SECRET_NAME];

/// Flags of `cart-actor backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The live store: a data directory (or `file:<dir>`) or a PostgreSQL URL.
    #[arg(long)]
    pub from: String,
    /// A new (or empty) directory to write the backup to.
    #[arg(long)]
    pub to: PathBuf,
}

/// Flags of `cart-actor restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A directory written by `cart-actor backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// The store to restore into (new, or holding a prefix of the backup's
    /// carts, as after an interrupted restore).
    #[arg(long)]
    pub to: String,
}

/// Writes the backup and prints a summary.
pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let from = StoreSpec::parse(&args.from, std::path::Path::new("./data"))?;
        from.require_existing().context("--from")?;
        if std::fs::read_dir(&args.to).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!("--to {}: the directory is not empty; back up into a new one", args.to.display());
        }
        let summary = copy(&from, &StoreSpec::File(args.to.clone())).await?;
        println!(
            "backed up {} carts ({} events) from {} to {}",
            summary.carts,
            summary.copied,
            from.redacted(),
            args.to.display()
        );
        Ok(())
    })
}

/// Restores a backup and prints a summary.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let from = StoreSpec::File(args.from.clone());
        from.require_existing().context("--from is not a backup")?;
        let to = StoreSpec::parse(&args.to, std::path::Path::new("./data"))?;
        if from == to {
            bail!("--from and --to are the same store");
        }
        let summary = copy(&from, &to).await?;
        println!(
            "restored {} carts from {} to {}: {} events copied, {} already present",
            summary.carts,
            args.from.display(),
            to.redacted(),
            summary.copied,
            summary.present
        );
        Ok(())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Copies the kept secrets, then every cart, from `from` to `to`.
async fn copy(from: &StoreSpec, to: &StoreSpec) -> anyhow::Result<Summary> {
    let (wait, always) = (FileStoreOptions::DEFAULT_COMMIT_WAIT, FsyncPolicy::Always);
    let source = from.open(always, wait, 4, None, 0).await?;
    let destination = to.open(always, wait, 4, None, 0).await?;
    copy_secrets(&*source, &*destination).await?;
    copy_all(&*source, &*destination).await
}

/// Gives `destination` the source's kept secrets; refuses if it already
/// has different ones (ids minted under either key would stop working).
async fn copy_secrets(source: &dyn EventStore, destination: &dyn EventStore) -> anyhow::Result<()> {
    for &name in KEPT_SECRETS {
        let value = source.secret(name).await.with_context(|| format!("cannot read {name}"))?;
        let kept = destination
            .secret_or_insert(name, value)
            .await
            .with_context(|| format!("cannot write {name}"))?;
        if kept != value {
            bail!(
                "the destination already has another {name}: restore into a new store, or the \
                 cart ids minted under one of the two keys would no longer be recognised"
            );
        }
    }
    Ok(())
}
