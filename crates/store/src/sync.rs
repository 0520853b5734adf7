//! When appended data is forced to disk.

use std::str::FromStr;
use std::time::{Duration, Instant};

/// How the file store makes appends durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after `fdatasync`; concurrent appends share one sync
    /// (group commit). Nothing acknowledged is lost, even on power loss.
    Always,
    /// Acknowledge after the write reaches the OS; sync at least every
    /// interval. Survives a process crash; a power loss may lose the last
    /// interval.
    Batch(Duration),
    /// Never sync explicitly; the OS writes back when it likes.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    /// Parses `always`, `never`, `batch` (5 ms) or `batch:<ms>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            "batch" => Ok(FsyncPolicy::Batch(Duration::from_millis(5))),
            other => other
                .strip_prefix("batch:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(|ms| FsyncPolicy::Batch(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    format!(
                        "unknown fsync policy {other:?}: use always, batch, batch:<ms> or never"
                    )
                }),
        }
    }
}

/// Tracks when the next periodic sync is due in [`FsyncPolicy::Batch`] mode.
/// Time is passed in, so tests drive it without sleeping.
#[derive(Debug, Clone, Copy)]
pub struct SyncSchedule {
    interval: Duration,
    last_sync: Instant,
    dirty: bool,
}

impl SyncSchedule {
    /// A schedule that last synced at `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        SyncSchedule { interval, last_sync: now, dirty: false }
    }

    /// Records unsynced writes.
    pub fn wrote(&mut self) {
        self.dirty = true;
    }

    /// Records a sync at `now`.
    pub fn synced(&mut self, now: Instant) {
        self.last_sync = now;
        self.dirty = false;
    }

    /// Whether a sync is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.dirty && now.saturating_duration_since(self.last_sync) >= self.interval
    }

    /// How long the committer may wait for new work before a sync is due;
    /// `None` when nothing is waiting to be synced.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        self.dirty
            .then(|| self.interval.saturating_sub(now.saturating_duration_since(self.last_sync)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!("batch:20".parse(), Ok(FsyncPolicy::Batch(Duration::from_millis(20))));
        assert!("batch:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn a_sync_is_due_only_after_writes_and_the_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = SyncSchedule::new(ms(5), t0);
        assert!(!s.due(t0 + ms(100)), "nothing written");
        assert_eq!(s.wait(t0), None);
        s.wrote();
        assert!(!s.due(t0 + ms(4)));
        assert_eq!(s.wait(t0 + ms(4)), Some(ms(1)));
        assert!(s.due(t0 + ms(5)));
        s.synced(t0 + ms(5));
        assert!(!s.due(t0 + ms(50)));
    }
}
