//! Accounts that survive: the accounts file, read and appended to.
//!
//! The seed kept `akun[]` in memory with clear-text passwords. Here each account
//! is one line of a text file (format and reading rules in [`super::parse`]),
//! its password an argon2id PHC string ([`super::hash`]), and the line is
//! written and fsynced before `REGIST_OK` is sent, by the worker threads of
//! [`super::worker`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use log::warn;

use super::file::{StoreFile, sync_parent_dir};
use super::hash::ParamCounts;
use super::parse::{Tail, parse_accounts};

pub use super::hash::HashParams;
pub use super::parse::HEADER;
pub use super::worker::AuthWorker;

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

/// The open accounts file, positioned for appending, and locked: no other
/// server can open it while this one runs.
#[derive(Debug)]
pub struct AccountFile {
    file: StoreFile,
    /// The cost of each stored hash, for the dummy hash of unknown names.
    counts: ParamCounts,
}

impl AccountFile {
    /// Opens (creating, mode 0600), locks and reads the accounts file.
    /// Returns the file and its accounts as (name, PHC) pairs.
    ///
    /// In order: the lock first, so that a second server changes nothing; a
    /// file others can read or write is made 0600; then the contents are
    /// parsed before anything is written, so a bad file is left as it was;
    /// last, a torn last line is cut off, or a missing final `\n` added.
    pub fn open(path: &Path) -> Result<(Self, Vec<(String, String)>), LoadError> {
        let fail = |line: Option<usize>, reason: String| LoadError {
            path: path.to_owned(),
            line,
            reason,
        };
        let (mut file, bytes) = StoreFile::open(path).map_err(|e| fail(None, e))?;
        let parsed = parse_accounts(&bytes).map_err(|bad| fail(Some(bad.line), bad.reason))?;
        let mut counts = ParamCounts::default();
        for account in &parsed.accounts {
            counts.add(account.params);
        }
        file.keep(parsed.keep as u64);
        let mut store = AccountFile { file, counts };
        match parsed.tail {
            Tail::Whole => {}
            Tail::Torn => {
                warn!(
                    "{}: dropping a torn last line of {} bytes (a write cut short by a crash)",
                    path.display(),
                    bytes.len() - parsed.keep
                );
                store
                    .file
                    .cut_back()
                    .map_err(|e| fail(None, e.to_string()))?;
            }
            Tail::MissingNewline => {
                warn!(
                    "{}: the last line is whole but lacks its final newline; adding it",
                    path.display()
                );
                store
                    .file
                    .append(b"\n")
                    .map_err(|e| fail(None, format!("cannot add the final newline: {e}")))?;
            }
        }
        if store.file.len() == 0 {
            store
                .append_line(HEADER)
                .map_err(|e| fail(None, e.to_string()))?;
            sync_parent_dir(path);
        }
        let accounts = parsed
            .accounts
            .into_iter()
            .map(|account| (account.name, account.phc))
            .collect();
        Ok((store, accounts))
    }

    /// How many stored hashes use each cost.
    pub fn param_counts(&self) -> &ParamCounts {
        &self.counts
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
        self.file.append(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::hash::Hasher;
    use std::fs::Permissions;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-accounts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("accounts.db")
    }

    fn cheap_hash(password: &str) -> String {
        Hasher::new()
            .hash("m=64,t=1,p=1".parse().unwrap(), password)
            .unwrap()
    }

    #[test]
    fn a_new_file_gets_a_header_and_mode_0600_and_accounts_survive_reopen() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("reopen");
        let (mut file, accounts) = AccountFile::open(&path).unwrap();
        assert!(accounts.is_empty());
        let phc = cheap_hash("pw");
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
        let phc = cheap_hash("pw");
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
        let phc = cheap_hash("pw");
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
        let phc = cheap_hash("pw");
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
    fn a_whole_last_line_without_its_newline_is_kept_and_the_newline_added() {
        let path = temp_path("nonl");
        let phc = cheap_hash("pw");
        std::fs::write(&path, format!("{HEADER}\nalice {phc}")).unwrap();
        let (_, accounts) = AccountFile::open(&path).unwrap();
        assert_eq!(accounts, vec![("alice".to_owned(), phc.clone())]);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{HEADER}\nalice {phc}\n")
        );
        std::fs::write(&path, HEADER).unwrap();
        AccountFile::open(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{HEADER}\n")
        );
    }

    #[test]
    fn an_open_file_is_made_private_and_locked() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("private");
        std::fs::write(&path, format!("{HEADER}\n")).unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o664)).unwrap();
        let (first, _) = AccountFile::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = AccountFile::open(&path).unwrap_err();
        assert!(
            err.to_string().contains("in use by another server"),
            "{err}"
        );
        drop(first);
        AccountFile::open(&path).unwrap();
    }
}
