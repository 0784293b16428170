//! A read-only UAPI socket per userspace device, at a path in the agent's own directory, so
//! another process of the same agent (`weft-agent plan` beside the daemon) can observe the
//! device. It answers `get=1` only, and refuses everything else with EPERM: changing a device
//! is the daemon's job, through its private socket pair.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use defguard_wireguard_rs::host::Host;

use super::Inner;

/// How long a client may take to send its request, or to read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A listening socket and the thread that answers on it; dropping it stops the thread and
/// removes the socket file.
pub(crate) struct ReadOnlySocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

// === impl ReadOnlySocket ===

impl ReadOnlySocket {
    /// Binds `path` (replacing a file a stopped agent left) and answers for device `name`.
    pub(crate) fn serve(
        path: PathBuf,
        name: String,
        inner: Weak<Mutex<Inner>>,
    ) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    break;
                }
                if let Ok(conn) = conn {
                    answer(conn, &name, &inner);
                }
            }
        });
        Ok(ReadOnlySocket {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ReadOnlySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accepting thread, which then sees `stop`.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one connection: `get=1` with the device's state, anything else with EPERM.
fn answer(conn: UnixStream, name: &str, inner: &Weak<Mutex<Inner>>) {
    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return;
    }
    let reply = if line.trim_end() != "get=1" {
        "errno=1\n\n".to_owned()
    } else {
        match inner
            .upgrade()
            .and_then(|inner| super::device_text(&inner, name))
        {
            Some(Ok(text)) => format!("{text}errno=0\n\n"),
            _ => "errno=5\n\n".to_owned(),
        }
    };
    let _ = (&conn).write_all(reply.as_bytes());
}

/// Reads a device through its read-only socket at `path`: `None` when nothing answers there.
pub(crate) fn read(path: &Path) -> Option<Host> {
    let mut conn = UnixStream::connect(path).ok()?;
    conn.set_read_timeout(Some(CLIENT_TIMEOUT)).ok()?;
    conn.write_all(b"get=1\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let (body, errno) = text.rsplit_once("errno=")?;
    if errno.trim() != "0" {
        return None;
    }
    Host::parse_uapi(body.as_bytes()).ok()
}
