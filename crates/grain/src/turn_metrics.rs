//! The runtime's metric handles, registered once rather than looked up by
//! name and labels on every turn.

use std::sync::atomic::{AtomicU64, Ordering};

use cart_domain::MutationType;
use metrics::{Counter, Histogram};

use crate::load::Load;

/// How a mutation ended, the `outcome` label of `cart_mutations_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Applied and durable.
    Ok,
    /// Refused: the client's request was wrong (a 4xx).
    Refused,
    /// Failed: the service could not apply it (a 5xx).
    Failed,
}

/// Handles of the metrics a turn records.
pub(crate) struct TurnMetrics {
    /// `cart_mutations_total{type, outcome}`, indexed by type code, then outcome.
    mutations: Vec<[Counter; 3]>,
    /// `cart_log_append_duration_seconds`.
    pub append_duration: Histogram,
    /// Mutations applied and reads served since start, for [`Load`].
    applied: AtomicU64,
    reads: AtomicU64,
}

impl TurnMetrics {
    /// Registers the handles with the installed recorder (if any).
    pub fn new() -> Self {
        let max_code = MutationType::ALL.iter().map(|t| usize::from(t.code())).max().unwrap_or(0);
        let mut mutations = vec![[Counter::noop(), Counter::noop(), Counter::noop()]; max_code + 1];
        for &kind in MutationType::ALL {
            let counter = |outcome: &'static str| {
                let labels = [("type", kind.name()), ("outcome", outcome)];
                metrics::counter!(crate::families::MUTATIONS.name, &labels)
            };
            mutations[usize::from(kind.code())] =
                [counter("ok"), counter("refused"), counter("failed")];
        }
        TurnMetrics {
            mutations,
            append_duration: metrics::histogram!(crate::families::LOG_APPEND_DURATION.name),
            applied: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    /// Counts one mutation of `kind` that ended with `outcome`.
    pub fn count(&self, kind: MutationType, outcome: Outcome) {
        if let Some(counters) = self.mutations.get(usize::from(kind.code())) {
            counters[outcome as usize].increment(1);
        }
        if matches!(outcome, Outcome::Ok) {
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one read served.
    pub fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, with `resident` grains.
    pub fn load(&self, resident: usize) -> Load {
        Load {
            resident: resident as u64,
            mutations: self.applied.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
        }
    }
}
