//! The three ways configuration touches the host, as traits: [`Env`], [`Files`] and [`Host`].
//!
//! Loading reads everything through a [`System`], so tests fill it from maps
//! (`weft_config::fake`, behind the `test-util` feature) and never need the host. The real
//! implementations, [`OsEnv`], [`OsFiles`] and [`OsHost`], only read: none of them writes a file,
//! opens a socket or sends a packet, which is why `validate` needs neither root nor a network.

use std::io;
use std::net::IpAddr;
use std::path::Path;

use weft_ipam::Family;

#[cfg(test)]
mod tests;

/// Environment variables.
pub trait Env {
    /// The value of `name`, or `None` when it is unset or not UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// Read-only access to files.
pub trait Files {
    /// The whole content of a text file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The names of the regular files (following symlinks) in a directory, in any order.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether a file exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
}

/// What configuration needs to know about this host.
pub trait Host {
    /// The hostname.
    fn hostname(&self) -> io::Result<String>;
    /// The interface of the default route of `family` with the lowest metric, if any.
    fn default_route_interface(&self, family: Family) -> io::Result<Option<String>>;
    /// An interface by name, or `None` when the host has none of that name.
    fn interface(&self, name: &str) -> io::Result<Option<Interface>>;
}

/// A network interface as far as node-IP selection cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Whether it is administratively up.
    pub up: bool,
    /// Its addresses, in the order the host lists them.
    pub addrs: Vec<IpAddr>,
}

/// The sources one load reads from.
#[derive(Clone, Copy)]
pub struct System<'a> {
    /// Environment variables.
    pub env: &'a dyn Env,
    /// Files.
    pub files: &'a dyn Files,
    /// The host's name, routes and interfaces.
    pub host: &'a dyn Host,
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEnv;

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFiles;

/// This Linux host: `/proc/sys/kernel/hostname`, `/proc/net/route`, `/proc/net/ipv6_route`,
/// `/sys/class/net/<iface>/flags` and `getifaddrs(3)` (through the if-addrs crate).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsHost;

// === impl System ===

impl System<'static> {
    /// The real host: process environment, file system and interfaces.
    pub fn os() -> System<'static> {
        System {
            env: &OsEnv,
            files: &OsFiles,
            host: &OsHost,
        }
    }
}

// === impl OsEnv ===

impl Env for OsEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

// === impl OsFiles ===

impl Files for OsFiles {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // `metadata` follows symlinks, so a link to a file counts as a file.
            let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
            if let (true, Ok(name)) = (is_file, entry.file_name().into_string()) {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
}

// === impl OsHost ===

impl Host for OsHost {
    fn hostname(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned())
    }

    fn default_route_interface(&self, family: Family) -> io::Result<Option<String>> {
        let (path, parse): (_, fn(&str) -> Option<String>) = match family {
            Family::Ipv4 => ("/proc/net/route", default_ipv4_route_interface),
            Family::Ipv6 => ("/proc/net/ipv6_route", default_ipv6_route_interface),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(parse(&text)),
            // No IPv6 in this kernel: no IPv6 default route.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn interface(&self, name: &str) -> io::Result<Option<Interface>> {
        // A name with '/' would leave /sys/class/net; validation refuses it before this point.
        if name.is_empty() || name.contains('/') {
            return Ok(None);
        }
        let flags =
            match std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("flags")) {
                Ok(flags) => flags,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let addrs = if_addrs::get_if_addrs()?
            .into_iter()
            .filter(|i| i.name == name)
            .map(|i| i.ip())
            .collect();
        Ok(Some(Interface {
            up: flags & IFF_UP != 0,
            addrs,
        }))
    }
}

/// `IFF_UP` from `<net/if.h>`: the interface is administratively up (`ip link set up`).
const IFF_UP: u32 = 0x1;
/// `RTF_UP` from `<linux/route.h>`: the route is usable.
const RTF_UP: u32 = 0x1;
/// `RTF_REJECT` from `<linux/route.h>`: an unreachable route, such as IPv6's default on `lo`.
const RTF_REJECT: u32 = 0x200;

/// The interface of the IPv4 default route with the lowest metric in `/proc/net/route` text
/// (`ip -4 route show default`).
///
/// Columns: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, hex in host order.
pub(crate) fn default_ipv4_route_interface(text: &str) -> Option<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) =
                (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?, f.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            let default = u32::from_str_radix(dest, 16).ok()? == 0
                && u32::from_str_radix(mask, 16).ok()? == 0;
            (usable && default).then(|| Some((metric.parse::<u32>().ok()?, (*iface).to_owned())))?
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// The interface of the IPv6 default route with the lowest metric in `/proc/net/ipv6_route`
/// text (`ip -6 route show default`), skipping `lo` and unreachable routes.
///
/// Columns: `dest dest_len src src_len next_hop metric refcnt use flags iface`, all hex.
pub(crate) fn default_ipv6_route_interface(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, dest_len, metric, flags, iface) =
                (f.first()?, f.get(1)?, f.get(5)?, f.get(8)?, f.get(9)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && *iface != "lo";
            let default =
                dest.bytes().all(|b| b == b'0') && u32::from_str_radix(dest_len, 16).ok()? == 0;
            (usable && default)
                .then(|| Some((u32::from_str_radix(metric, 16).ok()?, (*iface).to_owned())))?
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}
