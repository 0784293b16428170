//! Sysctls under `/proc/sys`, by slash-form key (`net/ipv4/ip_forward`).
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the file, so these run
//! on a thread inside the namespace meant.

use std::io;

use crate::KernelError;

/// `sysctl -n KEY`: the value, trimmed, or `None` when the key does not exist (IPv6 disabled,
/// for example).
pub(crate) fn read(key: &str) -> Result<Option<String>, KernelError> {
    match std::fs::read_to_string(path(key)) {
        Ok(value) => Ok(Some(value.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KernelError::Sysctl {
            key: key.to_owned(),
            kind: e.kind(),
        }),
    }
}

/// `sysctl -w KEY=VALUE`.
pub(crate) fn write(key: &str, value: &str) -> Result<(), KernelError> {
    std::fs::write(path(key), value).map_err(|e| KernelError::Sysctl {
        key: key.to_owned(),
        kind: e.kind(),
    })
}

/// The file of a key; dotted keys are accepted too (`net.ipv4.ip_forward`).
fn path(key: &str) -> String {
    let key = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    format!("/proc/sys/{key}")
}
