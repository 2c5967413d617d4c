//! The Unix socket transport: socket ownership by lock file, a 0600 socket in a 0700 directory, and a peer-uid
//! check on every connection.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tracing::info;

use super::{Accepted, Listener};
use crate::registry::Peer;

/// The socket path and the lock that makes this daemon its only owner.
pub struct SocketOwnership {
    pub path: PathBuf,
    _lock: File,
    /// False for a socket a service manager created and passed: its file is not ours to remove.
    owns_file: bool,
}

/// Why this daemon cannot own the socket path.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "another sparkd already serves {path} (lock {lock} is held); not starting a second one"
    )]
    AlreadyRunning { path: PathBuf, lock: PathBuf },
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

/// Takes the per-socket lock file and clears a stale socket left by a dead daemon.
///
/// The lock (`<socket>.lock`, `flock`ed for the daemon's lifetime) is what makes ownership safe: a socket
/// file found while we hold the lock can only be stale, so it is replaced; a held lock means a live daemon
/// (or one starting right now), so we leave everything alone. A path that exists and is not a socket is never
/// replaced: it may be someone's file.
pub fn take_socket(path: &Path, is_default: bool) -> Result<SocketOwnership, OwnershipError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    prepare_dir(dir, is_default)?;
    let lock = take_lock(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            info!(
                "replacing stale socket {} left by a daemon that is gone",
                path.display()
            );
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Ok(_) => {
            return Err(anyhow::anyhow!(
                "{} exists and is not a socket; refusing to replace it (choose another --socket)",
                path.display()
            )
            .into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot inspect {}: {e}", path.display()).into()),
    }
    Ok(SocketOwnership {
        path: path.to_owned(),
        _lock: lock,
        owns_file: true,
    })
}

/// Ownership of a socket a service manager passed: the same lock (so a daemon started by hand next to the
/// activated one refuses to start), but the file stays the manager's.
pub fn adopt_socket(path: &Path) -> Result<SocketOwnership, OwnershipError> {
    Ok(SocketOwnership {
        path: path.to_owned(),
        _lock: take_lock(path)?,
        owns_file: false,
    })
}

/// Takes `<socket>.lock` (`flock`, held for the daemon's lifetime).
fn take_lock(path: &Path) -> Result<File, OwnershipError> {
    let lock_path = lock_path(path);
    let lock = std::fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open lock file {}", lock_path.display()))?;
    if let Err(e) = rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            return Err(OwnershipError::AlreadyRunning {
                path: path.to_owned(),
                lock: lock_path,
            });
        }
        return Err(anyhow::anyhow!("cannot lock {}: {e}", lock_path.display()).into());
    }
    Ok(lock)
}

pub fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Creates the socket directory 0700. The default directory is ours by name, so an existing one is also
/// checked for ownership and tightened; a directory the user named is created if missing but otherwise
/// left as it is.
fn prepare_dir(dir: &Path, is_default: bool) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        return Ok(());
    }
    if is_default {
        let m = std::fs::symlink_metadata(dir)?;
        let me = rustix::process::geteuid().as_raw();
        if !m.is_dir() || m.uid() != me {
            bail!(
                "socket directory {} is not a directory owned by uid {me}; remove it or pass --socket",
                dir.display()
            );
        }
        if m.mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// A listening Unix socket this daemon owns.
pub struct UnixTransport {
    listener: Option<UnixListener>,
    ownership: SocketOwnership,
}

impl UnixTransport {
    /// Binds the listening socket with mode 0600 from the start (umask), so there is no window in which
    /// another user could connect. Must run inside the runtime.
    pub fn bind(ownership: SocketOwnership) -> anyhow::Result<UnixTransport> {
        let path = &ownership.path;
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let r = UnixListener::bind(path);
        rustix::process::umask(old);
        let l = r.with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(UnixTransport {
            listener: Some(l),
            ownership,
        })
    }
}

impl UnixTransport {
    /// Serves on a listening socket a service manager passed (see [`super::activation`]).
    pub fn adopt(
        listener: std::os::unix::net::UnixListener,
        ownership: SocketOwnership,
    ) -> anyhow::Result<UnixTransport> {
        Ok(UnixTransport {
            listener: Some(UnixListener::from_std(listener)?),
            ownership,
        })
    }
}

impl Listener for UnixTransport {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    async fn accept(&mut self) -> std::io::Result<Accepted<OwnedReadHalf, OwnedWriteHalf>> {
        let Some(l) = &self.listener else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        let (stream, _) = l.accept().await?;
        let (peer, refused) = check_peer(&stream);
        let (read, write) = stream.into_split();
        Ok(Accepted {
            read,
            write,
            peer,
            refused,
        })
    }

    fn is_transient(&self, e: &std::io::Error) -> bool {
        use rustix::io::Errno;
        matches!(
            e.raw_os_error().map(Errno::from_raw_os_error),
            Some(
                Errno::MFILE
                    | Errno::NFILE
                    | Errno::NOBUFS
                    | Errno::NOMEM
                    | Errno::CONNABORTED
                    | Errno::INTR
            )
        )
    }

    fn describe(&self) -> String {
        self.ownership.path.display().to_string()
    }

    fn close(&mut self) {
        // A passed socket stays: the manager keeps listening on it and starts sparkd for the next client.
        if self.ownership.owns_file {
            let _ = std::fs::remove_file(&self.ownership.path);
        }
        self.listener = None;
    }
}

/// Only the daemon's own user may talk to it, whatever the socket file's mode says.
fn check_peer(stream: &tokio::net::UnixStream) -> (Peer, Option<String>) {
    let me = rustix::process::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(c) => {
            let peer = Peer {
                pid: c.pid().and_then(|p| u32::try_from(p).ok()),
                uid: Some(c.uid()),
            };
            let refused = (c.uid() != me).then(|| {
                format!(
                    "peer uid {} is not this daemon's uid {me}; each user runs their own sparkd",
                    c.uid()
                )
            });
            (peer, refused)
        }
        Err(e) => (
            Peer::default(),
            Some(format!("cannot read peer credentials: {e}")),
        ),
    }
}
