//! Command-line flags for `weft-server` and `weft-agent`, generated from the settings table.
//!
//! [`ServerFlags`] and [`AgentFlags`] implement clap's [`clap::Args`], so a binary flattens them
//! into a subcommand. clap only collects what was typed: it applies no defaults and reads no
//! environment, because a config file must beat the environment and clap cannot know that.
//! `--help` still shows each flag's default and environment variables, from the table.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use crate::{FlagValues, Key, Kind, Role};

#[cfg(test)]
mod tests;

/// The flags of `weft-server`: every setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFlags(pub FlagValues);

/// The flags of `weft-agent`: the node settings. Server settings are accepted but hidden, so
/// that loading can refuse them with a clear error instead of clap's "unexpected argument".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFlags(pub FlagValues);

/// The clap arguments of every setting, for `role`.
pub fn args(role: Role) -> Vec<Arg> {
    Key::ALL.into_iter().map(|key| arg(role, key)).collect()
}

/// Collects the flags that were given, in order.
pub fn flag_values(matches: &ArgMatches) -> FlagValues {
    let mut values = FlagValues::new();
    for key in Key::ALL {
        if let Ok(Some(given)) = matches.try_get_many::<String>(key.name()) {
            for value in given {
                values.push(key, value.clone());
            }
        }
    }
    values
}

fn arg(role: Role, key: Key) -> Arg {
    let s = key.setting();
    let help = format!(
        "{} [default: {}] [env: {}]",
        s.help,
        s.default,
        s.env.join(", ")
    );
    let mut arg = Arg::new(s.name)
        .long(s.name)
        .value_name(s.value_name)
        .value_parser(clap::value_parser!(String))
        .help(help)
        .aliases(s.aliases.iter().copied())
        .hide(!role.takes(key));
    if let Some(short) = s.short {
        arg = arg.short(short);
    }
    match s.kind {
        Kind::List => arg.action(ArgAction::Append),
        // `--flag` means true; `--flag=false` turns it off, as in K3s.
        Kind::Bool => arg
            .action(ArgAction::Set)
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true"),
        Kind::Text | Kind::Number => arg.action(ArgAction::Set),
    }
}

fn augment(role: Role, cmd: Command) -> Command {
    // A repeated single-value flag: the last one counts, as in K3s.
    cmd.args_override_self(true).args(args(role))
}

// === impl ServerFlags ===

impl Args for ServerFlags {
    fn augment_args(cmd: Command) -> Command {
        augment(Role::Server, cmd)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        augment(Role::Server, cmd)
    }
}

impl FromArgMatches for ServerFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<ServerFlags, clap::Error> {
        Ok(ServerFlags(flag_values(matches)))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = ServerFlags::from_arg_matches(matches)?;
        Ok(())
    }
}

// === impl AgentFlags ===

impl Args for AgentFlags {
    fn augment_args(cmd: Command) -> Command {
        augment(Role::Agent, cmd)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        augment(Role::Agent, cmd)
    }
}

impl FromArgMatches for AgentFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<AgentFlags, clap::Error> {
        Ok(AgentFlags(flag_values(matches)))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = AgentFlags::from_arg_matches(matches)?;
        Ok(())
    }
}
