//! Where a running server's API is, for commands on the same host that have nothing but the
//! data dir: [`start`](crate::start) records the URL of the bound API port, as reached from this
//! host, in `<data-dir>/server/api-address`, and `weft-server node list|delete` read it there,
//! so they need neither the server's flags nor node-IP detection.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::ControlError;
use crate::files::{read_optional, write_file};

#[cfg(test)]
mod tests;

/// The file, under the server's state dir (`<data-dir>/server`), that holds the API's URL.
pub const API_ADDRESS_FILE: &str = "api-address";

/// The URL of an API bound at `bound`, as reached from this host: a wildcard address becomes
/// loopback of its family.
pub fn local_api_url(bound: SocketAddr) -> String {
    let ip = match bound.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::from(Ipv6Addr::LOCALHOST),
        other => other,
    };
    format!("https://{}", SocketAddr::new(ip, bound.port()))
}

/// Records `url` in `<dir>/api-address`.
pub(crate) fn record(dir: &Path, url: &str) -> Result<(), ControlError> {
    write_file(
        &dir.join(API_ADDRESS_FILE),
        format!("{url}\n").as_bytes(),
        0o644,
    )
}

/// The URL the server with state dir `dir` (`<data-dir>/server`) recorded at its last start.
pub fn read(dir: &Path) -> Result<String, ControlError> {
    let path = dir.join(API_ADDRESS_FILE);
    match read_optional(&path)? {
        Some(text) if text.trim().starts_with("https://") => Ok(text.trim().to_owned()),
        Some(_) => Err(ControlError::NoApiAddress {
            path,
            problem: "does not hold an https:// URL",
        }),
        None => Err(ControlError::NoApiAddress {
            path,
            problem: "does not exist",
        }),
    }
}
