//! Tests of the settings table.

use crate::{Key, Kind, Role, Scope};

#[test]
fn table_rows_follow_key_order() {
    for (i, key) in Key::ALL.into_iter().enumerate() {
        assert_eq!(key.setting().key, key, "row {i} of the table");
        assert_eq!(key as usize, i);
    }
}

#[test]
fn every_setting_has_a_weft_env_var_help_and_default() {
    for key in Key::ALL {
        let s = key.setting();
        let weft = match key {
            Key::Config => "WEFT_CONFIG_FILE".to_owned(),
            _ => format!("WEFT_{}", s.name.to_uppercase().replace('-', "_")),
        };
        assert_eq!(s.env.first(), Some(&weft.as_str()), "{key}");
        assert!(!s.help.is_empty() && !s.default.is_empty(), "{key}");
    }
}

#[test]
fn k3s_env_names() {
    let check = |key: Key, k3s: &str| assert_eq!(key.setting().env.get(1), Some(&k3s), "{key}");
    check(Key::NodeName, "K3S_NODE_NAME");
    check(Key::Token, "K3S_TOKEN");
    check(Key::TokenFile, "K3S_TOKEN_FILE");
    check(Key::Server, "K3S_URL");
    check(Key::DataDir, "K3S_DATA_DIR");
    check(Key::Config, "K3S_CONFIG_FILE");
    check(Key::DatastoreEndpoint, "K3S_DATASTORE_ENDPOINT");
    check(Key::DatastoreCafile, "K3S_DATASTORE_CAFILE");
    check(Key::DatastoreCertfile, "K3S_DATASTORE_CERTFILE");
    check(Key::DatastoreKeyfile, "K3S_DATASTORE_KEYFILE");
}

#[test]
fn lookup_by_name_alias_and_short() {
    let cases: &[(&str, Option<Key>)] = &[
        ("cluster-cidr", Some(Key::ClusterCidr)),
        ("kube-controller-arg", Some(Key::KubeControllerManagerArg)),
        ("t", Some(Key::Token)),
        ("i", Some(Key::NodeIp)),
        ("c", Some(Key::Config)),
        ("cluster_cidr", None),
        ("", None),
        ("x", None),
    ];
    for (name, want) in cases {
        assert_eq!(Key::lookup(name), *want, "{name:?}");
    }
}

#[test]
fn closest_key() {
    let cases: &[(&str, &str)] = &[
        ("clustr-cidr", "cluster-cidr"),
        ("flanel-backend", "flannel-backend"),
        ("node_ip", "node-ip"),
        ("nodename", "node-name"),
        ("tls-sna", "tls-san"),
        ("kubelet_arg", "kubelet-arg"),
    ];
    for (key, want) in cases {
        assert_eq!(Key::closest(key), *want, "{key}");
    }
}

#[test]
fn scopes() {
    assert!(Role::Agent.takes(Key::NodeIp));
    assert!(!Role::Agent.takes(Key::FlannelBackend));
    assert!(Role::Server.takes(Key::FlannelBackend));
    let flannel: Vec<Key> = Key::ALL
        .into_iter()
        .filter(|k| k.is_flannel_option())
        .collect();
    assert_eq!(
        flannel,
        [
            Key::FlannelBackend,
            Key::FlannelIpv6Masq,
            Key::FlannelExternalIp,
            Key::FlannelConf
        ]
    );
    for key in flannel {
        assert_eq!(key.setting().scope, Scope::Server);
    }
    assert_eq!(Key::NodeIp.setting().kind, Kind::List);
}

