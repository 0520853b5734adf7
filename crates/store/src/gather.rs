//! How long the committer gathers a batch before writing it, when every
//! append is synced ([`FsyncPolicy::Always`](crate::FsyncPolicy::Always)).
//!
//! The clients a commit answers often write again at once: a storefront adds
//! the next item, a service replays a list. Committing as soon as anything is
//! queued makes them miss the next sync by one round trip, so each of their
//! writes waits for two syncs. After a commit the committer therefore waits
//! for as many new appends as it has just answered, on top of those that
//! queued up during the commit, but no longer than the last sync took
//! (microseconds on a fast disk) and never longer than a configured maximum.
//! It stops early when appends stop coming: after a pause of an eighth of the
//! last sync, the clients that were going to write again have done so (this
//! keeps the wait short for independent users, who do not write back to
//! back). A store that has been idle commits its first append at once.
//!
//! Time is passed in, so tests drive the policy without sleeping.

use std::time::{Duration, Instant};

/// The committer's gathering policy and what it remembers of the last commit.
#[derive(Debug, Clone)]
pub struct Gather {
    max: Duration,
    last_sync: Duration,
    last: Option<LastCommit>,
}

#[derive(Debug, Clone, Copy)]
struct LastCommit {
    answered: usize,
    at: Instant,
}

impl Gather {
    /// A policy that waits at most `max` after a commit; zero never waits.
    pub fn new(max: Duration) -> Self {
        Gather { max, last_sync: Duration::ZERO, last: None }
    }

    /// Records how long a sync took.
    pub fn synced(&mut self, took: Duration) {
        self.last_sync = took;
    }

    /// Records a commit that answered `answered` appends at `at`.
    pub fn committed(&mut self, answered: usize, at: Instant) {
        self.last = Some(LastCommit { answered, at });
    }

    /// Until when to keep gathering, given that `queued` appends were waiting
    /// when gathering began, `gathered` are in hand at `now` (the queued ones
    /// included) and the latest of them arrived at `latest`; `None` means
    /// commit now.
    pub fn wait_until(
        &self,
        queued: usize,
        gathered: usize,
        latest: Instant,
        now: Instant,
    ) -> Option<Instant> {
        let last = self.last?;
        if gathered == 0 || gathered >= queued + last.answered {
            return None;
        }
        let give_up = last.at + self.last_sync.min(self.max);
        let pause = latest.max(last.at) + self.last_sync / 8;
        let deadline = give_up.min(pause);
        (now < deadline).then_some(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn after_commit(answered: usize, sync_took: Duration, at: Instant) -> Gather {
        let mut g = Gather::new(ms(2));
        g.synced(sync_took);
        g.committed(answered, at);
        g
    }

    #[test]
    fn a_fresh_store_commits_at_once() {
        let t0 = Instant::now();
        assert_eq!(Gather::new(ms(2)).wait_until(0, 1, t0, t0), None);
    }

    #[test]
    fn waits_for_the_clients_just_answered_within_the_last_sync_time() {
        let t0 = Instant::now();
        let g = after_commit(32, ms(1), t0);
        // 30 arrived during the sync; the 32 answered come back one by one.
        let mut gathered = 30;
        let mut now = t0;
        while gathered < 61 {
            gathered += 1;
            now += us(30);
            assert_eq!(g.wait_until(30, gathered, now, now), Some((now + us(125)).min(t0 + ms(1))));
        }
        assert_eq!(g.wait_until(30, 62, now, now), None, "all are back");
    }

    #[test]
    fn gives_up_after_the_last_sync_time() {
        let t0 = Instant::now();
        let g = after_commit(32, ms(1), t0);
        let latest = t0 + us(950);
        assert_eq!(g.wait_until(0, 10, latest, latest), Some(t0 + ms(1)));
        assert_eq!(g.wait_until(0, 10, latest, t0 + ms(1)), None);
    }

    #[test]
    fn stops_when_appends_pause_for_an_eighth_of_the_last_sync() {
        let t0 = Instant::now();
        let g = after_commit(32, ms(8), t0);
        assert_eq!(g.wait_until(5, 6, t0 + us(100), t0 + us(100)), Some(t0 + us(1100)));
        assert_eq!(g.wait_until(5, 6, t0 + us(100), t0 + us(1100)), None);
    }

    #[test]
    fn the_wait_is_capped_by_the_maximum() {
        let t0 = Instant::now();
        let g = after_commit(8, ms(50), t0);
        assert_eq!(g.wait_until(0, 1, t0, t0), Some(t0 + ms(2)));
    }

    #[test]
    fn a_zero_maximum_never_waits() {
        let t0 = Instant::now();
        let mut g = Gather::new(Duration::ZERO);
        g.synced(ms(5));
        g.committed(64, t0);
        assert_eq!(g.wait_until(0, 1, t0, t0), None);
    }

    #[test]
    fn a_lone_sequential_client_is_not_delayed() {
        let t0 = Instant::now();
        let g = after_commit(1, ms(5), t0);
        let back = t0 + us(100);
        assert_eq!(g.wait_until(0, 1, back, back), None);
    }

    #[test]
    fn after_an_idle_spell_the_first_append_commits_at_once() {
        let t0 = Instant::now();
        let g = after_commit(64, ms(5), t0);
        let later = t0 + ms(10);
        assert_eq!(g.wait_until(0, 1, later, later), None);
    }

    #[test]
    fn nothing_gathered_is_never_a_reason_to_wait() {
        let t0 = Instant::now();
        let g = after_commit(64, ms(5), t0);
        assert_eq!(g.wait_until(0, 0, t0, t0), None);
    }
}
