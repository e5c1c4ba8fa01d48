//! Messages that wait, on disk: the history file and the thread that writes
//! it (SPEC section 9).
//!
//! The file follows the accounts file's rules (created 0600, locked, a torn
//! last line cut off, any other bad line stops the start naming it; format
//! in [`super::history_parse`]). One writer thread owns it and commits in
//! groups: it takes every job queued, appends all their lines in one write,
//! fsyncs once and only then answers them all, so a burst of messages
//! costs one fsync, not one each. Answers go back over a channel, and the
//! event loop is woken as for the accounts workers.
//!
//! The writer keeps a [`Live`] view of what the file holds that still
//! matters, and rewrites the file to just that (write a new file, fsync,
//! rename, fsync the directory) once the file has grown well past it,
//! dropping delivered messages, broadcasts beyond `--replay` and anything
//! older than `--history-days`. Message text is never logged.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};

use super::accounts::LoadError;
use super::file::{StoreFile, sync_parent_dir};
use super::history_parse::{HEADER, Live, Record, parse_history, push_line};
use super::lock::try_lock;
use crate::core::history::{HistoryDone, HistoryJob, Loaded};

/// Where the history lives (`--history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryPlace {
    /// `none`: SPEC section 9 is off.
    Off,
    /// `:memory:`: kept only while the server runs.
    Memory,
    File(PathBuf),
}

impl HistoryPlace {
    /// Reads the flag's value.
    pub fn parse(value: &str) -> Self {
        match value {
            "none" => Self::Off,
            ":memory:" => Self::Memory,
            path => Self::File(PathBuf::from(path)),
        }
    }
}

/// The file is not rewritten before it is this large, whatever it holds.
pub const COMPACT_MIN: u64 = 1024 * 1024;

/// Seconds in a day, for `--history-days`.
const DAY: i64 = 86_400;

/// The wall-clock time in seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The open, locked history file, positioned for appending.
#[derive(Debug)]
pub struct HistoryFile {
    file: StoreFile,
    live: Live,
    /// Records older than this many days are dropped at compaction.
    days: u32,
    /// The file is checked for compaction once it reaches this length.
    next_check: u64,
    /// The least length worth compacting at (tests lower it).
    compact_min: u64,
}

impl HistoryFile {
    /// Opens (creating, mode 0600), locks, reads and, if it holds anything
    /// no longer needed, compacts the history file. Returns it and what it
    /// holds for the core. `keep_broadcasts` is `--replay`, `days` is
    /// `--history-days`, `now` the wall-clock time.
    pub fn open(
        path: &Path,
        keep_broadcasts: usize,
        days: u32,
        now: i64,
    ) -> Result<(Self, Loaded), LoadError> {
        let fail = |line: Option<usize>, reason: String| LoadError {
            path: path.to_owned(),
            line,
            reason,
        };
        let (mut file, bytes) = StoreFile::open(path).map_err(|e| fail(None, e))?;
        let parsed = parse_history(&bytes).map_err(|bad| fail(Some(bad.line), bad.reason))?;
        let mut live = Live::new(keep_broadcasts);
        for record in parsed.records {
            live.apply(record);
        }
        file.keep(parsed.keep as u64);
        let mut history = HistoryFile {
            file,
            live,
            days: days.max(1),
            next_check: COMPACT_MIN,
            compact_min: COMPACT_MIN,
        };
        if parsed.torn {
            warn!(
                "{}: dropping a torn last line of {} bytes (a write cut short by a crash)",
                path.display(),
                bytes.len() - parsed.keep
            );
            history
                .file
                .cut_back()
                .map_err(|e| fail(None, e.to_string()))?;
        }
        if history.file.len() == 0 {
            history
                .append(format!("{HEADER}\n").as_bytes())
                .map_err(|e| fail(None, e.to_string()))?;
            sync_parent_dir(path);
        }
        history.live.expire(now - i64::from(history.days) * DAY);
        if (history.live.to_file().len() as u64) < history.len() {
            history
                .compact(now)
                .map_err(|e| fail(None, format!("cannot compact: {e}")))?;
        }
        let loaded = history.live.loaded();
        info!(
            "history: {} ({} messages waiting)",
            path.display(),
            loaded.messages.len()
        );
        Ok((history, loaded))
    }

    /// Lowers the size under which the file is never compacted (tests).
    pub fn set_compact_min(&mut self, bytes: u64) {
        self.compact_min = bytes;
        self.next_check = bytes;
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    /// Whether the file holds nothing but its header.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER.len() as u64 + 1
    }

