//! `cart-actor migrate --from <store> --to <store>`: copies every cart's log.
//!
//! Idempotent and resumable: for each cart, the events the destination
//! already has must equal the source's first events (else the copy stops
//! with an error naming the cart), and only the rest are appended. Running it
//! again copies nothing; running it after an interruption finishes the job.

use anyhow::{Context, bail};
use cart_store::{Event, EventStore, Fence, FileStoreOptions, FsyncPolicy, NewEvent};
use clap::Args;

use crate::stores::StoreSpec;

/// Events appended per transaction.
const CHUNK: usize = 500;

/// Flags of `cart-actor migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Source store: a data directory (or `file:<dir>`) or a PostgreSQL URL.
    #[arg(long)]
    pub from: String,
    /// Destination store, in the same forms.
    #[arg(long)]
    pub to: String,
}

/// Runs the copy and prints a summary.
pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let here = std::path::Path::new("./data");
        let (from, to) = (StoreSpec::parse(&args.from, here)?, StoreSpec::parse(&args.to, here)?);
        if from == to {
            bail!("--from and --to are the same store");
        }
        from.require_existing().context("--from")?;
        let wait = FileStoreOptions::DEFAULT_COMMIT_WAIT;
        let source = from.open(FsyncPolicy::Always, wait, 4, None, 0).await?;
        let destination = to.open(FsyncPolicy::Always, wait, 4, None, 0).await?;
        let summary = copy_all(&*source, &*destination).await?;
        println!(
            "migrated {} carts from {} to {}: {} events copied, {} already present",
            summary.carts,
            from.redacted(),
            to.redacted(),
            summary.copied,
            summary.present
        );
        Ok(())
    })
}

/// What a copy did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Carts in the source.
    pub carts: usize,
    /// Events appended to the destination.
    pub copied: usize,
    /// Events the destination had already.
    pub present: usize,
}

/// Copies every cart of `source` into `destination`.
pub async fn copy_all(
    source: &dyn EventStore,
    destination: &dyn EventStore,
) -> anyhow::Result<Summary> {
    let mut ids = source.cart_ids().await.context("cannot list the source's carts")?;
    ids.sort();
    let mut summary = Summary { carts: ids.len(), ..Summary::default() };
    for id in ids {
        let cart = source.load(&id).await.with_context(|| format!("cannot read cart {id}"))?;
        if cart.is_empty() {
            continue;
        }
        let existing = destination
            .load(&id)
            .await
            .with_context(|| format!("cannot read cart {id} at the destination"))?;
        if existing.is_empty() {
            summary.copied += cart.events.len();
            destination
                .import(&id, cart)
                .await
                .with_context(|| format!("cannot write cart {id}"))?;
            continue;
        }
        // A copy cut short before: the destination holds a prefix of the
        // source's events, to be carried on from.
        let mut version = existing.version();
        let covered = cart.snapshot.as_ref().map_or(0, |s| s.version);
        let differs = version > cart.version()
            || covered > version
            || existing
                .events
                .iter()
                .any(|e| cart.events.iter().find(|s| s.seq == e.seq).is_some_and(|s| !same(s, e)));
        if differs {
            bail!(
                "cart {id}: the destination's log differs from the source's; not copying over it"
            );
        }
        summary.present += existing.events.len();
        let mut fence = match destination.claim_of(&id).await? {
            Some(claim) if claim.owner == cart_store::TOOL_OWNER => Fence::Epoch(claim.epoch),
            _ => Fence::Claim(cart_store::TOOL_OWNER.into()),
        };
        let missing: Vec<&Event> = cart.events.iter().filter(|e| e.seq > version).collect();
        for chunk in missing.chunks(CHUNK) {
            let batch: Vec<NewEvent> = chunk
                .iter()
                .map(|e| NewEvent {
                    kind: e.kind,
                    timestamp_ms: e.timestamp_ms,
                    payload: e.payload.clone(),
                    idempotency: e.idempotency.clone(),
                })
                .collect();
            let appended = destination
                .append(&id, version, fence, batch)
                .await
                .with_context(|| format!("cannot write cart {id}"))?;
            version = appended.version;
            fence = Fence::Epoch(appended.epoch);
            summary.copied += chunk.len();
        }
    }
    destination.flush().await?;
    Ok(summary)
}

fn same(a: &Event, b: &Event) -> bool {
    a.seq == b.seq && a.kind == b.kind && a.payload == b.payload && a.timestamp_ms == b.timestamp_ms
}
