//! Accounts that survive: the accounts file, argon2id hashing, and the worker
//! threads that do both off the event loop.
//!
//! The seed kept `akun[]` in memory with clear-text passwords. Here each account
//! is one line of a text file, its password an argon2id PHC string, and the
//! line is written and fsynced before `REGIST_OK` is sent. Hashing takes tens of
//! milliseconds by design and fsync can take longer, so both run on worker
//! threads; results go back to the loop over a channel and a [`mio::Waker`].
//!
//! File format, version 1 (UTF-8, `\n`-terminated lines):
//!
//! ```text
//! chat-accounts v1
//! <username> <argon2id PHC string>
//! ```
//!
//! Lines are only ever appended. A crash mid-append leaves a last line without
//! its `\n`; [`AccountFile::open`] drops that torn line (it never got its
//! `REGIST_OK`) and refuses to start on anything else it does not understand.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use log::{error, warn};

use crate::core::auth::{AuthDone, AuthJob, AuthOutcome};
use crate::wire::protocol::valid_username;

/// The first line of every accounts file; the number is the format version.
pub const HEADER: &str = "chat-accounts v1";

/// The cost of new password hashes (`--hash-params m=KIB,t=ITER,p=LANES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            m_kib: 19456,
            t: 2,
            p: 1,
        }
    }
}

impl fmt::Display for HashParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={},t={},p={}", self.m_kib, self.t, self.p)
    }
}

impl FromStr for HashParams {
    type Err = String;

    /// Parses `m=KIB,t=ITER,p=LANES`; any of the three may be left out.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut params = HashParams::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("expected KEY=VALUE, got {part:?}"))?;
            let value: u32 = value
                .parse()
                .map_err(|_| format!("{key}: not a number: {value:?}"))?;
            match key {
                "m" => params.m_kib = value,
                "t" => params.t = value,
                "p" => params.p = value,
                _ => return Err(format!("unknown parameter {key:?} (use m, t, p)")),
            }
        }
        params.argon2()?;
        Ok(params)
    }
}

