//! What every store file shares (the accounts file, the history file):
//! opened one way, and written only at its end, one fsynced append at a time
//! that is cut back if it fails.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use log::{error, warn};

use super::lock::try_lock;

/// An open, locked store file, positioned for appending.
#[derive(Debug)]
pub(crate) struct StoreFile {
    file: File,
    path: PathBuf,
    /// Length up to the last whole line: where a failed append is cut back
    /// to.
    len: u64,
}

impl StoreFile {
    /// Opens a store file the way every store file is opened: created with
    /// mode 0600 and for appending, locked against a second server, made
    /// private if others could read it, and read whole, before anything is
    /// written. Until [`keep`](Self::keep) is called its length counts as 0.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<u8>), String> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| e.to_string())?;
        try_lock(&file)?;
        make_private(&file, path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        let store = StoreFile {
            file,
            path: path.to_owned(),
            len: 0,
        };
        Ok((store, bytes))
    }

    /// The file's contents are whole up to `len` (what its parser kept).
    pub(crate) fn keep(&mut self, len: u64) {
        self.len = len;
    }

    /// Length up to the last whole line.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes` and fsyncs; on failure cuts back to the last whole
    /// line, so that nothing of a failed append is kept.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.cut_back() {
                    error!(
                        "{}: cannot cut back a failed write: {cut}",
                        self.path.display()
                    );
                }
                Err(e)
            }
        }
    }

    /// Cuts the file back to its last whole line (a torn tail, a failed
    /// append), durably.
    pub(crate) fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_data()
    }

    /// Takes `file`, already written with `len` bytes, locked and renamed
    /// into this file's place (a compaction).
    pub(crate) fn replace(&mut self, file: File, len: u64) {
        self.file = file;
        self.len = len;
    }
}

/// Makes a file that group or others may read or write private (0600), with a
/// warning: password hashes are for this server only, and an offline guess
/// at a weak password needs nothing more than the hash.
pub(crate) fn make_private(file: &File, path: &Path) -> Result<(), String> {
    let mode = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| {
                format!(
                    "mode {:o} lets others read it, and chmod 0600 failed: {e}",
                    mode & 0o7777
                )
            })?;
        warn!(
            "{}: was mode {:o}, open to group or others; made it 0600",
            path.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// Makes a newly created file's directory entry durable too.
pub(crate) fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!("cannot fsync directory {}: {e}", dir.display());
    }
}
