//! Helpers shared by the unit tests: a fake host, flags parsed by the real clap arguments, and
//! one-line loaders that return messages as text.

use std::net::IpAddr;

use clap::{Args, Command, FromArgMatches};

use crate::fake::{FakeHost, FakeSystem, MapEnv, MapFiles};
use crate::{AgentConfig, AgentFlags, FlagValues, Loaded, ServerConfig, ServerFlags};

/// A fake system with `files` and `env`, and the default fake host (`node1`, eth0 192.168.1.10).
pub(crate) fn system(files: &[(&str, &str)], env: &[(&str, &str)]) -> FakeSystem {
    FakeSystem {
        env: MapEnv::new(env.iter().copied()),
        files: MapFiles::new(files.iter().copied()),
        host: FakeHost::default(),
    }
}

/// The same, on a host with `eth0` holding `addrs`.
pub(crate) fn system_with_ips(
    files: &[(&str, &str)],
    env: &[(&str, &str)],
    addrs: &[&str],
) -> FakeSystem {
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    FakeSystem {
        host: FakeHost::with_eth0("node1", &addrs),
        ..system(files, env)
    }
}

/// Parses `weft-server validate <args>` with the real flags.
pub(crate) fn server_flags(args: &[&str]) -> FlagValues {
    let cmd = ServerFlags::augment_args(Command::new("validate"));
    let matches = cmd
        .try_get_matches_from(std::iter::once("validate").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("flags {args:?} do not parse: {e}"));
    ServerFlags::from_arg_matches(&matches).unwrap().0
}

/// Parses `weft-agent validate <args>` with the real flags.
pub(crate) fn agent_flags(args: &[&str]) -> FlagValues {
    let cmd = AgentFlags::augment_args(Command::new("validate"));
    let matches = cmd
        .try_get_matches_from(std::iter::once("validate").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("flags {args:?} do not parse: {e}"));
    AgentFlags::from_arg_matches(&matches).unwrap().0
}

/// Loads a server.
pub(crate) fn server(args: &[&str], sys: &FakeSystem) -> Loaded<ServerConfig> {
    crate::load_server(&server_flags(args), sys.system())
}

/// Loads an agent.
pub(crate) fn agent(args: &[&str], sys: &FakeSystem) -> Loaded<AgentConfig> {
    crate::load_agent(&agent_flags(args), sys.system())
}

/// The error messages of a load (empty when it succeeded).
pub(crate) fn errors<T>(loaded: &Loaded<T>) -> Vec<String> {
    match &loaded.result {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The warning messages of a load.
pub(crate) fn warnings<T>(loaded: &Loaded<T>) -> Vec<String> {
    loaded.warnings.iter().map(ToString::to_string).collect()
}

/// The config of a load that must have succeeded.
pub(crate) fn ok<T>(loaded: Loaded<T>) -> T {
    match loaded.result {
        Ok(config) => config,
        Err(errors) => panic!(
            "expected a valid config, got: {:#?}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        ),
    }
}
