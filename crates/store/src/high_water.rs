//! The durable high-water mark of the file store: how far the log's logical
//! address space (`segments.rs`) was synced (and so acknowledged), kept in
//! `data/HIGH_WATER` beside it as `segments/<bytes>` (stores from before
//! segments wrote `<bytes>` or `<generation>/<bytes>`; they are read, and
//! rewritten at open).
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

/// How far the log was synced: a logical offset (see `segments.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    /// Bytes of the log's address space.
    pub bytes: u64,
}

/// What a mark file said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// A mark of this format: `segments/<bytes>`.
    Logical(u64),
    /// A mark of the format before segments: `<bytes>` of generation 0, or
    /// `<generation>/<bytes>`.
    Legacy { generation: u64, bytes: u64 },
}

impl Recorded {
    fn parse(text: &str) -> Option<Recorded> {
        Some(match text.split_once('/') {
            Some(("segments", b)) => Recorded::Logical(b.parse().ok()?),
            Some((g, b)) => {
                Recorded::Legacy { generation: g.parse().ok()?, bytes: b.parse().ok()? }
            }
            None => Recorded::Legacy { generation: 0, bytes: text.parse().ok()? },
        })
    }
}

impl Mark {
    /// The mark's text. Its form is one that binaries from before segments
    /// cannot read, so they refuse to open a log they would misread.
    fn render(self) -> String {
        format!("{:>w$}\n", format!("segments/{}", self.bytes), w = WIDTH - 1)
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
    /// The file holds a mark of the format before segments.
    older_format: bool,
}

impl HighWater {
    /// Opens (creating) the mark in `dir`; returns it with the value it
    /// held (`None`: there was none, a new store or one from before the
    /// mark existed). A mark of the older format is rewritten by the next
    /// record, whatever its value.
    pub(crate) fn open(dir: &Path) -> Result<(HighWater, Option<Recorded>), StoreError> {
        let path = dir.join(HIGH_WATER_FILE);
        let previous = match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(Recorded::parse(text.trim()).ok_or_else(|| {
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
        let recorded = match previous {
            Some(Recorded::Logical(bytes)) => Mark { bytes },
            _ => Mark::default(),
        };
        let older_format = matches!(previous, Some(Recorded::Legacy { .. }));
        Ok((HighWater { file, recorded, written_at: None, older_format }, previous))
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
        if synced <= self.recorded && !self.older_format {
            return Ok(());
        }
        self.file.write_all_at(synced.render().as_bytes(), 0)?;
        self.recorded = synced;
        self.written_at = Some(now);
        self.older_format = false;
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
        let at = |bytes| Mark { bytes };
        mark.record(at(1_000), t).unwrap();
        mark.record(at(5_000), t + RECORD_EVERY / 2).unwrap();
        let reopened = || HighWater::open(dir.path()).unwrap().1;
        assert_eq!(reopened(), Some(Recorded::Logical(1_000)), "every 100 ms");
        mark.record(at(10), t + RECORD_EVERY).unwrap();
        assert_eq!(reopened(), Some(Recorded::Logical(1_000)), "never down");
        mark.record(at(123_456), t + RECORD_EVERY * 2).unwrap();
        mark.record_now(at(123_400), t + RECORD_EVERY * 2).unwrap();
        drop(mark);
        assert_eq!(reopened(), Some(Recorded::Logical(123_456)));
        let text = std::fs::read_to_string(dir.path().join(HIGH_WATER_FILE)).unwrap();
        assert_eq!(text.len(), WIDTH);
        assert_eq!(text.trim(), "segments/123456", "a form older binaries refuse");
        assert!(text.trim().split_once('/').unwrap().0.parse::<u64>().is_err());
    }

    #[test]
    fn a_mark_of_the_older_format_is_read_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HIGH_WATER_FILE);
        std::fs::write(&path, "   42\n").unwrap();
        let legacy = |generation, bytes| Some(Recorded::Legacy { generation, bytes });
        assert_eq!(HighWater::open(dir.path()).unwrap().1, legacy(0, 42));
        std::fs::write(&path, "3/77\n").unwrap();
        let (mut mark, before) = HighWater::open(dir.path()).unwrap();
        assert_eq!(before, legacy(3, 77));
        mark.record_now(Mark { bytes: 10 }, Instant::now()).unwrap();
        assert_eq!(
            HighWater::open(dir.path()).unwrap().1,
            Some(Recorded::Logical(10)),
            "rewritten, lower"
        );
        std::fs::write(&path, "garbage").unwrap();
        assert!(HighWater::open(dir.path()).is_err(), "a mark that is not one is an error");
    }
}
