//! Config files: finding them, parsing YAML or TOML, and merging drop-ins as K3s does.
//!
//! The main file is `/etc/weft/config.yaml`, or the one named by `WEFT_CONFIG_FILE`,
//! `K3S_CONFIG_FILE` or `--config` (in that order: the environment wins over the flag, as in
//! K3s). Then come the drop-ins `<file>.d/*.yaml|*.yml`, in file-name order. A later file's
//! `key:` replaces the value, `key+:` appends to it. A file ending in `.toml` is TOML with the
//! same keys. A K3s setting weft does not act on (`tls-san`, `kubelet-arg`, ...) is skipped with
//! one [`Warning::IgnoredK3sKey`], as `k3s server` skips keys it does not know. Unlike K3s, a
//! named file that does not exist and a key neither weft nor K3s knows are errors, and so is a
//! K3s server setting in an agent's file, which `k3s agent` refuses too.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use weft_cause::Cause;

use crate::setting::{K3sKey, k3s_key};
use crate::{ConfigError, Env, Files, Key, Origin, Role, Warning};

#[cfg(test)]
mod tests;

/// One `key: value` line of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The key as written, without a trailing `+`.
    pub(crate) key: String,
    /// Whether the key ended in `+`.
    pub(crate) append: bool,
    /// The value.
    pub(crate) value: FileValue,
}

/// A value in a config file: one plain value or a list of them, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileValue {
    /// A scalar; booleans are `true`/`false`, null is empty.
    One(String),
    /// A list.
    Many(Vec<String>),
}

/// Where the main config file is and what named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigLocation {
    /// The path.
    pub(crate) path: PathBuf,
    /// `--config`, `WEFT_CONFIG_FILE` or `K3S_CONFIG_FILE`; `None` for the default path.
    pub(crate) named_by: Option<&'static str>,
}

/// The merged values of every config file, with the file that last set each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileValues {
    values: BTreeMap<Key, (FileValue, PathBuf)>,
    /// The K3s settings skipped, each once, in the order first met.
    ignored: Vec<&'static str>,
}

/// Finds the main config file: `WEFT_CONFIG_FILE`, `K3S_CONFIG_FILE`, `--config`, default.
pub(crate) fn locate(flag: Option<&str>, env: &dyn Env) -> ConfigLocation {
    let from_env = Key::Config
        .setting()
        .env
        .iter()
        .find_map(|var| Some((env.var(var).filter(|v| !v.is_empty())?, *var)));
    let (path, named_by) = match (from_env, flag.filter(|f| !f.is_empty())) {
        (Some((path, var)), _) => (path, Some(var)),
        (None, Some(flag)) => (flag.to_owned(), Some("--config")),
        (None, None) => (crate::DEFAULT_CONFIG_FILE.to_owned(), None),
    };
    ConfigLocation {
        path: PathBuf::from(path),
        named_by,
    }
}

