//! A tiny HTTP server that stands in for a kubelet, or for a server in a pod, inside a
//! namespace: `xtask e2e --serve ADDRESS NAME`.
//!
//! Every request gets `200` with the body `NAME CLIENT-IP`: the test learns which process
//! answered and where the connection came from (through the egress tunnel an agent dials from
//! its own node; a direct dial comes from the server). It reads each request's headers before
//! it answers, so closing never resets a connection with unread bytes, and needs no shell, no
//! Python and no package beyond xtask itself.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context;

use super::lab::{Daemon, Lab, Ns, wait_for};

/// The responder's body for a client at `client`: `NAME CLIENT-IP`.
pub(crate) fn body(name: &str, client: std::net::IpAddr) -> String {
    format!("{name} {client}\n")
}

/// Serves forever on `address` (`IP:PORT`, `[IPv6]:PORT`).
pub(crate) fn serve(address: &str, name: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let name = name.to_owned();
        std::thread::spawn(move || {
            let _ = answer(stream, &name);
        });
    }
    Ok(())
}

fn answer(stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let client = stream.peer_addr()?.ip().to_canonical();
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    // The request line and headers, up to the empty line (a GET has no body).
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    let body = body(name, client);
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Starts a responder named `name` on port `port` of every address in `ns` and waits until it
/// listens.
pub(crate) fn start(lab: &Lab<'_>, ns: &Ns, port: u16, name: &str) -> anyhow::Result<Daemon> {
    let exe = std::env::current_exe()?;
    let mut daemon = lab.spawn_helper(
        ns,
        &format!("http-{name}"),
        &exe,
        ["e2e", "--serve", &format!("[::]:{port}"), name],
    )?;
    let filter = format!("sport = :{port}");
    wait_for(
        &format!("{name} listening in {ns}"),
        Duration::from_secs(10),
        || {
            daemon.check_running()?;
            let out = ns.run("ss", &["-Hltn", &filter])?;
            Ok((!out.trim().is_empty()).then_some(()))
        },
    )?;
    Ok(daemon)
}
