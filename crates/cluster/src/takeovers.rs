//! Failover logged in summary: a node that takes over the carts of one that
//! died logs how many it took from whom, once per ping round, not a line per
//! cart (a failover moves thousands of carts at once).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::node::NodeAddr;

/// Most (node, way) pairs counted between two summaries; a new one beyond
/// that writes the summary at once.
const MAX_PAIRS: usize = 256;

/// How this node came to serve a cart another node held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// The holder handed it over when asked.
    HandedOver,
    /// Nothing listens where the holder was, and it was never heard of.
    HolderGone,
    /// The holder is silent and its serving lease has run out.
    LeaseRanOut,
}

impl Way {
    /// A stable name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Way::HandedOver => "handed_over",
            Way::HolderGone => "holder_gone",
            Way::LeaseRanOut => "lease_ran_out",
        }
    }
}

/// Carts taken over since the last summary, by previous holder and way.
#[derive(Debug, Default)]
pub struct Takeovers {
    counts: Mutex<HashMap<(NodeAddr, Way), u64>>,
}

impl Takeovers {
    /// Counts one cart taken over from `from`.
    pub fn record(&self, from: &NodeAddr, way: Way) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (from.clone(), way);
        if !counts.contains_key(&key) && counts.len() >= MAX_PAIRS {
            log(std::mem::take(&mut *counts));
        }
        *counts.entry(key).or_default() += 1;
    }

    /// Logs what was counted since the last summary (one line per previous
    /// holder and way) and starts counting again.
    pub fn summarise(&self) {
        let counts =
            std::mem::take(&mut *self.counts.lock().unwrap_or_else(PoisonError::into_inner));
        log(counts);
    }
}

fn log(counts: HashMap<(NodeAddr, Way), u64>) {
    for ((from, way), carts) in counts {
        tracing::info!(from = %from, way = way.name(), carts, "took over carts");
    }
}
