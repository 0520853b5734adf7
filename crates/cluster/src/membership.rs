//! The member view: who is in the cluster, as this node sees it.
//!
//! Hosts are learned from discovery and from other nodes' Negotiate lists,
//! but a learned host becomes a *member* only after this node's own ping to it
//! succeeds, so a dead node is never brought back by a peer's stale list. A
//! member that misses `max_misses` pings in a row is evicted; a Closing notice
//! removes it at once and keeps it out for a while. The view (members plus
//! this node) is what placement hashes over; every change bumps its version.
//!
//! Time enters the rules only through the `now_ms` arguments (monotonic
//! milliseconds, [`cart_grain::Clock::monotonic_ms`]), so they are tested
//! without sleeping; the wall clock given by [`Membership::with_clock`] only
//! stamps the log of recent changes that operators read.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use cart_grain::{Clock, Load, SystemClock};
use serde::Serialize;
use tokio::sync::watch;

use crate::node::NodeAddr;

/// How long a node that sent Closing is kept out of the view.
pub const DEPARTED_QUARANTINE_MS: u64 = 30_000;
/// How long an evicted member still counts towards the majority.
pub const QUORUM_MEMORY_MS: u64 = 30_000;
/// Most hosts waiting for their first ping; further ones are ignored until
/// pings have sorted these out (each is dialled once per round).
pub const MAX_CANDIDATES: usize = 256;
/// How many view changes [`Membership::recent_changes`] remembers.
pub const RECENT_CHANGES: usize = 32;

#[derive(Debug, Clone)]
struct MemberState {
    misses: u32,
    last_ok_ms: u64,
    /// What its last ping reply said it carries.
    load: Option<Load>,
}

impl MemberState {
    fn answered(now_ms: u64) -> Self {
        MemberState { misses: 0, last_ok_ms: now_ms, load: None }
    }
}

/// One change of the view, as `/api/cluster` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ViewChange {
    /// When, ms since the Unix epoch (this node's clock).
    pub at_ms: u64,
    /// What happened: `joined`, `evicted`, `refused`, `closed` or `leaving`.
    pub event: &'static str,
    /// The host it happened to.
    pub host: String,
    /// The view version it made.
    pub view_version: u64,
    /// Members after it, this node included unless it is leaving.
    pub members: usize,
}

#[derive(Debug, Default)]
struct Inner {
    members: BTreeMap<NodeAddr, MemberState>,
    candidates: BTreeSet<NodeAddr>,
    /// Hosts that sent Closing: when, and the incarnation that sent it.
    departed: HashMap<NodeAddr, (u64, u64)>,
    /// Members evicted for silence: when, and when they last answered. For
    /// [`QUORUM_MEMORY_MS`] they still count towards the majority this node
    /// must reach, so a node cut off from the others does not become a
    /// majority of one by evicting them.
    evicted: HashMap<NodeAddr, (u64, u64)>,
    /// The hosts discovery named last (they count towards the majority
    /// whether they answer or not).
    discovered: BTreeSet<NodeAddr>,
    /// Whether the last ping round reached a majority.
    in_majority: bool,
    /// Hosts refused for using another event store, each reported once.
    foreign: BTreeSet<NodeAddr>,
    version: u64,
    closing: bool,
    /// The current view, rebuilt on every change so reads share it.
    view: Arc<[NodeAddr]>,
    /// The last [`RECENT_CHANGES`] changes, oldest first.
    recent: VecDeque<ViewChange>,
}

impl Inner {
    /// Whether `host`, answering as `incarnation`, is the run that said
    /// Closing within the quarantine.
    fn quarantines(&self, host: &NodeAddr, incarnation: u64, now_ms: u64) -> bool {
        self.departed.get(host).is_some_and(|(at, gone)| {
            *gone == incarnation && now_ms.saturating_sub(*at) < DEPARTED_QUARANTINE_MS
        })
    }
}

/// When this node last heard from a host, for the takeover rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastHeard {
    /// It said Closing: it serves nothing any more.
    Closed,
    /// Its last answered ping, monotonic ms.
    At(u64),
    /// Never (since this node started).
    Never,
}

