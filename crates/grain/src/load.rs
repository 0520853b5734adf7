//! What a node carries.

/// What a node carries, for the cluster's dashboard: resident grains, and
/// counts since the process started (rates come from two readings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Grains in memory now.
    pub resident: u64,
    /// Mutations applied (durable) since start.
    pub mutations: u64,
    /// Reads served since start.
    pub reads: u64,
}
