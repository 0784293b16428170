//! Precedence: command-line flag, then config files, then environment, then default.
//!
//! A single value takes the first source that has it. A list takes the config files' entries
//! followed by the flags' entries (K3s: both are arguments, the file's first); only when neither
//! has any does the environment count. Commas split list entries wherever they come from.
//! Defaults are applied later, by the typed layer, because some depend on other settings.

use std::collections::BTreeMap;

use crate::file::{FileValue, FileValues};
use crate::{ConfigError, Env, Key, Kind, Origin, Role, Warning};

#[cfg(test)]
mod tests;

/// Flag values as the command line gave them, before merging with files and environment.
///
/// Repeated flags keep every value; for a single-value setting the last one counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagValues {
    values: BTreeMap<Key, Vec<String>>,
}

/// Every setting's value after precedence, with where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resolved {
    values: BTreeMap<Key, (Raw, Origin)>,
}

/// A resolved value, still text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Raw {
    /// A single value.
    One(String),
    /// A list, already split on commas, trimmed, without empty entries.
    Many(Vec<String>),
}

// === impl FlagValues ===

impl FlagValues {
    /// No flags.
    pub fn new() -> FlagValues {
        FlagValues::default()
    }

    /// Adds one occurrence of `--<key>=<value>`.
    pub fn push(&mut self, key: Key, value: impl Into<String>) {
        self.values.entry(key).or_default().push(value.into());
    }

    /// Adds one occurrence of `--<key>=<value>`, builder style.
    pub fn with(mut self, key: Key, value: impl Into<String>) -> FlagValues {
        self.push(key, value);
        self
    }

    /// Every occurrence of `key`, in order.
    pub fn get(&self, key: Key) -> &[String] {
        self.values.get(&key).map_or(&[], Vec::as_slice)
    }
}

// === impl Resolved ===

impl Resolved {
    /// Sets `key` to `raw`, as if it came from `origin`.
    pub(crate) fn insert(&mut self, key: Key, raw: Raw, origin: Origin) {
        self.values.insert(key, (raw, origin));
    }

    /// A single value and its origin; `None` when unset. May be empty.
    pub(crate) fn one(&self, key: Key) -> Option<(&str, &Origin)> {
        match self.values.get(&key)? {
            (Raw::One(v), origin) => Some((v.as_str(), origin)),
            (Raw::Many(_), _) => None,
        }
    }

    /// A single text value that is set and not empty.
    pub(crate) fn text(&self, key: Key) -> Option<&str> {
        self.one(key).map(|(v, _)| v).filter(|v| !v.is_empty())
    }

    /// A list's entries and origin; empty when unset.
    pub(crate) fn list(&self, key: Key) -> (&[String], Option<&Origin>) {
        match self.values.get(&key) {
            Some((Raw::Many(v), origin)) => (v.as_slice(), Some(origin)),
            _ => (&[], None),
        }
    }

    /// The origin of `key`, or [`Origin::Default`] when unset.
    pub(crate) fn origin(&self, key: Key) -> Origin {
        self.values
            .get(&key)
            .map_or(Origin::Default, |(_, origin)| origin.clone())
    }

    /// A boolean; `false` when unset. Takes Go's `strconv.ParseBool` spellings, as K3s does.
    pub(crate) fn bool(&self, key: Key, errors: &mut Vec<ConfigError>) -> bool {
        let Some((value, _)) = self.one(key) else {
            return false;
        };
        match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => {
                errors.push(ConfigError::InvalidBool {
                    key: key.name(),
                    value: value.to_owned(),
                });
                false
            }
        }
    }

    /// A port number; `default` when unset or invalid (the error is recorded).
    pub(crate) fn port(&self, key: Key, default: u16, errors: &mut Vec<ConfigError>) -> u16 {
        match self.one(key) {
            None => default,
            Some((value, _)) => match value.trim().parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => {
                    errors.push(ConfigError::InvalidPort {
                        key: key.name(),
                        value: value.to_owned(),
                    });
                    default
                }
            },
        }
    }

    /// A cap on connections: 1 to 1000000; `default` when unset or invalid (the error is
    /// recorded).
    pub(crate) fn connection_limit(
        &self,
        key: Key,
        default: usize,
        errors: &mut Vec<ConfigError>,
    ) -> usize {
        let Some((value, _)) = self.one(key) else {
            return default;
        };
        match value.trim().parse::<usize>() {
            Ok(limit) if (1..=1_000_000).contains(&limit) => limit,
            _ => {
                errors.push(ConfigError::InvalidConnectionLimit {
                    key: key.name(),
                    value: value.to_owned(),
                    example: default,
                });
                default
            }
        }
    }
}