/// One member as shown by `/api/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// Its address.
    pub host: String,
    /// Consecutive missed pings.
    pub misses: u32,
    /// How long ago its last ping succeeded, ms (0 for this node).
    pub last_ok_ago_ms: u64,
    /// Whether this is the reporting node.
    pub me: bool,
    /// Resident carts, and mutations applied and reads served since its
    /// process started, as its last ping reply said (this node's own for
    /// `me`; absent for a peer that did not say).
    pub load: Option<LoadStatus>,
}

/// [`Load`] as `/api/cluster` shows it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoadStatus {
    /// Grains in memory.
    pub resident_carts: u64,
    /// Mutations applied since start.
    pub mutations: u64,
    /// Reads served since start.
    pub reads: u64,
}

impl From<Load> for LoadStatus {
    fn from(load: Load) -> Self {
        LoadStatus { resident_carts: load.resident, mutations: load.mutations, reads: load.reads }
    }
}

/// This node's view of the cluster.
pub struct Membership {
    me: NodeAddr,
    incarnation: u64,
    store_id: String,
    max_misses: u32,
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
    clock: Arc<dyn Clock>,
}

impl Membership {
    /// A view holding only `me`.
    pub fn new(me: NodeAddr, max_misses: u32) -> Self {
        Self::with_incarnation(me, max_misses, 0)
    }

    /// A view holding only `me`, this run of the process being
    /// `incarnation` (see [`Membership::incarnation`]).
    pub fn with_incarnation(me: NodeAddr, max_misses: u32, incarnation: u64) -> Self {
        let inner = Inner { view: Arc::from(vec![me.clone()]), ..Inner::default() };
        Membership {
            me,
            incarnation,
            store_id: String::new(),
            max_misses: max_misses.max(1),
            inner: Mutex::new(inner),
            changes: watch::channel(0).0,
            clock: Arc::new(SystemClock),
        }
    }

    /// This view, stamping its log of changes with `clock`'s wall time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// This view, for a node whose event store has identity `store_id`:
    /// hosts answering with another one are never admitted (empty: not
    /// checked).
    pub fn with_store_id(mut self, store_id: String) -> Self {
        self.store_id = store_id;
        self
    }

    /// The identity of this node's event store (empty when unknown).
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// A ping to `host` was answered by `incarnation`, which uses the store
    /// `store_id`: as [`Membership::ping_ok`], unless the store is another
    /// one (a node given its own data directory, or another database); then
    /// `host` is refused for good, reported once, and `false` returned.
    pub fn ping_answered(
        &self,
        host: &NodeAddr,
        now_ms: u64,
        incarnation: u64,
        store_id: &str,
        load: Option<Load>,
    ) -> bool {
        let same = self.store_id.is_empty() || store_id.is_empty() || self.store_id == store_id;
        if !same {
            if self.refuse_foreign(host) {
                tracing::error!(peer = %host, theirs = %store_id, ours = %self.store_id, "refusing a node that uses another event store: nodes of one cluster must share one store (one data directory or one database)");
            }
            return false;
        }
        self.ping_ok(host, now_ms, incarnation);
        if let Some(m) = self.inner().members.get_mut(host) {
            m.load = load;
        }
        true
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Which run of this node's process this is: different on every start,
    /// so peers tell a restarted node from the one that said Closing.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This node's address.
    pub fn me(&self) -> &NodeAddr {
        &self.me
    }

    /// Notified with the view version on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn compute_view(&self, inner: &Inner) -> Arc<[NodeAddr]> {
        let mut view: Vec<NodeAddr> = inner.members.keys().cloned().collect();
        if !inner.closing {
            view.push(self.me.clone());
            view.sort();
        }
        view.into()
    }

    fn changed(&self, inner: &mut Inner, what: &'static str, host: &NodeAddr) {
        inner.version += 1;
        inner.view = self.compute_view(inner);
        let members = inner.view.len();
        tracing::info!(event = what, host = %host, view_version = inner.version, members, "membership changed");
        if inner.recent.len() == RECENT_CHANGES {
            inner.recent.pop_front();
        }
        let at_ms = self.clock.now_ms();
        let change = ViewChange {
            at_ms,
            event: what,
            host: host.to_string(),
            view_version: inner.version,
            members,
        };
        inner.recent.push_back(change);
        metrics::gauge!(crate::families::REMOTE_HOSTS.name).set(inner.members.len() as f64);
        self.changes.send_replace(inner.version);
    }

    /// The members placement hashes over: alive peers plus this node (unless
    /// it is closing), sorted.
    pub fn view(&self) -> Arc<[NodeAddr]> {
        Arc::clone(&self.inner().view)
    }