impl HashParams {
    /// The argon2id hasher for these parameters.
    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params =
            Params::new(self.m_kib, self.t, self.p, None).map_err(|e| format!("argon2: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes a password into a PHC string with a fresh random salt.
pub fn hash_password(hasher: &Argon2<'_>, password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC string, with the parameters written in it.
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(e) => {
            error!("unreadable password hash in accounts: {e}");
            false
        }
    }
}

/// Why the accounts file could not be loaded.
#[derive(Debug)]
pub struct LoadError {
    pub path: PathBuf,
    /// 1-based line number, when one line is to blame.
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(f, "{}: line {n}: {}", self.path.display(), self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

impl std::error::Error for LoadError {}

/// The open accounts file, positioned for appending.
#[derive(Debug)]
pub struct AccountFile {
    file: File,
    /// Length of the file up to its last whole line: where a failed append is
    /// cut back to.
    len: u64,
}

impl AccountFile {
    /// Opens (creating, mode 0600) and reads the accounts file. Returns the file
    /// and its accounts as (name, PHC) pairs.
    pub fn open(path: &Path) -> Result<(Self, Vec<(String, String)>), LoadError> {
        let fail = |line: Option<usize>, reason: String| LoadError {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| fail(None, e.to_string()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| fail(None, e.to_string()))?;
        let whole = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        // Parse before touching the file: a bad file is left as it was. Each
        // line is decoded on its own, so that bytes that are not UTF-8 are
        // reported with their line number like any other malformed line.
        let mut accounts = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let lines = match whole {
            0 => None,
            _ => Some(bytes[..whole - 1].split(|&b| b == b'\n')),
        };
        for (index, line) in lines.into_iter().flatten().enumerate() {
            let number = index + 1;
            let line = std::str::from_utf8(line)
                .map_err(|e| fail(Some(number), format!("not UTF-8: {e}")))?;
            // As `str::lines` did before: a `\r\n` ending is accepted.
            let line = line.strip_suffix('\r').unwrap_or(line);
            if number == 1 {
                if line != HEADER {
                    return Err(fail(Some(1), format!("expected header {HEADER:?}")));
                }
                continue;
            }
            let (name, phc) = line
                .split_once(' ')
                .ok_or_else(|| fail(Some(number), "expected \"USERNAME PHC\"".into()))?;
            if !valid_username(name) {
                return Err(fail(Some(number), format!("invalid username {name:?}")));
            }
            let hash = PasswordHash::new(phc)
                .map_err(|e| fail(Some(number), format!("bad password hash: {e}")))?;
            check_stored_hash(&hash).map_err(|reason| fail(Some(number), reason))?;
            if !seen.insert(name) {
                return Err(fail(Some(number), format!("duplicate username {name:?}")));
            }
            accounts.push((name.to_owned(), phc.to_owned()));
        }
        let mut store = AccountFile {
            file,
            len: whole as u64,
        };
        if whole < bytes.len() {
            warn!(
                "{}: dropping a torn last line of {} bytes (a write cut short by a crash)",
                path.display(),
                bytes.len() - whole
            );
            store.cut_back().map_err(|e| fail(None, e.to_string()))?;
        }
        if store.len == 0 {
            store
                .append_line(HEADER)
                .map_err(|e| fail(None, e.to_string()))?;
            sync_parent_dir(path);
        }
        Ok((store, accounts))
    }

    /// Appends an account and waits until it is on disk. On failure the file
    /// is cut back to its last whole line, so the next start reads it cleanly.
    pub fn append(&mut self, username: &str, phc: &str) -> io::Result<()> {
        self.append_line(&format!("{username} {phc}"))
    }

    fn append_line(&mut self, line: &str) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.cut_back() {
                    error!("accounts file: cannot cut back a failed write: {cut}");
                }
                Err(e)
            }
        }
    }

    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_data()
    }
}

/// Checks that a stored hash is one [`verify_password`] can use: argon2id, a
/// known version, parameters argon2 accepts, a salt and an output. Without
/// this, an account with, say, `m=1` would load and then silently never log
/// in (SPEC section 4: a malformed line stops the start).
fn check_stored_hash(hash: &PasswordHash<'_>) -> Result<(), String> {
    if hash.algorithm.as_str() != "argon2id" {
        return Err("password hash is not argon2id".into());
    }
    if let Some(version) = hash.version {
        Version::try_from(version).map_err(|e| format!("bad argon2 version: {e}"))?;
    }
    Params::try_from(hash).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    let salt = hash.salt.ok_or("password hash has no salt")?;
    let mut buf = [0u8; 64];
    let salt = salt
        .decode_b64(&mut buf)
        .map_err(|e| format!("bad salt in password hash: {e}"))?;
    if salt.len() < argon2::MIN_SALT_LEN {
        return Err("password hash salt is too short".into());
    }
    if hash.hash.is_none() {
        return Err("password hash has no output".into());
    }
    Ok(())
}

/// Makes a newly created file's directory entry durable too.
fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!("cannot fsync directory {}: {e}", dir.display());
    }
}

/// The threads that hash, verify and persist, and the channels to them.
pub struct AuthWorker {
    jobs: Sender<AuthJob>,
    results: Receiver<AuthDone>,
}

