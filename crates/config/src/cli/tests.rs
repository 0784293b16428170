//! Tests of the generated flags: `--help` shows every flag with its default and environment
//! variables, bool and list forms parse as in K3s, and the agent hides server settings.

use clap::{Args, Command};

use crate::test_support::{agent_flags, server_flags};
use crate::{AgentFlags, Key, Role, ServerFlags};

fn help(cmd: Command) -> String {
    let mut cmd = cmd;
    cmd.render_long_help().to_string()
}

#[test]
fn help_shows_every_flag_with_default_and_env() {
    let text = help(ServerFlags::augment_args(Command::new("validate")));
    for key in Key::ALL {
        let s = key.setting();
        assert!(
            text.contains(&format!("--{}", s.name)),
            "--{} missing from\n{text}",
            s.name
        );
        let tail = format!("[default: {}] [env: {}]", s.default, s.env.join(", "));
        assert!(text.contains(&tail), "{tail} missing from\n{text}");
    }
    assert!(text.contains("-c, --config <FILE>"));
    assert!(text.contains("[env: WEFT_NODE_NAME, K3S_NODE_NAME]"));
}

#[test]
fn agent_help_hides_server_settings() {
    let text = help(AgentFlags::augment_args(Command::new("validate")));
    for key in Key::ALL {
        let shown = text.contains(&format!("--{} <", key.name()))
            || text.contains(&format!("--{}[=", key.name()));
        assert_eq!(shown, Role::Agent.takes(key), "--{} in\n{text}", key.name());
    }
}

#[test]
fn flag_forms() {
    let flags = server_flags(&[
        "-i",
        "10.0.0.1",
        "--node-ip=10.0.0.2,fd00::2",
        "--disable-agent",
        "--flannel-ipv6-masq=false",
        "-t",
        "a",
        "--token=b",
        "-d",
        "/data",
        "--kube-controller-arg=x=1",
    ]);
    assert_eq!(flags.get(Key::NodeIp), ["10.0.0.1", "10.0.0.2,fd00::2"]);
    assert_eq!(flags.get(Key::DisableAgent), ["true"]);
    assert_eq!(flags.get(Key::FlannelIpv6Masq), ["false"]);
    assert_eq!(flags.get(Key::Token).last().map(String::as_str), Some("b"));
    assert_eq!(flags.get(Key::DataDir), ["/data"]);
    assert_eq!(flags.get(Key::KubeControllerManagerArg), ["x=1"]);
    assert_eq!(flags.get(Key::ClusterCidr), Vec::<String>::new());
}

#[test]
fn agent_accepts_hidden_server_flags_for_a_clear_error() {
    let flags = agent_flags(&["--flannel-backend=vxlan", "--cluster-cidr", "10.42.0.0/16"]);
    assert_eq!(flags.get(Key::FlannelBackend), ["vxlan"]);
    assert_eq!(flags.get(Key::ClusterCidr), ["10.42.0.0/16"]);
}

#[test]
fn unknown_flags_are_refused_by_clap() {
    let err = ServerFlags::augment_args(Command::new("validate"))
        .try_get_matches_from(["validate", "--clustr-cidr=10.42.0.0/16"])
        .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
}