#[test]
fn daemon_settings_rows() {
    let rows: &[(Key, Kind, &str, &str)] = &[
        (
            Key::SubnetFile,
            Kind::Text,
            "/run/flannel/subnet.env",
            "WEFT_SUBNET_FILE",
        ),
        (
            Key::CniConfDir,
            Kind::Text,
            "<data-dir>/agent/etc/cni/net.d",
            "WEFT_CNI_CONF_DIR",
        ),
        (Key::MasqMode, Kind::Text, "nftables", "WEFT_MASQ_MODE"),
        (
            Key::WireguardImplementation,
            Kind::Text,
            "auto",
            "WEFT_WIREGUARD_IMPLEMENTATION",
        ),
        (Key::LogFormat, Kind::Text, "text", "WEFT_LOG_FORMAT"),
        (
            Key::ReconcileInterval,
            Kind::Number,
            "10",
            "WEFT_RECONCILE_INTERVAL",
        ),
        (
            Key::MetricsAddress,
            Kind::Text,
            "127.0.0.1:9346",
            "WEFT_METRICS_ADDRESS",
        ),
    ];
    for (key, kind, default, env) in rows {
        let s = key.setting();
        assert_eq!(s.scope, Scope::Both, "{key}");
        assert_eq!(s.kind, *kind, "{key}");
        assert_eq!(s.default, *default, "{key}");
        assert_eq!(s.env, [*env], "{key}");
        assert_eq!(Key::lookup(s.name), Some(*key));
    }
    assert_eq!(crate::DEFAULT_SUBNET_FILE, "/run/flannel/subnet.env");
    assert_eq!(
        crate::DEFAULT_METRICS_ADDRESS,
        format!("127.0.0.1:{}", crate::DEFAULT_METRICS_PORT)
    );
    assert_eq!(
        crate::DEFAULT_RECONCILE_INTERVAL_SECS.to_string(),
        Key::ReconcileInterval.setting().default
    );
    assert_eq!(Key::closest("masq_mode"), "masq-mode");
    assert_eq!(Key::closest("subnet-env"), "subnet-file");
}

#[test]
fn datastore_rows_are_server_only_text_together() {
    let keys = [
        Key::DatastoreEndpoint,
        Key::DatastoreCafile,
        Key::DatastoreCertfile,
        Key::DatastoreKeyfile,
    ];
    let at = Key::ALL
        .iter()
        .position(|k| *k == Key::DatastoreEndpoint)
        .unwrap();
    assert_eq!(Key::ALL[at..at + keys.len()], keys);
    for key in keys {
        let s = key.setting();
        assert_eq!(
            (s.scope, s.kind, s.secret),
            (Scope::Server, Kind::Text, false),
            "{key}"
        );
        assert!(!Role::Agent.takes(key), "{key}");
    }
    assert_eq!(Key::DatastoreCafile.setting().default, "the system's CAs");
}

#[test]
fn k3s_settings_weft_skips_are_no_weft_settings_and_appear_once() {
    use crate::setting::{K3S_IGNORED, K3S_UNSUPPORTED};
    let names: Vec<&str> = K3S_IGNORED
        .iter()
        .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()))
        .chain(K3S_UNSUPPORTED.iter().map(|(name, _)| *name))
        .collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(Key::lookup(name), None, "{name} is a weft setting");
        assert!(!names[i + 1..].contains(name), "{name} appears twice");
    }
}

#[test]
fn k3s_keys_by_role() {
    use crate::setting::{K3sKey, k3s_key};
    let cases: &[(&str, Role, Option<K3sKey>)] = &[
        ("tls-san", Role::Server, Some(K3sKey::Ignored("tls-san"))),
        ("tls-san", Role::Agent, Some(K3sKey::ServerOnly("tls-san"))),
        (
            "node-label",
            Role::Agent,
            Some(K3sKey::Ignored("node-label")),
        ),
        ("l", Role::Agent, Some(K3sKey::Ignored("log"))),
        (
            "kube-cloud-controller-arg",
            Role::Server,
            Some(K3sKey::Ignored("kube-cloud-controller-manager-arg")),
        ),
        (
            "disable-apiserver-lb",
            Role::Server,
            Some(K3sKey::Ignored("disable-apiserver-lb")),
        ),
        ("cluster-cidr", Role::Server, None),
        ("flannel-ip-masq-disable-random-fully", Role::Server, None),
        ("tls_san", Role::Server, None),
    ];
    for (key, role, want) in cases {
        assert_eq!(k3s_key(key, *role), *want, "{key} {role:?}");
    }
    assert!(matches!(
        k3s_key("vpn-auth", Role::Agent),
        Some(K3sKey::Unsupported("vpn-auth", _))
    ));
}