    /// The view's version; it grows with every change.
    pub fn version(&self) -> u64 {
        self.inner().version
    }

    /// Alive peers (members other than this node).
    pub fn peers(&self) -> Vec<NodeAddr> {
        self.inner().members.keys().cloned().collect()
    }

    /// Everyone worth pinging: members, candidates, and the hosts that
    /// count towards the majority without being members (evicted lately,
    /// or named by discovery), so a healed or restarted node rejoins within
    /// one ping interval.
    pub fn ping_targets(&self) -> Vec<NodeAddr> {
        let inner = self.inner();
        let mut targets: BTreeSet<&NodeAddr> =
            inner.members.keys().chain(inner.candidates.iter()).collect();
        targets.extend(inner.evicted.keys());
        targets.extend(inner.discovered.iter());
        targets.into_iter().cloned().collect()
    }

    /// Hosts heard of that have not answered a ping yet.
    pub fn candidates(&self) -> Vec<NodeAddr> {
        self.inner().candidates.iter().cloned().collect()
    }

    /// Whether `host` is a member (or this node).
    pub fn is_member(&self, host: &NodeAddr) -> bool {
        *host == self.me || self.inner().members.contains_key(host)
    }

    /// Records hosts heard of (from discovery or Negotiate). Unknown ones
    /// become candidates; returns them.
    pub fn learn(&self, hosts: impl IntoIterator<Item = NodeAddr>, now_ms: u64) -> Vec<NodeAddr> {
        let mut inner = self.inner();
        inner.departed.retain(|_, (at, _)| now_ms.saturating_sub(*at) < DEPARTED_QUARANTINE_MS);
        let mut new = Vec::new();
        for host in hosts {
            // A departed host is a candidate too: only its answer to a ping
            // (which incarnation is it?) decides whether it may join.
            if host == self.me || inner.members.contains_key(&host) {
                continue;
            }
            if inner.candidates.len() >= MAX_CANDIDATES {
                tracing::warn!(host = %host, "too many hosts waiting for a first ping; ignoring");
                continue;
            }
            if inner.candidates.insert(host.clone()) {
                new.push(host);
            }
        }
        new
    }

    /// Whether `host`, in the incarnation that answered, announced its
    /// departure within the quarantine.
    pub fn is_quarantined(&self, host: &NodeAddr, incarnation: u64, now_ms: u64) -> bool {
        self.inner().quarantines(host, incarnation, now_ms)
    }

    /// A ping to `host` succeeded and it said it is `incarnation`: a
    /// candidate becomes a member, unless that very incarnation said it is
    /// closing (a restarted process is a new incarnation and joins at once).
    pub fn ping_ok(&self, host: &NodeAddr, now_ms: u64, incarnation: u64) {
        let mut inner = self.inner();
        if let Some(m) = inner.members.get_mut(host) {
            m.misses = 0;
            m.last_ok_ms = now_ms;
            return;
        }
        if inner.quarantines(host, incarnation, now_ms) {
            inner.candidates.remove(host);
            return;
        }
        // A new run of a departed host: the old one's quarantine is over.
        inner.departed.remove(host);
        let known = inner.evicted.remove(host).is_some() || inner.discovered.contains(host);
        if inner.candidates.remove(host) || known {
            inner.members.insert(host.clone(), MemberState::answered(now_ms));
            self.changed(&mut inner, "joined", host);
        }
    }

    /// A ping to `host` failed or timed out. A member is evicted after
    /// `max_misses` in a row; a candidate is forgotten (discovery or
    /// negotiation will offer it again).
    pub fn ping_failed(&self, host: &NodeAddr) {
        let mut inner = self.inner();
        inner.candidates.remove(host);
        let evict = match inner.members.get_mut(host) {
            Some(m) => {
                m.misses += 1;
                m.misses >= self.max_misses
            }
            None => false,
        };
        if evict && let Some(gone) = inner.members.remove(host) {
            // The time of eviction is stamped by the next `record_round`.
            inner.evicted.insert(host.clone(), (u64::MAX, gone.last_ok_ms));
            self.changed(&mut inner, "evicted", host);
        }
    }

