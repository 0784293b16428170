//! Entry points for the fuzz targets in `fuzz/fuzz_targets/`, compiled only for tests and
//! `cfg(fuzzing)` so they are not public API.

use std::path::Path;

use crate::Role;
use crate::file::{FileValues, parse};

#[cfg(test)]
mod tests;

/// Parses `data` as a YAML and as a TOML config file and merges the entries for both roles.
///
/// Must never panic, whatever the bytes.
pub fn config_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for path in ["fuzz.yaml", "fuzz.toml"] {
        let path = Path::new(path);
        let (entries, _errors) = parse(path, &text);
        for role in [Role::Server, Role::Agent] {
            let mut values = FileValues::default();
            let mut errors = Vec::new();
            values.apply(path, entries.clone(), role, &mut errors);
            for error in &errors {
                let _ = error.to_string();
            }
        }
    }
}
