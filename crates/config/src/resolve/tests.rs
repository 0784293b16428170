//! Precedence tests: flag > config file > environment > default, list concatenation, commas,
//! and server settings refused on an agent. Everything goes through the fake sources.

use crate::fake::{MapEnv, MapFiles};
use crate::file::{self, ConfigLocation};
use crate::resolve::{FlagValues, Raw, Resolved, resolve};
use crate::test_support::{agent_flags, server_flags};
use crate::{Key, Origin, Role};

const CONFIG: &str = "/etc/weft/config.yaml";

/// Resolves with a main config file (and optional drop-in) and environment.
fn run(
    role: Role,
    flags: &FlagValues,
    files: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (Resolved, Vec<String>, Vec<String>) {
    let location = ConfigLocation {
        path: CONFIG.into(),
        named_by: None,
    };
    let (values, mut errors, _) =
        file::load(&location, role, &MapFiles::new(files.iter().copied()));
    let (resolved, errs, warnings) =
        resolve(role, flags, &values, &MapEnv::new(env.iter().copied()));
    errors.extend(errs);
    (
        resolved,
        errors.iter().map(ToString::to_string).collect(),
        warnings.iter().map(ToString::to_string).collect(),
    )
}

fn file(path: &str) -> Origin {
    Origin::File(path.into())
}

#[test]
fn single_value_precedence() {
    type Case<'a> = (
        &'a [&'a str],
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<(&'a str, Origin)>,
    );
    let cases: &[Case<'_>] = &[
        // Nothing anywhere: unset, the typed layer applies the default.
        (&[], "", &[], None),
        // Environment alone.
        (
            &[],
            "",
            &[("WEFT_CLUSTER_DOMAIN", "env.local")],
            Some(("env.local", Origin::Env("WEFT_CLUSTER_DOMAIN"))),
        ),
        // File beats environment.
        (
            &[],
            "cluster-domain: file.local\n",
            &[("WEFT_CLUSTER_DOMAIN", "env.local")],
            Some(("file.local", file(CONFIG))),
        ),
        // Flag beats file and environment.
        (
            &["--cluster-domain", "flag.local"],
            "cluster-domain: file.local\n",
            &[("WEFT_CLUSTER_DOMAIN", "env.local")],
            Some(("flag.local", Origin::Flag)),
        ),
        // A repeated flag: the last counts.
        (
            &["--cluster-domain=a.local", "--cluster-domain=b.local"],
            "",
            &[],
            Some(("b.local", Origin::Flag)),
        ),
        // An empty environment variable is unset.
        (&[], "", &[("WEFT_CLUSTER_DOMAIN", "")], None),
    ];
    for (flags, yaml, env, want) in cases {
        let files: Vec<(&str, &str)> = if yaml.is_empty() {
            vec![]
        } else {
            vec![(CONFIG, *yaml)]
        };
        let (r, errors, _) = run(Role::Server, &server_flags(flags), &files, env);
        assert_eq!(errors, Vec::<String>::new());
        let got = r.one(Key::ClusterDomain).map(|(v, o)| (v, o.clone()));
        assert_eq!(got, want.clone(), "{flags:?} {yaml:?} {env:?}");
    }
}

#[test]
fn k3s_env_names_and_weft_first() {
    let (r, _, warnings) = run(
        Role::Agent,
        &FlagValues::new(),
        &[],
        &[("K3S_NODE_NAME", "k3s-name"), ("K3S_URL", "https://s:9345")],
    );
    assert_eq!(
        r.one(Key::NodeName).map(|(v, o)| (v, o.clone())),
        Some(("k3s-name", Origin::Env("K3S_NODE_NAME")))
    );
    assert_eq!(r.text(Key::Server), Some("https://s:9345"));
    assert!(warnings.is_empty());

    let (r, _, warnings) = run(
        Role::Agent,
        &FlagValues::new(),
        &[],
        &[
            ("K3S_TOKEN", "a"),
            ("WEFT_TOKEN", "b"),
            ("K3S_DATA_DIR", "/k"),
            ("WEFT_DATA_DIR", "/k"),
        ],
    );
    assert_eq!(r.text(Key::Token), Some("b"));
    assert_eq!(r.text(Key::DataDir), Some("/k"));
    assert_eq!(
        warnings,
        ["WEFT_TOKEN and K3S_TOKEN are both set, to different values: using WEFT_TOKEN; unset one"]
    );
}

#[test]
fn lists_concatenate_file_then_flags_and_split_commas() {
    let (r, errors, _) = run(
        Role::Server,
        &server_flags(&["--node-ip", "10.0.0.3,10.0.0.4", "-i", " 10.0.0.5 ,"]),
        &[
            (CONFIG, "node-ip: [10.0.0.1]\n"),
            ("/etc/weft/config.yaml.d/a.yaml", "node-ip+: 10.0.0.2\n"),
        ],
        &[("WEFT_NODE_IP", "10.9.9.9")],
    );
    assert_eq!(errors, Vec::<String>::new());
    let (items, origin) = r.list(Key::NodeIp);
    assert_eq!(
        items,
        ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
    );
    assert_eq!(origin, Some(&Origin::Flag));
}