    /// `host` answered with another event store's identity: it is never a
    /// member. Returns whether this is news (to report it once).
    fn refuse_foreign(&self, host: &NodeAddr) -> bool {
        let mut inner = self.inner();
        inner.candidates.remove(host);
        if inner.members.remove(host).is_some() {
            self.changed(&mut inner, "refused", host);
        }
        inner.foreign.insert(host.clone())
    }

    /// Records the hosts discovery names now: they count towards the
    /// majority (answering or not) until discovery stops naming them.
    pub fn discovered(&self, hosts: impl IntoIterator<Item = NodeAddr>) {
        let mut inner = self.inner();
        inner.discovered = hosts.into_iter().filter(|h| *h != self.me).collect();
    }

    /// When this node last heard from `host`.
    pub fn last_heard(&self, host: &NodeAddr) -> LastHeard {
        let inner = self.inner();
        if let Some(m) = inner.members.get(host) {
            LastHeard::At(m.last_ok_ms)
        } else if let Some((_, last_ok)) = inner.evicted.get(host) {
            LastHeard::At(*last_ok)
        } else if inner.departed.contains_key(host) {
            LastHeard::Closed
        } else {
            LastHeard::Never
        }
    }

    /// Records a ping round of the members: `answered` of them answered.
    /// Returns whether this node, with them, is a majority of the cluster
    /// it knows: members, those evicted within [`QUORUM_MEMORY_MS`], the
    /// hosts discovery names, and itself. A node that is not cannot be sure
    /// it still owns its carts.
    pub fn record_round(&self, answered: usize, now_ms: u64) -> bool {
        let mut inner = self.inner();
        for (at, _) in inner.evicted.values_mut() {
            if *at == u64::MAX {
                *at = now_ms;
            }
        }
        inner.evicted.retain(|_, (at, _)| now_ms.saturating_sub(*at) < QUORUM_MEMORY_MS);
        let mut known: BTreeSet<&NodeAddr> = inner.members.keys().collect();
        known.extend(inner.evicted.keys());
        known.extend(inner.discovered.iter());
        let known = known.len() + 1;
        let reached = answered.min(inner.members.len()) + 1;
        let majority = reached * 2 > known;
        if majority != inner.in_majority {
            inner.in_majority = majority;
            if majority {
                tracing::info!(reached, known, "this node reaches a majority of the cluster");
            } else {
                tracing::warn!(
                    reached,
                    known,
                    "this node reaches no majority of the cluster: it stops serving carts"
                );
            }
            metrics::gauge!(crate::families::IN_MAJORITY.name).set(f64::from(u8::from(majority)));
        }
        majority
    }

    /// Whether the last ping round reached a majority (false before any).
    pub fn in_majority(&self) -> bool {
        self.inner().in_majority
    }

    /// `host`, in `incarnation`, announced it is closing: remove it now
    /// and keep that incarnation out.
    pub fn departed(&self, host: &NodeAddr, now_ms: u64, incarnation: u64) {
        let mut inner = self.inner();
        inner.candidates.remove(host);
        inner.evicted.remove(host);
        inner.departed.insert(host.clone(), (now_ms, incarnation));
        if inner.members.remove(host).is_some() {
            self.changed(&mut inner, "closed", host);
        }
    }

    /// This node is shutting down: it leaves its own view, so everything
    /// routes to the others.
    pub fn close(&self) {
        let mut inner = self.inner();
        if !inner.closing {
            inner.closing = true;
            let me = self.me.clone();
            self.changed(&mut inner, "leaving", &me);
        }
    }

    /// Whether this node is shutting down.
    pub fn is_closing(&self) -> bool {
        self.inner().closing
    }

    /// The last [`RECENT_CHANGES`] changes of the view, newest first.
    pub fn recent_changes(&self) -> Vec<ViewChange> {
        self.inner().recent.iter().rev().cloned().collect()
    }