impl AuthWorker {
    /// Starts `threads` workers. `store` is `None` for `--accounts :memory:`.
    /// `wake` is called after each result is queued, to wake the event loop.
    pub fn spawn(
        threads: usize,
        store: Option<AccountFile>,
        params: HashParams,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, String> {
        let hasher = params.argon2()?;
        // Unknown names are verified against this, so they cost a real
        // verification and timing does not tell which names exist.
        let mut random = [0u8; 16];
        OsRng.fill_bytes(&mut random);
        let dummy_password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dummy: Arc<str> = hash_password(&hasher, &dummy_password)?.into();
        let (jobs, job_rx) = mpsc::channel::<AuthJob>();
        let (result_tx, results) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let store = Arc::new(Mutex::new(store));
        for index in 0..threads.max(1) {
            let job_rx = Arc::clone(&job_rx);
            let result_tx = result_tx.clone();
            let store = Arc::clone(&store);
            let hasher = hasher.clone();
            let dummy = Arc::clone(&dummy);
            let wake = Arc::clone(&wake);
            thread::Builder::new()
                .name(format!("auth-{index}"))
                .spawn(move || {
                    lower_thread_priority();
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            },
                            Err(_) => return,
                        };
                        let done = run_job(job, &hasher, &dummy, &store);
                        if result_tx.send(done).is_err() {
                            return;
                        }
                        wake();
                    }
                })
                .map_err(|e| format!("cannot start auth worker: {e}"))?;
        }
        Ok(Self { jobs, results })
    }

    /// Hands a job to the workers.
    pub fn submit(&self, job: AuthJob) {
        if self.jobs.send(job).is_err() {
            error!("auth workers have stopped");
        }
    }

    /// A finished job, if one is waiting.
    pub fn try_result(&self) -> Option<AuthDone> {
        self.results.try_recv().ok()
    }
}

/// Puts the calling worker thread at the lowest priority (nice 19), so that
/// when hashing and the event loop share a core the loop gets it back at once
/// instead of after the hash's time slice: chat stays fast during a login storm.
fn lower_thread_priority() {
    // SAFETY: gettid and setpriority have no memory effects; on Linux a thread
    // id given to PRIO_PROCESS changes only that thread.
    let failed = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0
    };
    if failed {
        warn!(
            "cannot lower the priority of an auth worker: {}",
            io::Error::last_os_error()
        );
    }
}