/// Applies precedence to every setting of `role`, and refuses server settings given to an agent.
///
/// Files were already checked key by key when they were loaded.
pub(crate) fn resolve(
    role: Role,
    flags: &FlagValues,
    files: &FileValues,
    env: &dyn Env,
) -> (Resolved, Vec<ConfigError>, Vec<Warning>) {
    let mut resolved = Resolved::default();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    for key in Key::ALL {
        let setting = key.setting();
        let env_value = env_value(key, env, &mut warnings);
        if key == Key::Config {
            // Located before the files are read: see `file::locate`.
            continue;
        }
        if !role.takes(key) {
            if !flags.get(key).is_empty() {
                errors.push(not_for_agent(key, Origin::Flag));
            }
            if let Some((_, var)) = env_value {
                errors.push(not_for_agent(key, Origin::Env(var)));
            }
            continue;
        }
        let file = files.get(key);
        let value = if setting.kind == Kind::List {
            let mut items = Vec::new();
            let mut origin = None;
            if let Some((value, path)) = file {
                items.extend(split(key, value.clone().into_items()));
                origin = Some(Origin::File(path.clone()));
            }
            let from_flags = split(key, flags.get(key).to_vec());
            if !from_flags.is_empty() {
                items.extend(from_flags);
                origin = Some(Origin::Flag);
            }
            match (origin, env_value) {
                (Some(origin), _) if !items.is_empty() => Some((Raw::Many(items), origin)),
                (_, Some((value, var))) => {
                    Some((Raw::Many(split(key, vec![value])), Origin::Env(var)))
                }
                _ => None,
            }
        } else if let Some(last) = flags.get(key).last() {
            Some((Raw::One(last.clone()), Origin::Flag))
        } else if let Some((value, path)) = file {
            match value {
                FileValue::One(v) => Some((Raw::One(v.clone()), Origin::File(path.clone()))),
                FileValue::Many(v) if v.len() == 1 => {
                    Some((Raw::One(v[0].clone()), Origin::File(path.clone())))
                }
                FileValue::Many(v) => {
                    errors.push(ConfigError::NotOneValue {
                        key: key.name(),
                        origin: Origin::File(path.clone()),
                        count: v.len(),
                    });
                    None
                }
            }
        } else {
            env_value.map(|(value, var)| (Raw::One(value), Origin::Env(var)))
        };
        if let Some(value) = value {
            resolved.values.insert(key, value);
        }
    }
    (resolved, errors, warnings)
}

/// The error for a server setting given to an agent.
pub(crate) fn not_for_agent(key: Key, origin: Origin) -> ConfigError {
    if key.is_flannel_option() {
        ConfigError::FlannelOptionOnAgent {
            key: key.name(),
            origin,
        }
    } else {
        ConfigError::ServerSettingOnAgent {
            key: key.name(),
            origin,
        }
    }
}

/// The first non-empty environment variable of `key`, warning when a `WEFT_*` variable and its
/// K3s twin disagree.
fn env_value(
    key: Key,
    env: &dyn Env,
    warnings: &mut Vec<Warning>,
) -> Option<(String, &'static str)> {
    let vars = key.setting().env;
    let set: Vec<(String, &'static str)> = vars
        .iter()
        .filter_map(|var| Some((env.var(var).filter(|v| !v.is_empty())?, *var)))
        .collect();
    if let [(a, weft), (b, k3s), ..] = set.as_slice()
        && a != b
    {
        warnings.push(Warning::EnvConflict { weft, k3s });
    }
    set.into_iter().next()
}

/// Splits list values on commas, trims them and drops empty entries.
///
/// `kube-controller-manager-arg` entries are not split: a flag value such as
/// `controllers=*,-route` holds commas of its own.
fn split(key: Key, values: Vec<String>) -> Vec<String> {
    let keep_commas = key == Key::KubeControllerManagerArg;
    values
        .iter()
        .flat_map(|v| {
            if keep_commas {
                vec![v.as_str()]
            } else {
                v.split(',').collect()
            }
        })
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}