    /// Members for `/api/cluster`, at `now_ms`, this node carrying `mine`.
    pub fn status(&self, now_ms: u64, mine: Load) -> Vec<MemberStatus> {
        let inner = self.inner();
        let mut out: Vec<MemberStatus> = inner
            .members
            .iter()
            .map(|(host, m)| MemberStatus {
                host: host.to_string(),
                misses: m.misses,
                last_ok_ago_ms: now_ms.saturating_sub(m.last_ok_ms),
                me: false,
                load: m.load.map(LoadStatus::from),
            })
            .collect();
        if !inner.closing {
            out.push(MemberStatus {
                host: self.me.to_string(),
                misses: 0,
                last_ok_ago_ms: 0,
                me: true,
                load: Some(mine.into()),
            });
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> NodeAddr {
        format!("127.0.0.1:{port}").parse().unwrap()
    }

    #[test]
    fn learned_hosts_join_only_after_a_successful_ping() {
        let m = Membership::new(addr(1), 3);
        assert_eq!(m.view().to_vec(), vec![addr(1)]);
        assert_eq!(m.learn([addr(2), addr(1)], 0), vec![addr(2)]);
        assert_eq!(m.view().to_vec(), vec![addr(1)], "a candidate is not a member");
        m.ping_ok(&addr(2), 10, 0);
        assert_eq!(m.view().to_vec(), vec![addr(1), addr(2)]);
        assert_eq!(m.version(), 1);
    }

    #[test]
    fn changes_are_logged_newest_first_with_the_clock_and_bounded() {
        let clock = Arc::new(cart_grain::ManualClock::new(5_000));
        let m = Membership::new(addr(1), 1).with_clock(Arc::clone(&clock) as Arc<dyn Clock>);
        m.learn([addr(2)], 0);
        m.ping_ok(&addr(2), 0, 0);
        clock.advance(7);
        m.ping_failed(&addr(2));
        let changes = m.recent_changes();
        let seen: Vec<_> = changes.iter().map(|c| (c.event, c.view_version, c.members)).collect();
        assert_eq!(seen, vec![("evicted", 2, 1), ("joined", 1, 2)]);
        assert_eq!((changes[0].at_ms, changes[1].at_ms), (5_007, 5_000));
        assert_eq!(changes[0].host, addr(2).to_string());
        for _ in 0..RECENT_CHANGES {
            m.learn([addr(2)], 0);
            m.ping_ok(&addr(2), 0, 0);
            m.ping_failed(&addr(2));
        }
        let changes = m.recent_changes();
        assert_eq!(changes.len(), RECENT_CHANGES, "the log is bounded");
        assert_eq!(changes[0].view_version, m.version(), "newest first");
    }

    #[test]
    fn each_member_shows_the_load_its_last_reply_gave() {
        let m = Membership::new(addr(1), 3);
        m.learn([addr(2), addr(3)], 0);
        let load = Load { resident: 7, mutations: 30, reads: 90 };
        assert!(m.ping_answered(&addr(2), 0, 0, "", Some(load)));
        assert!(m.ping_answered(&addr(3), 0, 0, "", None));
        let mine = Load { resident: 1, mutations: 2, reads: 3 };
        let loads: Vec<_> =
            m.status(0, mine).iter().map(|s| s.load.map(|l| l.resident_carts)).collect();
        assert_eq!(loads, vec![Some(1), Some(7), None]);
    }

    #[test]
    fn hosts_waiting_for_a_first_ping_are_bounded() {
        let m = Membership::new(addr(1), 3);
        let offered: Vec<NodeAddr> = (2..3000).map(addr).collect();
        assert_eq!(m.learn(offered, 0).len(), MAX_CANDIDATES);
        assert_eq!(m.ping_targets().len(), MAX_CANDIDATES);
        // As pings fail, room comes back.
        m.ping_failed(&addr(2));
        assert_eq!(m.learn([addr(5000)], 0), vec![addr(5000)]);
    }

    #[test]
    fn a_node_cut_off_from_the_others_is_no_majority_even_after_evicting_them() {
        let m = Membership::new(addr(1), 1);
        for p in [2, 3] {
            m.learn([addr(p)], 0);
            m.ping_ok(&addr(p), 0, 0);
        }
        assert!(m.record_round(2, 0));
        assert!(m.record_round(1, 10), "two of three");
        m.ping_failed(&addr(2));
        m.ping_failed(&addr(3));
        assert_eq!(m.view().to_vec(), vec![addr(1)], "both evicted");
        assert!(!m.record_round(0, 20), "a majority of one it is not");
        assert!(!m.in_majority());
        assert!(m.record_round(0, 20 + QUORUM_MEMORY_MS), "after the memory, alone is all");
        // Unless discovery still names them: then they count, answering or not.
        let m = Membership::new(addr(1), 1);
        m.discovered([addr(1), addr(2), addr(3)]);
        assert!(!m.record_round(0, 0), "one of three named by discovery");
        m.learn([addr(2)], 0);
        m.ping_ok(&addr(2), 0, 0);
        assert!(m.record_round(1, 10), "two of three");
        assert_eq!(m.last_heard(&addr(2)), LastHeard::At(0));
        m.ping_failed(&addr(2));
        assert_eq!(m.last_heard(&addr(2)), LastHeard::At(0), "remembered after eviction");
        assert!(!m.record_round(0, 20 + QUORUM_MEMORY_MS), "still one of three");
        assert_eq!(m.last_heard(&addr(3)), LastHeard::Never);
        // A clean departure does not count against it.
        let m = Membership::new(addr(1), 1);
        m.learn([addr(2)], 0);
        m.ping_ok(&addr(2), 0, 0);
        m.departed(&addr(2), 5, 0);
        assert!(m.record_round(0, 10));
        assert_eq!(m.last_heard(&addr(2)), LastHeard::Closed);
    }

    #[test]
    fn a_member_is_evicted_after_consecutive_misses_only() {
        let m = Membership::new(addr(1), 3);
        m.learn([addr(2)], 0);
        m.ping_ok(&addr(2), 0, 0);
        m.ping_failed(&addr(2));
        m.ping_failed(&addr(2));
        m.ping_ok(&addr(2), 5, 0);
        m.ping_failed(&addr(2));
        m.ping_failed(&addr(2));
        assert!(m.is_member(&addr(2)), "a brief stall does not evict");
        m.ping_failed(&addr(2));
        assert!(!m.is_member(&addr(2)));
        assert_eq!(m.view().to_vec(), vec![addr(1)]);
    }

    #[test]
    fn evicted_and_discovered_hosts_are_pinged_and_rejoin_at_their_first_answer() {
        let m = Membership::new(addr(1), 1);
        m.discovered([addr(3)]);
        m.learn([addr(2)], 0);
        m.ping_ok(&addr(2), 0, 0);
        m.ping_failed(&addr(2));
        assert!(!m.is_member(&addr(2)));
        assert_eq!(m.ping_targets(), vec![addr(2), addr(3)], "still pinged every round");
        m.ping_ok(&addr(2), 10, 0);
        m.ping_ok(&addr(3), 10, 0);
        assert_eq!(m.view().to_vec(), vec![addr(1), addr(2), addr(3)], "back at once");
    }

    #[test]
    fn a_failed_candidate_never_joins_from_a_stale_list() {
        let m = Membership::new(addr(1), 3);
        m.learn([addr(9)], 0);
        m.ping_failed(&addr(9));
        assert_eq!(m.view().to_vec(), vec![addr(1)]);
        assert!(m.ping_targets().is_empty());
    }

    #[test]
    fn closing_removes_at_once_and_quarantines() {
        let m = Membership::new(addr(1), 3);
        m.learn([addr(2)], 0);
        m.ping_ok(&addr(2), 0, 0);
        let changes = m.subscribe();
        m.departed(&addr(2), 1_000, 7);
        assert!(changes.has_changed().unwrap());
        assert_eq!(m.view().to_vec(), vec![addr(1)]);
        // A stale list names it again: its own answer keeps it out.
        m.learn([addr(2)], 2_000);
        m.ping_ok(&addr(2), 2_000, 7);
        assert!(!m.is_member(&addr(2)), "the same incarnation stays out");
        assert!(m.is_quarantined(&addr(2), 7, 2_000));
        // Restarted (a new incarnation): it joins at once.
        m.learn([addr(2)], 3_000);
        m.ping_ok(&addr(2), 3_000, 8);
        assert!(m.is_member(&addr(2)), "a restarted node rejoins without waiting");
        // After the quarantine even the old incarnation may.
        m.departed(&addr(2), 4_000, 8);
        m.learn([addr(2)], 4_000 + DEPARTED_QUARANTINE_MS);
        m.ping_ok(&addr(2), 4_000 + DEPARTED_QUARANTINE_MS, 8);
        assert!(m.is_member(&addr(2)));
    }

    #[test]
    fn a_closing_node_leaves_its_own_view() {
        let m = Membership::new(addr(1), 3);
        m.learn([addr(2)], 0);
        m.ping_ok(&addr(2), 0, 0);
        m.close();
        assert_eq!(m.view().to_vec(), vec![addr(2)]);
        assert!(m.is_closing());
    }
}
