//! One server per file: an exclusive lock taken at open and held for as long
//! as the file is (SPEC section 4; the history file of section 9 will take
//! the same lock).

use std::fs::{File, TryLockError};
use std::path::Path;

/// Takes an exclusive, non-blocking lock (`flock(LOCK_EX | LOCK_NB)`) on
/// `file`, held until the file is closed; `path` only names it in the error.
///
/// Without it, two servers started on one file would each append accounts the
/// other does not know of (the same name twice, a file the next start refuses)
/// and each could cut back the other's lines. Non-blocking, so that the second
/// server stops at once and says why instead of hanging at start.
pub fn lock_exclusive(file: &File, path: &Path) -> Result<(), String> {
    try_lock(file).map_err(|reason| format!("{}: {reason}", path.display()))
}

/// [`lock_exclusive`] without the file's name, for callers whose errors name
/// it already.
pub(crate) fn try_lock(file: &File) -> Result<(), String> {
    // std's `try_lock` is flock(2) with LOCK_EX | LOCK_NB on Linux: a lock
    // on the open file, not the process, released when the file is closed.
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err("in use by another server (it holds the file's \
             lock); stop that server first, or give this one another file"
            .into()),
        Err(TryLockError::Error(e)) => Err(format!("cannot lock: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_file_is_refused_until_the_first_is_closed() {
        let dir = std::env::temp_dir().join(format!("chat-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let first = File::create(&path).unwrap();
        lock_exclusive(&first, &path).unwrap();
        // A separate open is a separate lock, as in a second process.
        let second = File::open(&path).unwrap();
        let err = lock_exclusive(&second, &path).unwrap_err();
        assert!(err.contains("in use by another server"), "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        drop(first);
        lock_exclusive(&second, &path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