    /// Appends `bytes` and fsyncs; on failure cuts back to the last whole
    /// line, so that nothing of a failed batch is kept.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.append(bytes)
    }

    /// Records that `records` are now in the file.
    fn applied(&mut self, records: impl IntoIterator<Item = Record>) {
        for record in records {
            self.live.apply(record);
        }
    }

    /// Compacts if the file has grown well past what it must hold.
    fn maybe_compact(&mut self, now: i64) {
        if self.len() < self.next_check {
            return;
        }
        self.live.expire(now - i64::from(self.days) * DAY);
        let live = self.live.to_file().len() as u64;
        if live.saturating_mul(2) < self.len()
            && let Err(e) = self.compact(now)
        {
            error!("{}: cannot compact: {e}", self.path().display());
        }
        self.next_check = self.compact_min.max(self.len().saturating_mul(2));
    }

    /// Rewrites the file to what is live: a new file beside it, fsynced,
    /// locked, renamed over the old one, the directory fsynced. A crash at
    /// any point leaves either the old file or the new one, both whole.
    fn compact(&mut self, now: i64) -> io::Result<()> {
        self.live.expire(now - i64::from(self.days) * DAY);
        let bytes = self.live.to_file();
        let path = self.path().to_owned();
        let mut temp_name = path.as_os_str().to_owned();
        temp_name.push(".compact");
        let temp = PathBuf::from(temp_name);
        let mut new = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&temp)?;
        // The new file carries the lock once it has the name.
        try_lock(&new).map_err(io::Error::other)?;
        new.set_len(0)?;
        let written = new
            .write_all(&bytes)
            .and_then(|()| new.sync_all())
            .and_then(|()| std::fs::rename(&temp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        sync_parent_dir(&path);
        let before = self.len();
        self.file.replace(new, bytes.len() as u64);
        self.next_check = self.compact_min.max(self.len().saturating_mul(2));
        info!(
            "{}: compacted from {before} to {} bytes ({} messages waiting)",
            path.display(),
            self.len(),
            self.live.waiting()
        );
        Ok(())
    }
}

/// The history writer thread and the channels to it.
pub struct HistoryWriter {
    jobs: Sender<HistoryJob>,
    results: Receiver<HistoryDone>,
    thread: thread::JoinHandle<()>,
}

/// How the writer commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Every job queued shares one write and one fsync.
    Group,
    /// One write and one fsync per job: only to measure what grouping saves.
    EachJob,
}

/// At most this many jobs share one write, so a flood is answered in
/// steps rather than after it all.
const MAX_GROUP: usize = 4096;

