//! The Unix socket listener (`unix_socket`, `--unix-socket`, as redis-server's `unixsocket`):
//! binds the socket file, replacing a stale one a crashed process left but never taking over
//! one a live process still listens on, and sets the file's permissions (`unix_socket_perm`, as
//! `unixsocketperm`); the file is removed when the listener's [`SocketFile`] is dropped.
//!
//! It must never remove a file that is not a socket, nor a socket something answers on.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum UnixBindError {
    #[error("{path}: another process is listening on it")]
    InUse { path: String },
    #[error("{path}: exists and is not a socket; not replacing it")]
    NotASocket { path: String },
    #[error("{path}: {cause}")]
    Io { path: String, cause: io::Error },
}

/// What was at the path before binding, and so what binding does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Nothing,
    /// A socket nobody accepts on (connection refused): left by a process that died.
    StaleSocket,
    LiveSocket,
    Other,
}

/// What to do about what was found: bind (after removing a stale socket), or refuse.
fn plan(found: Found) -> Result<bool, fn(String) -> UnixBindError> {
    match found {
        Found::Nothing => Ok(false),
        Found::StaleSocket => Ok(true),
        Found::LiveSocket => Err(|path| UnixBindError::InUse { path }),
        Found::Other => Err(|path| UnixBindError::NotASocket { path }),
    }
}

fn look(path: &Path) -> Found {
    match std::fs::symlink_metadata(path) {
        Err(_) => Found::Nothing,
        Ok(m) if !m.file_type().is_socket() => Found::Other,
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Found::LiveSocket,
            Err(_) => Found::StaleSocket,
        },
    }
}

/// The bound socket's file, removed when dropped.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` with the file mode `perm` (e.g. `0o770`). Must run inside a tokio runtime.
pub fn bind(path: &Path, perm: u32) -> Result<(UnixListener, SocketFile), UnixBindError> {
    let shown = || path.display().to_string();
    let io_err = |cause| UnixBindError::Io {
        path: shown(),
        cause,
    };
    match plan(look(path)) {
        Ok(true) => {
            tracing::info!(path = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Ok(false) => {}
        Err(refusal) => return Err(refusal(shown())),
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    let file = SocketFile {
        path: path.to_path_buf(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(perm)).map_err(io_err)?;
    Ok((listener, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_bind_over_nothing_or_a_stale_socket_only() {
        assert_eq!(plan(Found::Nothing).ok(), Some(false));
        assert_eq!(plan(Found::StaleSocket).ok(), Some(true));
        assert!(matches!(
            plan(Found::LiveSocket).map_err(|f| f("p".into())),
            Err(UnixBindError::InUse { .. })
        ));
        assert!(matches!(
            plan(Found::Other).map_err(|f| f("p".into())),
            Err(UnixBindError::NotASocket { .. })
        ));
    }

    #[tokio::test]
    async fn should_replace_a_stale_socket_refuse_a_live_one_and_leave_other_files() {
        let dir = std::env::temp_dir().join(format!("sg-unix-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|_| unreachable!());
        let sock = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        // A stale socket: bound, then its listener gone without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap_or_else(|_| unreachable!()));
        assert_eq!(look(&sock), Found::StaleSocket);
        let (live, file) = bind(&sock, 0o770).unwrap_or_else(|e| unreachable!("{e}"));
        let mode = std::fs::metadata(&sock).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o770));
        // A live one is not stolen.
        assert!(matches!(
            bind(&sock, 0o770),
            Err(UnixBindError::InUse { .. })
        ));
        drop(live);
        drop(file);
        assert!(!sock.exists(), "removed with its listener");
        // A plain file is never removed.
        std::fs::write(&sock, b"data").unwrap_or_else(|_| unreachable!());
        assert!(matches!(
            bind(&sock, 0o770),
            Err(UnixBindError::NotASocket { .. })
        ));
        assert!(sock.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