/// Reads the main file and its drop-ins, checks every key for `role`, and merges them.
///
/// Returns the merged values, every error found and one warning per K3s setting skipped; a
/// file with errors still contributes its good keys, so later checks can report their own
/// problems too.
pub(crate) fn load(
    location: &ConfigLocation,
    role: Role,
    files: &dyn Files,
) -> (FileValues, Vec<ConfigError>, Vec<Warning>) {
    let mut values = FileValues::default();
    let mut errors = Vec::new();
    let read = |path: &Path, errors: &mut Vec<ConfigError>, values: &mut FileValues| match files
        .read(path)
    {
        Ok(text) => {
            let (entries, errs) = parse(path, &text);
            errors.extend(errs);
            values.apply(path, entries, role, errors);
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            errors.push(read_error(path, e));
            true
        }
    };

    let found = read(&location.path, &mut errors, &mut values);
    if let (false, Some(named_by)) = (found, location.named_by) {
        errors.push(ConfigError::ConfigFileMissing {
            path: location.path.clone(),
            named_by,
        });
    }

    let dir = drop_in_dir(&location.path);
    match files.list_files(&dir) {
        Ok(mut names) => {
            names.retain(|n| {
                let n = n.to_ascii_lowercase();
                n.ends_with(".yaml") || n.ends_with(".yml")
            });
            names.sort();
            for name in names {
                read(&dir.join(name), &mut errors, &mut values);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => errors.push(read_error(&dir, e)),
    }
    let warnings = values
        .ignored
        .iter()
        .map(|&key| Warning::IgnoredK3sKey { key })
        .collect();
    (values, errors, warnings)
}

/// Parses one config file: TOML when the name ends in `.toml`, else YAML.
///
/// Returns the entries in file order and every error; an entry with a bad value is left out.
pub(crate) fn parse(path: &Path, text: &str) -> (Vec<Entry>, Vec<ConfigError>) {
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml {
        parse_toml(path, text)
    } else {
        parse_yaml(path, text)
    }
}

/// `<config>.d`, the drop-in directory of a config file.
pub(crate) fn drop_in_dir(config: &Path) -> PathBuf {
    let mut dir = OsString::from(config.as_os_str());
    dir.push(".d");
    PathBuf::from(dir)
}

// === impl FileValues ===

impl FileValues {
    /// The value of `key`, and the last file that set it.
    pub(crate) fn get(&self, key: Key) -> Option<&(FileValue, PathBuf)> {
        self.values.get(&key)
    }

    /// Checks each entry's key for `role` and merges the good ones: `key` replaces,
    /// `key+` appends. K3s settings weft does not act on are noted, each once.
    pub(crate) fn apply(
        &mut self,
        path: &Path,
        entries: Vec<Entry>,
        role: Role,
        errors: &mut Vec<ConfigError>,
    ) {
        for entry in entries {
            let key = match Key::lookup(&entry.key) {
                None => {
                    match k3s_key(&entry.key, role) {
                        Some(K3sKey::Ignored(key)) => {
                            if !self.ignored.contains(&key) {
                                self.ignored.push(key);
                            }
                        }
                        Some(K3sKey::ServerOnly(key)) => {
                            errors.push(ConfigError::K3sServerKeyOnAgent {
                                path: path.to_owned(),
                                key,
                            });
                        }
                        Some(K3sKey::Unsupported(key, fix)) => {
                            errors.push(ConfigError::K3sUnsupported {
                                path: path.to_owned(),
                                key,
                                fix,
                            });
                        }
                        None => errors.push(ConfigError::UnknownKey {
                            path: path.to_owned(),
                            closest: Key::closest(&entry.key),
                            key: entry.key,
                        }),
                    }
                    continue;
                }
                Some(Key::Config) => {
                    errors.push(ConfigError::ConfigKeyInFile {
                        path: path.to_owned(),
                    });
                    continue;
                }
                Some(key) if !role.takes(key) => {
                    errors.push(crate::resolve::not_for_agent(
                        key,
                        Origin::File(path.to_owned()),
                    ));
                    continue;
                }
                Some(key) => key,
            };
            let value = match (entry.append, self.values.remove(&key)) {
                (true, Some((old, _))) => {
                    let mut items = old.into_items();
                    items.extend(entry.value.into_items());
                    FileValue::Many(items)
                }
                _ => entry.value,
            };
            self.values.insert(key, (value, path.to_owned()));
        }
    }
}

// === impl FileValue ===

impl FileValue {
    /// The value as a list: a scalar is a list of one.
    pub(crate) fn into_items(self) -> Vec<String> {
        match self {
            FileValue::One(v) => vec![v],
            FileValue::Many(v) => v,
        }
    }
}

fn read_error(path: &Path, e: io::Error) -> ConfigError {
    ConfigError::ReadFile {
        path: path.to_owned(),
        source: Cause::new(e),
    }
}

/// Splits `key+` into `(key, true)`.
fn split_key(key: &str) -> (String, bool) {
    match key.strip_suffix('+') {
        Some(k) => (k.to_owned(), true),
        None => (key.to_owned(), false),
    }
}

fn parse_yaml(path: &Path, text: &str) -> (Vec<Entry>, Vec<ConfigError>) {
    use serde_norway::Value;

    let doc: Value = match serde_norway::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            let error = ConfigError::FileSyntax {
                path: path.to_owned(),
                format: "YAML",
                reason: e.to_string(),
            };
            return (Vec::new(), vec![error]);
        }
    };
    let map = match doc {
        Value::Null => return (Vec::new(), Vec::new()),
        Value::Mapping(map) => map,
        _ => {
            let error = ConfigError::FileNotAMap {
                path: path.to_owned(),
            };
            return (Vec::new(), vec![error]);
        }
    };

    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) => Some(s.clone()),
            Value::Tagged(t) => scalar(&t.value),
            Value::Sequence(_) | Value::Mapping(_) => None,
        }
    }

    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in map {
        let Some(k) = k.as_str() else {
            errors.push(ConfigError::KeyNotText {
                path: path.to_owned(),
                key: serde_norway::to_string(&k)
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_default(),
            });
            continue;
        };
        let (key, append) = split_key(k);
        let value = match &v {
            Value::Sequence(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(FileValue::Many),
            other => scalar(other).map(FileValue::One),
        };
        match value {
            Some(value) => entries.push(Entry { key, append, value }),
            None => errors.push(ConfigError::NestedValue {
                path: path.to_owned(),
                key,
            }),
        }
    }
    (entries, errors)
}

fn parse_toml(path: &Path, text: &str) -> (Vec<Entry>, Vec<ConfigError>) {
    use toml::Value;

    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(e) => {
            let error = ConfigError::FileSyntax {
                path: path.to_owned(),
                format: "TOML",
                reason: e.message().to_owned(),
            };
            return (Vec::new(), vec![error]);
        }
    };

    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Integer(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Boolean(b) => Some(b.to_string()),
            Value::Datetime(d) => Some(d.to_string()),
            Value::Array(_) | Value::Table(_) => None,
        }
    }

    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (k, v) in &table {
        let (key, append) = split_key(k);
        let value = match v {
            Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(FileValue::Many),
            other => scalar(other).map(FileValue::One),
        };
        match value {
            Some(value) => entries.push(Entry { key, append, value }),
            None => errors.push(ConfigError::NestedValue {
                path: path.to_owned(),
                key,
            }),
        }
    }
    (entries, errors)
}