impl HistoryWriter {
    /// Starts the writer. `file` is `None` for `--history :memory:`: jobs
    /// are answered at once. `wake` is called after each group of answers.
    pub fn spawn(
        file: Option<HistoryFile>,
        commit: Commit,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, String> {
        let (jobs, job_rx) = mpsc::channel::<HistoryJob>();
        let (result_tx, results) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("history".into())
            .spawn(move || run(file, commit, &job_rx, &result_tx, &*wake))
            .map_err(|e| format!("cannot start the history writer: {e}"))?;
        Ok(Self {
            jobs,
            results,
            thread,
        })
    }

    /// Writes every job already handed over, then stops the writer. Called
    /// at shutdown, so that after a clean stop no delivered record is
    /// missing and no message is delivered twice.
    pub fn finish(self) {
        drop(self.jobs);
        if self.thread.join().is_err() {
            error!("the history writer panicked");
        }
    }

    /// Hands a job to the writer. If the writer has stopped (it should
    /// not), a store job comes back as failed, so that its sender is told
    /// `STORE_FAILED` instead of waiting for ever.
    pub fn submit(&self, job: HistoryJob) -> Option<HistoryDone> {
        let Err(mpsc::SendError(job)) = self.jobs.send(job) else {
            return None;
        };
        error!("the history writer has stopped");
        match job {
            HistoryJob::Store { ticket, message } => Some(HistoryDone {
                ticket,
                stored: false,
                message,
            }),
            _ => None,
        }
    }

    /// A finished store job, if one is waiting.
    pub fn try_result(&self) -> Option<HistoryDone> {
        self.results.try_recv().ok()
    }
}

/// The writer's loop: take a group of jobs, write them, fsync, answer.
fn run(
    mut file: Option<HistoryFile>,
    commit: Commit,
    jobs: &Receiver<HistoryJob>,
    results: &Sender<HistoryDone>,
    wake: &(dyn Fn() + Send + Sync),
) {
    let mut group = Vec::new();
    let mut bytes = Vec::new();
    loop {
        // Wake now and then even when idle, so that an old file is still
        // compacted and expired.
        match jobs.recv_timeout(Duration::from_secs(3600)) {
            Ok(job) => group.push(job),
            Err(RecvTimeoutError::Timeout) => {
                if let Some(file) = file.as_mut() {
                    file.maybe_compact(unix_now());
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if commit == Commit::Group {
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        let records: Vec<Record> = group
            .iter()
            .map(|job| match job {
                HistoryJob::Store { message, .. } => Record::Message(message.clone()),
                HistoryJob::Broadcast(b) => Record::Broadcast(b.clone()),
                HistoryJob::Delivered { to, upto } => Record::Delivered {
                    to: to.clone(),
                    upto: *upto,
                },
            })
            .collect();
        let stored = match file.as_mut() {
            None => true,
            Some(file) => {
                bytes.clear();
                for record in &records {
                    push_line(&mut bytes, record);
                }
                match file.append(&bytes) {
                    Ok(()) => {
                        file.applied(records);
                        file.maybe_compact(unix_now());
                        true
                    }
                    Err(e) => {
                        // No text in the log: only how many were lost.
                        error!(
                            "{}: cannot write {} history records: {e}",
                            file.path().display(),
                            group.len()
                        );
                        false
                    }
                }
            }
        };
        let mut answered = false;
        for job in group.drain(..) {
            if let HistoryJob::Store { ticket, message } = job {
                answered = true;
                if results
                    .send(HistoryDone {
                        ticket,
                        stored,
                        message,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
        if answered {
            wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::chat::ConnId;
    use crate::core::history::Message;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-history-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("history.db")
    }

    fn message(id: u64, to: &str, text: &str) -> Message {
        Message {
            id,
            at: unix_now(),
            to: to.into(),
            from: "alice".into(),
            text: text.into(),
        }
    }

    fn wait(writer: &HistoryWriter) -> HistoryDone {
        for _ in 0..5000 {
            if let Some(done) = writer.try_result() {
                return done;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("no answer from the writer");
    }

    #[test]
    fn stored_messages_survive_reopen_until_delivered_and_the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("reopen");
        let (file, loaded) = HistoryFile::open(&path, 0, 30, unix_now()).unwrap();
        assert!(loaded.messages.is_empty());
        let writer = HistoryWriter::spawn(Some(file), Commit::Group, Arc::new(|| {})).unwrap();
        for id in 1..=3 {
            writer.submit(HistoryJob::Store {
                ticket: ConnId::new(0, 1),
                message: message(id, "bob", "hi"),
            });
        }
        for _ in 1..=3 {
            assert!(wait(&writer).stored);
        }
        writer.submit(HistoryJob::Delivered {
            to: "bob".into(),
            upto: 2,
        });
        writer.submit(HistoryJob::Store {
            ticket: ConnId::new(0, 1),
            message: message(4, "carol", "yo"),
        });
        assert!(wait(&writer).stored);
        drop(writer);
        thread::sleep(Duration::from_millis(50));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, loaded) = HistoryFile::open(&path, 0, 30, unix_now()).unwrap();
        let ids: Vec<u64> = loaded.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, [3, 4]);
        assert_eq!(loaded.next_id, 5);
        // Opening compacted away the delivered ones.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn a_second_open_is_refused_and_old_records_expire() {
        let path = temp_path("lock");
        let now = unix_now();
        std::fs::write(
            &path,
            format!(
                "{HEADER}\nM 1 {} bob alice old\nM 2 {} bob alice new\n",
                now - 31 * DAY,
                now - 29 * DAY
            ),
        )
        .unwrap();
        let (first, loaded) = HistoryFile::open(&path, 0, 30, now).unwrap();
        assert_eq!(loaded.messages.len(), 1);
        assert_eq!(loaded.messages[0].id, 2);
        let err = HistoryFile::open(&path, 0, 30, now).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        let (_, loaded) = HistoryFile::open(&path, 0, 1, now).unwrap();
        assert!(loaded.messages.is_empty());
    }

    #[test]
    fn the_running_writer_compacts_and_keeps_what_waits() {
        let path = temp_path("compact");
        let (mut file, _) = HistoryFile::open(&path, 0, 30, unix_now()).unwrap();
        file.set_compact_min(4096);
        let writer = HistoryWriter::spawn(Some(file), Commit::EachJob, Arc::new(|| {})).unwrap();
        let text = "x".repeat(200);
        for id in 1..=100 {
            writer.submit(HistoryJob::Store {
                ticket: ConnId::new(0, 1),
                message: message(id, "bob", &text),
            });
            assert!(wait(&writer).stored);
            writer.submit(HistoryJob::Delivered {
                to: "bob".into(),
                upto: id,
            });
        }
        writer.submit(HistoryJob::Store {
            ticket: ConnId::new(0, 1),
            message: message(101, "carol", "keep me"),
        });
        assert!(wait(&writer).stored);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 8192, "not compacted: {len} bytes");
        drop(writer);
        thread::sleep(Duration::from_millis(50));
        let (_, loaded) = HistoryFile::open(&path, 0, 30, unix_now()).unwrap();
        assert_eq!(loaded.messages.len(), 1);
        assert_eq!(loaded.messages[0].text, "keep me");
    }
}