/// Does one job on a worker thread.
fn run_job(
    job: AuthJob,
    hasher: &Argon2<'_>,
    dummy: &str,
    store: &Mutex<Option<AccountFile>>,
) -> AuthDone {
    match job {
        AuthJob::Verify {
            ticket,
            phc,
            password,
        } => {
            let matched = verify_password(phc.as_deref().unwrap_or(dummy), &password);
            AuthDone {
                ticket,
                outcome: AuthOutcome::Verified(matched && phc.is_some()),
            }
        }
        AuthJob::Register {
            ticket,
            username,
            password,
        } => {
            let stored = hash_password(hasher, &password).and_then(|phc| {
                let mut guard = store
                    .lock()
                    .map_err(|_| "accounts lock poisoned".to_owned())?;
                if let Some(file) = guard.as_mut() {
                    file.append(&username, &phc)
                        .map_err(|e| format!("cannot write account {username}: {e}"))?;
                }
                Ok(phc)
            });
            let outcome = match stored {
                Ok(phc) => AuthOutcome::Registered {
                    username,
                    phc: phc.into(),
                },
                Err(e) => {
                    error!("{e}");
                    AuthOutcome::StorageFailed { username }
                }
            };
            AuthDone { ticket, outcome }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-accounts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("accounts.db")
    }

    fn cheap() -> Argon2<'static> {
        "m=64,t=1,p=1"
            .parse::<HashParams>()
            .unwrap()
            .argon2()
            .unwrap()
    }

    #[test]
    fn hash_params_parse_and_reject() {
        assert_eq!("".parse::<HashParams>().unwrap(), HashParams::default());
        let p: HashParams = "m=256,t=1,p=1".parse().unwrap();
        assert_eq!((p.m_kib, p.t, p.p), (256, 1, 1));
        assert_eq!(p.to_string(), "m=256,t=1,p=1");
        assert!("m=1,t=1,p=1".parse::<HashParams>().is_err());
        assert!("x=3".parse::<HashParams>().is_err());
        assert!("m=abc".parse::<HashParams>().is_err());
    }

    #[test]
    fn hashes_are_argon2id_and_verify_with_their_own_params() {
        let phc = hash_password(&cheap(), "s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!phc.contains("s3cret"));
        assert!(verify_password(&phc, "s3cret"));
        assert!(!verify_password(&phc, "s3cret!"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn a_new_file_gets_a_header_and_mode_0600_and_accounts_survive_reopen() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("reopen");
        let (mut file, accounts) = AccountFile::open(&path).unwrap();
        assert!(accounts.is_empty());
        let phc = hash_password(&cheap(), "pw").unwrap();
        file.append("alice", &phc).unwrap();
        drop(file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, accounts) = AccountFile::open(&path).unwrap();
        assert_eq!(accounts, vec![("alice".to_owned(), phc)]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("chat-accounts v1\n"));
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_off() {
        let path = temp_path("torn");
        let phc = hash_password(&cheap(), "pw").unwrap();
        std::fs::write(
            &path,
            format!("{HEADER}\nalice {phc}\nbob $argon2id$v=19$m=6"),
        )
        .unwrap();
        let (_, accounts) = AccountFile::open(&path).unwrap();
        assert_eq!(accounts.len(), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{HEADER}\nalice {phc}\n")
        );
    }

    #[test]
    fn a_malformed_middle_line_stops_the_load_and_names_the_line() {
        let path = temp_path("bad");
        let phc = hash_password(&cheap(), "pw").unwrap();
        let content = format!("{HEADER}\nalice {phc}\ngarbage\ncarol {phc}\n");
        std::fs::write(&path, &content).unwrap();
        let err = AccountFile::open(&path).unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.to_string().contains("line 3"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        std::fs::write(&path, format!("{HEADER}\nalice {phc}\nalice {phc}\n")).unwrap();
        assert_eq!(AccountFile::open(&path).unwrap_err().line, Some(3));
        std::fs::write(&path, "something else\n").unwrap();
        assert_eq!(AccountFile::open(&path).unwrap_err().line, Some(1));
    }

    #[test]
    fn unusable_hashes_and_non_utf8_lines_stop_the_load_with_their_line() {
        let path = temp_path("unusable");
        let phc = hash_password(&cheap(), "pw").unwrap();
        let (no_output, output) = phc.rsplit_once('$').unwrap();
        let short_salt = "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$";
        for bad in [
            phc.replacen("m=64,", "m=1,", 1),
            phc.replacen("v=19", "v=99", 1),
            no_output.to_owned(),
            format!("{short_salt}{output}"),
        ] {
            let content = format!("{HEADER}\nalice {phc}\nbob {bad}\n");
            std::fs::write(&path, &content).unwrap();
            let err = AccountFile::open(&path).unwrap_err();
            assert_eq!(err.line, Some(3), "{bad}: {err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }
        let content = [format!("{HEADER}\nalice {phc}\n").as_bytes(), b"\xffbob\n"].concat();
        std::fs::write(&path, &content).unwrap();
        let err = AccountFile::open(&path).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), content);
        // A torn last line is not decoded: it is dropped whatever its bytes.
        std::fs::write(&path, [&content[..content.len() - 5], b"\xff"].concat()).unwrap();
        let (_, accounts) = AccountFile::open(&path).unwrap();
        assert_eq!(accounts.len(), 1);
    }

    #[test]
    fn worker_registers_verifies_and_uses_the_dummy_for_unknown_names() {
        use crate::core::auth::Ticket;
        let path = temp_path("worker");
        let (file, _) = AccountFile::open(&path).unwrap();
        let params: HashParams = "m=64,t=1,p=1".parse().unwrap();
        let worker = AuthWorker::spawn(2, Some(file), params, Arc::new(|| {})).unwrap();
        let ticket = Ticket::new(1, 1);
        let wait = || loop {
            if let Some(done) = worker.try_result() {
                return done;
            }
            thread::sleep(std::time::Duration::from_millis(1));
        };
        worker.submit(AuthJob::Register {
            ticket,
            username: "alice".into(),
            password: "pw".into(),
        });
        let AuthOutcome::Registered { phc, .. } = wait().outcome else {
            panic!("expected Registered");
        };
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(on_disk.contains(&format!("alice {phc}\n")));
        assert!(!on_disk.contains(" pw"));
        for (phc, password, expect) in [
            (Some(phc.clone()), "pw", true),
            (Some(phc), "nope", false),
            (None, "pw", false),
        ] {
            worker.submit(AuthJob::Verify {
                ticket,
                phc,
                password: password.into(),
            });
            assert!(matches!(wait().outcome, AuthOutcome::Verified(m) if m == expect));
        }
    }
}
