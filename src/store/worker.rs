//! The threads that hash, verify and persist, off the event loop.
//!
//! Hashing takes tens of milliseconds by design and fsync can take longer, so
//! both run here; results go back to the loop over a channel, and a wake
//! callback (a [`mio::Waker`] in the server) tells it to look.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use log::{error, warn};

use super::accounts::AccountFile;
use super::hash::{HashParams, Hasher, ParamCounts};
use crate::core::auth::{AuthDone, AuthJob, AuthOutcome};

/// The threads that hash, verify and persist, and the channels to them.
pub struct AuthWorker {
    jobs: Sender<AuthJob>,
    results: Receiver<AuthDone>,
}

/// What all workers share.
struct Shared {
    /// `None` for `--accounts :memory:`.
    store: Mutex<Option<AccountFile>>,
    /// The cost of the stored hashes, kept up to date as accounts are added,
    /// so that the dummy hash for an unknown name costs what a typical
    /// stored hash costs, even after `--hash-params` changed.
    counts: Mutex<ParamCounts>,
    /// The cost of new hashes, and of the dummy while nothing is stored.
    params: HashParams,
}

impl AuthWorker {
    /// Starts `threads` workers. `store` is `None` for `--accounts :memory:`.
    /// `wake` is called after each result is queued, to wake the event loop.
    ///
    /// Each worker owns one [`Hasher`], whose memory is allocated on its
    /// first job and reused for every later one.
    pub fn spawn(
        threads: usize,
        store: Option<AccountFile>,
        params: HashParams,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Self, String> {
        // Checked here too for callers that build `HashParams` by hand.
        params.argon2()?;
        let counts = store
            .as_ref()
            .map(|file| file.param_counts().clone())
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            counts: Mutex::new(counts),
            params,
        });
        let (jobs, job_rx) = mpsc::channel::<AuthJob>();
        let (result_tx, results) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for index in 0..threads.max(1) {
            let job_rx = Arc::clone(&job_rx);
            let result_tx = result_tx.clone();
            let shared = Arc::clone(&shared);
            let wake = Arc::clone(&wake);
            thread::Builder::new()
                .name(format!("auth-{index}"))
                .spawn(move || {
                    lower_thread_priority();
                    let mut hasher = Hasher::new();
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            },
                            Err(_) => return,
                        };
                        let done = run_job(job, &mut hasher, &shared);
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
fn run_job(job: AuthJob, hasher: &mut Hasher, shared: &Shared) -> AuthDone {
    match job {
        AuthJob::Verify {
            ticket,
            phc,
            password,
        } => {
            let matched = match phc {
                Some(phc) => hasher.verify(&phc, &password),
                None => {
                    let cost = shared
                        .counts
                        .lock()
                        .ok()
                        .and_then(|counts| counts.most_common())
                        .unwrap_or(shared.params);
                    hasher.burn(cost, &password);
                    false
                }
            };
            AuthDone {
                ticket,
                outcome: AuthOutcome::Verified(matched),
            }
        }
        AuthJob::Register {
            ticket,
            username,
            password,
        } => {
            let stored = hasher.hash(shared.params, &password).and_then(|phc| {
                let mut guard = shared
                    .store
                    .lock()
                    .map_err(|_| "accounts lock poisoned".to_owned())?;
                if let Some(file) = guard.as_mut() {
                    file.append(&username, &phc)
                        .map_err(|e| format!("cannot write account {username}: {e}"))?;
                }
                Ok(phc)
            });
            let outcome = match stored {
                Ok(phc) => {
                    if let Ok(mut counts) = shared.counts.lock() {
                        counts.add(shared.params);
                    }
                    AuthOutcome::Registered {
                        username,
                        phc: phc.into(),
                    }
                }
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
    use crate::core::auth::Ticket;
    use std::path::PathBuf;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-worker-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("accounts.db")
    }

    #[test]
    fn worker_registers_verifies_and_uses_the_dummy_for_unknown_names() {
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
            let done = wait();
            assert_eq!(done.ticket, ticket);
            assert!(matches!(done.outcome, AuthOutcome::Verified(m) if m == expect));
        }
    }
}
