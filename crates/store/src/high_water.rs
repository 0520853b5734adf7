//! The durable high-water mark of the file store: which log generation is
//! current and how many of its bytes were synced (and so acknowledged),
//! kept in `data/HIGH_WATER` beside it (`<bytes>` for the first generation,
//! `<generation>/<bytes>` after compactions).
//!
//! The log alone cannot tell "empty" from "emptied": a truncated, replaced
//! or deleted `events.log` would open as a store with fewer carts, and every
//! acknowledged change after the cut would be gone without a word. The mark
//! lets [`crate::FileStore::open`] refuse such a log instead.
//!
//! The committer rewrites the mark after a sync (at most every 100 ms, and
//! at a clean close), in place and without syncing it: it never runs ahead of what is on disk (it is written after
//! the log's sync), and after an operating-system crash it may lag behind,
//! which weakens the check (a cut after the lagging mark goes unnoticed)
//! but never refuses a good log. Deleting the file accepts a loss.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::StoreError;

/// Name of the high-water mark inside the data directory.
pub const HIGH_WATER_FILE: &str = "HIGH_WATER";

/// Width of the mark's text: the value right-aligned, then a newline, so
/// every rewrite covers the previous one whole.
const WIDTH: usize = 40;

/// A position in the log: a generation and a byte offset in its file.
/// Positions order by generation first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    /// The log generation (0: `events.log`).
    pub generation: u64,
    /// Bytes of that generation's file.
    pub bytes: u64,
}

impl Mark {
    fn parse(text: &str) -> Option<Mark> {
        Some(match text.split_once('/') {
            Some((g, b)) => Mark { generation: g.parse().ok()?, bytes: b.parse().ok()? },
            None => Mark { generation: 0, bytes: text.parse().ok()? },
        })
    }

    fn render(self) -> String {
        let value = if self.generation == 0 {
            self.bytes.to_string()
        } else {
            format!("{}/{}", self.generation, self.bytes)
        };
        format!("{value:>w$}\n", w = WIDTH - 1)
    }
}

/// The committer rewrites the mark at most this often (and at a clean
/// close): a write per sync would cost a system call on every commit, for a
/// check that only needs to catch a log cut well short of what it held.
pub(crate) const RECORD_EVERY: Duration = Duration::from_millis(100);

/// The open mark file.
#[derive(Debug)]
pub(crate) struct HighWater {
    file: File,
    recorded: Mark,
    written_at: Option<Instant>,
}

impl HighWater {
    /// Opens (creating) the mark in `dir`; returns it with the value it
    /// held (`None`: there was none, a new store or one from before the
    /// mark existed).
    pub(crate) fn open(dir: &Path) -> Result<(HighWater, Option<Mark>), StoreError> {
        let path = dir.join(HIGH_WATER_FILE);
        let previous = match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(Mark::parse(text.trim()).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "{}: not a high-water mark ({:?}); delete it to accept the log as it is",
                    path.display(),
                    text.chars().take(40).collect::<String>()
                ))
            })?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        Ok((HighWater { file, recorded: previous.unwrap_or_default(), written_at: None }, previous))
    }

    /// Records, at `now`, that the log is on disk up to `synced`, unless
    /// the mark was written less than [`RECORD_EVERY`] ago (a lower value
    /// than the last one is ignored). Not synced itself: see the module's
    /// documentation.
    pub(crate) fn record(&mut self, synced: Mark, now: Instant) -> std::io::Result<()> {
        if self.written_at.is_some_and(|at| now.saturating_duration_since(at) < RECORD_EVERY) {
            return Ok(());
        }
        self.record_now(synced, now)
    }

    /// [`HighWater::record`] whenever it was last written (at open, at a
    /// clean close and when compaction moves to a new generation).
    pub(crate) fn record_now(&mut self, synced: Mark, now: Instant) -> std::io::Result<()> {
        if synced <= self.recorded {
            return Ok(());
        }
        self.file.write_all_at(synced.render().as_bytes(), 0)?;
        self.recorded = synced;
        self.written_at = Some(now);
        Ok(())
    }
}

/// The refusal of a log shorter than what was acknowledged, saying what is
/// wrong and how to recover.
pub(crate) fn shorter_than_acknowledged(log: &Path, holds: u64, acknowledged: u64) -> StoreError {
    StoreError::Corrupt(lost_acknowledged(log, holds, acknowledged))
}

/// What [`shorter_than_acknowledged`] says.
pub(crate) fn lost_acknowledged(log: &Path, holds: u64, acknowledged: u64) -> String {
    format!(
        "{log}: holds {holds} bytes of whole records, but {acknowledged} bytes were acknowledged \
         ({mark}): the log was deleted, truncated, emptied, replaced or damaged, and \
         acknowledged carts would be lost. Restore {log} from a backup; or, to accept the loss \
         and go on with what is left, delete {mark}.",
        log = log.display(),
        mark = log.with_file_name(HIGH_WATER_FILE).display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_only_rises_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut mark, before) = HighWater::open(dir.path()).unwrap();
        assert_eq!(before, None);
        let t = Instant::now();
        let at = |bytes| Mark { generation: 0, bytes };
        mark.record(at(1_000), t).unwrap();
        mark.record(at(5_000), t + RECORD_EVERY / 2).unwrap();
        assert_eq!(HighWater::open(dir.path()).unwrap().1, Some(at(1_000)), "every 100 ms");
        mark.record(at(10), t + RECORD_EVERY).unwrap();
        assert_eq!(HighWater::open(dir.path()).unwrap().1, Some(at(1_000)), "never down");
        mark.record(at(123_456), t + RECORD_EVERY * 2).unwrap();
        mark.record_now(at(123_400), t + RECORD_EVERY * 2).unwrap();
        drop(mark);
        let (mut mark, before) = HighWater::open(dir.path()).unwrap();
        assert_eq!(before, Some(at(123_456)));
        // A compacted generation is shorter, and still a higher mark.
        let compacted = Mark { generation: 3, bytes: 77 };
        mark.record_now(compacted, t).unwrap();
        assert_eq!(HighWater::open(dir.path()).unwrap().1, Some(compacted));
        // The first generation's mark is the bare number older stores wrote.
        std::fs::write(dir.path().join(HIGH_WATER_FILE), "   42\n").unwrap();
        assert_eq!(HighWater::open(dir.path()).unwrap().1, Some(at(42)));
        std::fs::write(dir.path().join(HIGH_WATER_FILE), "garbage").unwrap();
        assert!(HighWater::open(dir.path()).is_err(), "a mark that is not one is an error");
    }
}