#[test]
fn lists_from_file_alone_or_env_alone() {
    let (r, _, _) = run(
        Role::Server,
        &FlagValues::new(),
        &[(CONFIG, "cluster-cidr: 10.42.0.0/16,fd00:42::/56\n")],
        &[("WEFT_CLUSTER_CIDR", "10.9.0.0/16")],
    );
    assert_eq!(
        r.list(Key::ClusterCidr),
        (
            &["10.42.0.0/16".to_owned(), "fd00:42::/56".to_owned()][..],
            Some(&file(CONFIG))
        )
    );
    let (r, _, _) = run(
        Role::Server,
        &FlagValues::new(),
        &[],
        &[("WEFT_CLUSTER_CIDR", "10.9.0.0/16, fd00:9::/56")],
    );
    assert_eq!(
        r.list(Key::ClusterCidr),
        (
            &["10.9.0.0/16".to_owned(), "fd00:9::/56".to_owned()][..],
            Some(&Origin::Env("WEFT_CLUSTER_CIDR"))
        )
    );
}

#[test]
fn controller_manager_args_keep_their_commas() {
    let (r, _, _) = run(
        Role::Server,
        &server_flags(&[
            "--kube-controller-manager-arg=controllers=*,-route",
            "--kube-controller-arg",
            "node-cidr-mask-size-ipv4=25",
        ]),
        &[],
        &[],
    );
    assert_eq!(
        r.list(Key::KubeControllerManagerArg).0,
        ["controllers=*,-route", "node-cidr-mask-size-ipv4=25"]
    );
}

#[test]
fn single_value_given_a_list() {
    let (r, errors, _) = run(
        Role::Server,
        &FlagValues::new(),
        &[(
            CONFIG,
            "flannel-backend: [vxlan, host-gw]\ncluster-domain: [one.local]\n",
        )],
        &[],
    );
    assert_eq!(
        errors,
        ["flannel-backend takes one value, but /etc/weft/config.yaml gives 2: keep one"]
    );
    assert_eq!(r.text(Key::ClusterDomain), Some("one.local"));
    let (_, errors, _) = run(
        Role::Server,
        &FlagValues::new(),
        &[
            (CONFIG, "flannel-backend: vxlan\n"),
            (
                "/etc/weft/config.yaml.d/a.yaml",
                "flannel-backend+: host-gw\n",
            ),
        ],
        &[],
    );
    assert_eq!(
        errors,
        ["flannel-backend takes one value, but /etc/weft/config.yaml.d/a.yaml gives 2: keep one"]
    );
}

#[test]
fn bools_take_go_spellings() {
    let flags = server_flags(&[
        "--disable-agent",
        "--flannel-ipv6-masq=false",
        "--with-node-id=1",
    ]);
    let (r, _, _) = run(
        Role::Server,
        &flags,
        &[(CONFIG, "disable-network-policy: yes\n")],
        &[("WEFT_FLANNEL_EXTERNAL_IP", "True")],
    );
    let mut errors = Vec::new();
    assert!(r.bool(Key::DisableAgent, &mut errors));
    assert!(!r.bool(Key::FlannelIpv6Masq, &mut errors));
    assert!(r.bool(Key::WithNodeId, &mut errors));
    assert!(r.bool(Key::FlannelExternalIp, &mut errors));
    assert!(!r.bool(Key::DisableNetworkPolicy, &mut errors));
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["invalid disable-network-policy \"yes\": use true or false"]
    );
}

#[test]
fn ports() {
    let (r, _, _) = run(
        Role::Server,
        &server_flags(&["--supervisor-port=0", "--kubelet-port=10251"]),
        &[],
        &[("K3S_SUPERVISOR_PORT", "1")],
    );
    let mut errors = Vec::new();
    assert_eq!(r.port(Key::KubeletPort, 10250, &mut errors), 10251);
    assert_eq!(r.port(Key::SupervisorPort, 9345, &mut errors), 9345);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["invalid supervisor-port \"0\": use a port number from 1 to 65535"]
    );
    assert_eq!(Raw::One("x".into()), Raw::One("x".into()));
}

#[test]
fn connection_limits() {
    let (r, _, _) = run(
        Role::Server,
        &server_flags(&["--max-connections=0"]),
        &[],
        &[("WEFT_MAX_CONNECTIONS_PER_ADDRESS", "50")],
    );
    let mut errors = Vec::new();
    assert_eq!(
        r.connection_limit(Key::MaxConnections, 20_000, &mut errors),
        20_000
    );
    assert_eq!(
        r.connection_limit(Key::MaxConnectionsPerAddress, 1_000, &mut errors),
        50
    );
    let (r, _, _) = run(
        Role::Server,
        &server_flags(&["--max-connections-per-address=many"]),
        &[],
        &[],
    );
    assert_eq!(
        r.connection_limit(Key::MaxConnectionsPerAddress, 1_000, &mut errors),
        1_000
    );
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "invalid max-connections \"0\": use a whole number of connections from 1 to 1000000, e.g. 20000",
            "invalid max-connections-per-address \"many\": use a whole number of connections from 1 to 1000000, e.g. 1000",
        ]
    );
}

#[test]
fn server_settings_on_an_agent_from_flags_and_env() {
    let (_, errors, _) = run(
        Role::Agent,
        &agent_flags(&["--flannel-ipv6-masq", "--cluster-cidr=10.42.0.0/16"]),
        &[],
        &[
            ("WEFT_FLANNEL_BACKEND", "vxlan"),
            ("K3S_SUPERVISOR_PORT", "9345"),
        ],
    );
    assert_eq!(
        errors,
        [
            "supervisor-port is a server setting and has no effect on an agent; unset K3S_SUPERVISOR_PORT",
            "cluster-cidr is a server setting and has no effect on an agent; remove the --cluster-cidr flag",
            "flannel-backend can't be set on an agent: flannel options are set on servers only, because every node takes them from the servers; unset WEFT_FLANNEL_BACKEND",
            "flannel-ipv6-masq can't be set on an agent: flannel options are set on servers only, because every node takes them from the servers; remove the --flannel-ipv6-masq flag",
        ]
    );
}
