//! The userspace WireGuard device inside the agent: a defguard_boringtun device on a TUN,
//! configured over a UAPI connection that belongs to this process alone.
//!
//! boringtun normally serves its UAPI on `/var/run/wireguard/<ifname>.sock`, a path on the
//! shared filesystem, not per network namespace: two agents on one host (the tests run nodes as
//! namespaces, every one with a `flannel-wg`) would take each other's socket, and when one of
//! them stops, boringtun's socket monitor stops the other's device too. Here the device gets
//! one end of a socket pair instead (`DeviceConfig::uapi_fd`) and weft keeps the other: no path
//! exists, so nothing can collide, and closing weft's end (on drop, or when the agent process
//! ends) stops the device and removes its TUN.
//!
//! The protocol is WireGuard's cross-platform UAPI (`get=1`, `set=1`), one request at a time:
//! boringtun reads a request, answers `errno=N` and a blank line, and keeps the connection.

use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::fd::IntoRawFd as _;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use defguard_boringtun::device::{DeviceConfig, DeviceHandle};
use defguard_wireguard_rs::host::Host;
use defguard_wireguard_rs::key::Key;

use crate::KernelError;

/// How long a UAPI answer may take before the device counts as hung.
const UAPI_TIMEOUT: Duration = Duration::from_secs(5);
/// How long stopping a device may take before weft stops waiting for its threads.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// `EIO`, for an answer without a readable errno.
const EIO: i32 = 5;

/// A running userspace device. Dropping it stops the device and removes its TUN.
pub(crate) struct UserspaceDevice {
    name: String,
    handle: Option<DeviceHandle>,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The TUN's interface index, once known.
    pub(crate) ifindex: Option<u32>,
    /// The network namespace the device was made in (inode of `/proc/thread-self/ns/net`).
    pub(crate) netns: Option<u64>,
}

// === impl UserspaceDevice ===

impl UserspaceDevice {
    /// Creates the TUN `name` in the calling thread's network namespace, starts the device's
    /// threads, and sets its private key and listen port. Blocking.
    pub(crate) fn start(name: &str, key: &Key, port: u16) -> Result<UserspaceDevice, KernelError> {
        let failed = |reason: String| KernelError::Wireguard {
            object: format!("userspace WireGuard device {name}"),
            reason,
        };
        let (ours, theirs) = UnixStream::pair().map_err(|e| failed(e.to_string()))?;
        let config = DeviceConfig {
            // Two cores are the norm for an agent; each thread serves the TUN and the sockets.
            n_threads: 2,
            use_connected_socket: true,
            use_multi_queue: false,
            // The device owns this end from here on and closes it when it stops.
            uapi_fd: theirs.into_raw_fd(),
        };
        let handle = DeviceHandle::new(name, config).map_err(|e| {
            failed(format!(
                "{e}; is /dev/net/tun there (`modprobe tun`) and is this process root?"
            ))
        })?;
        ours.set_read_timeout(Some(UAPI_TIMEOUT))
            .map_err(|e| failed(e.to_string()))?;
        let writer = ours.try_clone().map_err(|e| failed(e.to_string()))?;
        let mut device = UserspaceDevice {
            name: name.to_owned(),
            handle: Some(handle),
            reader: BufReader::new(ours),
            writer,
            ifindex: None,
            netns: super::current_netns(),
        };
        device.set(&format!(
            "private_key={}\nlisten_port={port}\n",
            key.to_lower_hex()
        ))?;
        Ok(device)
    }

    /// `get=1`: the device's key, port and peers.
    pub(crate) fn get(&mut self) -> Result<Host, KernelError> {
        let body = self.get_text()?;
        Host::parse_uapi(body.as_bytes()).map_err(|e| self.error(e.to_string()))
    }

    /// `get=1`, the answer's text before its `errno` line.
    pub(crate) fn get_text(&mut self) -> Result<String, KernelError> {
        // boringtun takes `get=1` without the blank line; sending one could be read as a
        // second, empty request.
        self.request("get=1\n")
    }

    /// `set=1` with `body` (lines ending in `\n`).
    pub(crate) fn set(&mut self, body: &str) -> Result<(), KernelError> {
        self.request(&format!("set=1\n{body}\n")).map(drop)
    }

    /// Sends one request and reads its answer up to `errno=N` and the blank line after it.
    fn request(&mut self, text: &str) -> Result<String, KernelError> {
        let io = |e: io::Error| format!("the UAPI connection failed: {e}");
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| self.error(io(e)))?;
        let mut body = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| self.error(io(e)))?;
            if n == 0 {
                return Err(self.error("the device closed its UAPI connection".into()));
            }
            if let Some(value) = line.trim_end().strip_prefix("errno=") {
                let errno = value.parse().unwrap_or(EIO);
                let mut blank = String::new();
                self.reader
                    .read_line(&mut blank)
                    .map_err(|e| self.error(io(e)))?;
                if errno != 0 {
                    return Err(self.error(format!(
                        "the device refused the request (errno {errno}): {}",
                        text.lines().next().unwrap_or_default()
                    )));
                }
                return Ok(body);
            }
            body.push_str(&line);
        }
    }

    fn error(&self, reason: String) -> KernelError {
        KernelError::Wireguard {
            object: format!("userspace WireGuard device {}", self.name),
            reason,
        }
    }
}

impl Drop for UserspaceDevice {
    /// Closes the UAPI connection, which stops the device, and waits for its threads, so the
    /// TUN is gone when this returns.
    fn drop(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        if let Some(mut handle) = self.handle.take() {
            let (done, wait) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                handle.wait();
                drop(handle);
                let _ = done.send(());
            });
            let _ = wait.recv_timeout(STOP_TIMEOUT);
        }
    }
}

impl std::fmt::Debug for UserspaceDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceDevice")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .finish_non_exhaustive()
    }
}
