//! Tests of config-file parsing, location and drop-in merging.

use std::path::{Path, PathBuf};

use super::{ConfigLocation, Entry, FileValue, FileValues, drop_in_dir, load, locate, parse};
use crate::fake::{MapEnv, MapFiles};
use crate::{Key, Role};

fn entry(key: &str, append: bool, value: FileValue) -> Entry {
    Entry {
        key: key.to_owned(),
        append,
        value,
    }
}

fn one(v: &str) -> FileValue {
    FileValue::One(v.to_owned())
}

fn many(v: &[&str]) -> FileValue {
    FileValue::Many(v.iter().map(|s| (*s).to_owned()).collect())
}

fn check_parse(path: &str, text: &str, want: &[Entry], want_errors: &[&str]) {
    let (entries, errors) = parse(Path::new(path), text);
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(entries, want, "{text}");
    assert_eq!(errors, want_errors, "{text}");
}

#[test]
fn yaml_values() {
    check_parse(
        "/c.yaml",
        "cluster-cidr: 10.42.0.0/16\nnode-ip+: [a, b]\nflannel-ipv6-masq: true\nsupervisor-port: 9345\ntoken:\nnode-name: !tag n\n",
        &[
            entry("cluster-cidr", false, one("10.42.0.0/16")),
            entry("node-ip", true, many(&["a", "b"])),
            entry("flannel-ipv6-masq", false, one("true")),
            entry("supervisor-port", false, one("9345")),
            entry("token", false, one("")),
            entry("node-name", false, one("n")),
        ],
        &[],
    );
    check_parse("/c.yaml", "", &[], &[]);
    check_parse("/c.yaml", "# only a comment\n", &[], &[]);
}

#[test]
fn yaml_errors() {
    check_parse(
        "/c.yaml",
        "- a\n- b\n",
        &[],
        &[
            "config file /c.yaml must be a map of setting names to values, e.g. `cluster-cidr: 10.42.0.0/16`",
        ],
    );
    check_parse(
        "/c.yaml",
        "cluster-dns: {a: b}\nnode-ip: [[a]]\n1: x\ntoken: t\n",
        &[entry("token", false, one("t"))],
        &[
            "cluster-dns in /c.yaml must be a plain value or a list of plain values, not a map or a nested list",
            "node-ip in /c.yaml must be a plain value or a list of plain values, not a map or a nested list",
            "config file /c.yaml has the key 1, which is not a setting name: keys are names such as cluster-cidr",
        ],
    );
    let (_, errors) = parse(Path::new("/c.yaml"), "a: [\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("config file /c.yaml is not valid YAML: "),
        "{}",
        errors[0]
    );
    let (_, errors) = parse(Path::new("/c.yaml"), "a: 1\na: 2\n");
    assert!(
        errors[0].to_string().contains("is not valid YAML"),
        "{}",
        errors[0]
    );
}

#[test]
fn toml_values_and_errors() {
    check_parse(
        "/c.TOML",
        "cluster-cidr = \"10.42.0.0/16\"\n\"node-ip+\" = [\"a\", \"b\"]\ndisable-agent = true\nkubelet-port = 10250\n",
        &[
            entry("cluster-cidr", false, one("10.42.0.0/16")),
            entry("node-ip", true, many(&["a", "b"])),
            entry("disable-agent", false, one("true")),
            entry("kubelet-port", false, one("10250")),
        ],
        &[],
    );
    check_parse(
        "/c.toml",
        "[server]\nx = 1\n",
        &[],
        &[
            "server in /c.toml must be a plain value or a list of plain values, not a map or a nested list",
        ],
    );
    let (_, errors) = parse(Path::new("/c.toml"), "a = \n");
    assert!(
        errors[0]
            .to_string()
            .starts_with("config file /c.toml is not valid TOML: "),
        "{}",
        errors[0]
    );
}

#[test]
fn locate_prefers_env_over_flag() {
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
    );
    let cases: &[Case<'_>] = &[
        (&[], None, "/etc/weft/config.yaml", None),
        (&[], Some("/f.yaml"), "/f.yaml", Some("--config")),
        (
            &[("K3S_CONFIG_FILE", "/k.yaml")],
            Some("/f.yaml"),
            "/k.yaml",
            Some("K3S_CONFIG_FILE"),
        ),
        (
            &[
                ("K3S_CONFIG_FILE", "/k.yaml"),
                ("WEFT_CONFIG_FILE", "/w.yaml"),
            ],
            Some("/f.yaml"),
            "/w.yaml",
            Some("WEFT_CONFIG_FILE"),
        ),
        (
            &[("WEFT_CONFIG_FILE", "")],
            None,
            "/etc/weft/config.yaml",
            None,
        ),
    ];
    for (env, flag, path, named_by) in cases {
        let env = MapEnv::new(env.iter().copied());
        assert_eq!(
            locate(*flag, &env),
            ConfigLocation {
                path: PathBuf::from(path),
                named_by: *named_by
            },
            "{flag:?}"
        );
    }
}

#[test]
fn drop_in_dir_appends_dot_d() {
    assert_eq!(
        drop_in_dir(Path::new("/etc/weft/config.yaml")),
        PathBuf::from("/etc/weft/config.yaml.d")
    );
}

fn load_files(
    named_by: Option<&'static str>,
    role: Role,
    files: &[(&str, &str)],
) -> (FileValues, Vec<String>) {
    let location = ConfigLocation {
        path: PathBuf::from("/etc/weft/config.yaml"),
        named_by,
    };
    let (values, errors, _) = load(&location, role, &MapFiles::new(files.iter().copied()));
    (values, errors.iter().map(ToString::to_string).collect())
}

fn value(values: &FileValues, key: Key) -> Option<(FileValue, String)> {
    values
        .get(key)
        .map(|(v, p)| (v.clone(), p.display().to_string()))
}

#[test]
fn drop_ins_replace_and_append_in_name_order() {
    let (values, errors) = load_files(
        None,
        Role::Server,
        &[
            (
                "/etc/weft/config.yaml",
                "cluster-cidr: 10.42.0.0/16\nnode-ip: 10.0.0.1\nflannel-backend: vxlan\n",
            ),
            (
                "/etc/weft/config.yaml.d/20-b.yml",
                "node-ip+: [fd00::1]\nflannel-backend: host-gw\n",
            ),
            (
                "/etc/weft/config.yaml.d/10-a.YAML",
                "cluster-cidr: 10.44.0.0/16\nnode-ip+: 10.0.0.2\n",
            ),
            (
                "/etc/weft/config.yaml.d/30-c.yaml.bak",
                "flannel-backend: none\n",
            ),
            (
                "/etc/weft/config.yaml.d/40-d.toml",
                "flannel-backend = \"none\"\n",
            ),
            (
                "/etc/weft/config.yaml.d/sub/50.yaml",
                "flannel-backend: none\n",
            ),
        ],
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        value(&values, Key::ClusterCidr),
        Some((
            one("10.44.0.0/16"),
            "/etc/weft/config.yaml.d/10-a.YAML".to_owned()
        ))
    );
    assert_eq!(
        value(&values, Key::NodeIp),
        Some((
            many(&["10.0.0.1", "10.0.0.2", "fd00::1"]),
            "/etc/weft/config.yaml.d/20-b.yml".to_owned()
        ))
    );
    assert_eq!(
        value(&values, Key::FlannelBackend),
        Some((
            one("host-gw"),
            "/etc/weft/config.yaml.d/20-b.yml".to_owned()
        ))
    );
}

#[test]
fn append_without_earlier_value_sets() {
    let (values, errors) = load_files(
        None,
        Role::Server,
        &[("/etc/weft/config.yaml", "node-ip+: 10.0.0.1\n")],
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        value(&values, Key::NodeIp),
        Some((one("10.0.0.1"), "/etc/weft/config.yaml".to_owned()))
    );
}

#[test]
fn drop_ins_without_main_file() {
    let (values, errors) = load_files(
        None,
        Role::Server,
        &[(
            "/etc/weft/config.yaml.d/a.yaml",
            "cluster-domain: x.local\n",
        )],
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        value(&values, Key::ClusterDomain),
        Some((one("x.local"), "/etc/weft/config.yaml.d/a.yaml".to_owned()))
    );
}

#[test]
fn missing_files() {
    let (values, errors) = load_files(None, Role::Server, &[]);
    assert_eq!((values, errors), (FileValues::default(), Vec::new()));
    let (_, errors) = load_files(Some("--config"), Role::Server, &[]);
    assert_eq!(
        errors,
        [
            "config file /etc/weft/config.yaml does not exist (named by --config): create it or name an existing file"
        ]
    );
    let (_, errors) = load_files(
        Some("K3S_CONFIG_FILE"),
        Role::Server,
        &[(
            "/etc/weft/config.yaml.d/a.yaml",
            "cluster-domain: x.local\n",
        )],
    );
    assert_eq!(
        errors,
        [
            "config file /etc/weft/config.yaml does not exist (named by K3S_CONFIG_FILE): create it or name an existing file"
        ]
    );
}

#[test]
fn key_errors_name_file_key_and_fix() {
    let (values, errors) = load_files(
        None,
        Role::Agent,
        &[
            (
                "/etc/weft/config.yaml",
                "clustr-cidr: 10.42.0.0/16\nconfig: /x.yaml\nflannel-backend: vxlan\nflannel-external-ip: true\ncluster-cidr: 10.42.0.0/16\nnode-name: n1\n",
            ),
            ("/etc/weft/config.yaml.d/10.yaml", "node-nam+: x\n"),
        ],
    );
    assert_eq!(
        errors,
        [
            "unknown key clustr-cidr in /etc/weft/config.yaml: the closest known key is cluster-cidr",
            "key config in /etc/weft/config.yaml has no effect: a config file can't name another one; use --config, WEFT_CONFIG_FILE or K3S_CONFIG_FILE",
            "flannel-backend can't be set on an agent: flannel options are set on servers only, because every node takes them from the servers; remove flannel-backend from /etc/weft/config.yaml",
            "flannel-external-ip can't be set on an agent: flannel options are set on servers only, because every node takes them from the servers; remove flannel-external-ip from /etc/weft/config.yaml",
            "cluster-cidr is a server setting and has no effect on an agent; remove cluster-cidr from /etc/weft/config.yaml",
            "unknown key node-nam in /etc/weft/config.yaml.d/10.yaml: the closest known key is node-name",
        ]
    );
    assert_eq!(
        value(&values, Key::NodeName),
        Some((one("n1"), "/etc/weft/config.yaml".to_owned()))
    );
    let (_, errors) = load_files(
        None,
        Role::Server,
        &[("/etc/weft/config.yaml", "clustr-cidr: x\n")],
    );
    assert_eq!(
        errors,
        ["unknown key clustr-cidr in /etc/weft/config.yaml: the closest known key is cluster-cidr"]
    );
}

#[test]
fn aliases_and_short_names_map_to_their_setting() {
    let (values, errors) = load_files(
        None,
        Role::Server,
        &[(
            "/etc/weft/config.yaml",
            "kube-controller-arg: a=1\nt: secret\n",
        )],
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        value(&values, Key::KubeControllerManagerArg).unwrap().0,
        one("a=1")
    );
    assert_eq!(value(&values, Key::Token).unwrap().0, one("secret"));
}

#[test]
fn toml_main_file() {
    let location = ConfigLocation {
        path: PathBuf::from("/w.toml"),
        named_by: Some("--config"),
    };
    let files = MapFiles::new([
        (
            "/w.toml",
            "cluster-cidr = [\"10.42.0.0/16\", \"fd00:42::/56\"]\n",
        ),
        ("/w.toml.d/a.yaml", "cluster-cidr+: [x]\n"),
    ]);
    let (values, errors, _) = load(&location, Role::Server, &files);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        values.get(Key::ClusterCidr).unwrap().0,
        many(&["10.42.0.0/16", "fd00:42::/56", "x"])
    );
}

/// Loads files at `/etc/weft/config.yaml` for `role`: errors and warnings as text.
fn load_messages(role: Role, files: &[(&str, &str)]) -> (FileValues, Vec<String>, Vec<String>) {
    let location = ConfigLocation {
        path: PathBuf::from("/etc/weft/config.yaml"),
        named_by: None,
    };
    let (values, errors, warnings) = load(&location, role, &MapFiles::new(files.iter().copied()));
    (
        values,
        errors.iter().map(ToString::to_string).collect(),
        warnings.iter().map(ToString::to_string).collect(),
    )
}

#[test]
fn k3s_server_keys_load_with_one_warning_each() {
    let (values, errors, warnings) = load_messages(
        Role::Server,
        &[
            (
                "/etc/weft/config.yaml",
                "tls-san: [k3s.example.com]\nwrite-kubeconfig-mode: \"0644\"\nnode-label+: [a=b]\nkubelet-arg: [max-pods=200]\ncluster-cidr: 10.42.0.0/16\no: /root/kubeconfig\n",
            ),
            (
                "/etc/weft/config.yaml.d/10.yaml",
                "tls-san+: [other.example.com]\ndisable: [traefik, servicelb]\ndisable-apiserver-lb: true\n",
            ),
        ],
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        warnings,
        [
            "ignoring tls-san: not a network setting weft uses",
            "ignoring write-kubeconfig-mode: not a network setting weft uses",
            "ignoring node-label: not a network setting weft uses",
            "ignoring kubelet-arg: not a network setting weft uses",
            "ignoring write-kubeconfig: not a network setting weft uses",
            "ignoring disable: not a network setting weft uses",
            "ignoring disable-apiserver-lb: not a network setting weft uses",
        ]
    );
    assert_eq!(
        value(&values, Key::ClusterCidr),
        Some((one("10.42.0.0/16"), "/etc/weft/config.yaml".to_owned()))
    );
}

#[test]
fn k3s_keys_in_toml() {
    let location = ConfigLocation {
        path: PathBuf::from("/w.toml"),
        named_by: Some("--config"),
    };
    let files = MapFiles::new([(
        "/w.toml",
        "tls-san = [\"a\"]\ncluster-cidr = \"10.42.0.0/16\"\n",
    )]);
    let (values, errors, warnings) = load(&location, Role::Server, &files);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["ignoring tls-san: not a network setting weft uses"]
    );
    assert_eq!(values.get(Key::ClusterCidr).unwrap().0, one("10.42.0.0/16"));
}

#[test]
fn agent_takes_only_the_k3s_agent_keys() {
    let (values, errors, warnings) = load_messages(
        Role::Agent,
        &[
            (
                "/etc/weft/config.yaml",
                "node-label: [a=b]\nkubelet-arg: [max-pods=200]\ntls-san: [x]\nnode-name: n1\n",
            ),
            (
                "/etc/weft/config.yaml.d/10.yaml",
                "write-kubeconfig-mode: \"0644\"\ndisable-apiserver-lb: true\nkublet-arg: [x]\n",
            ),
        ],
    );
    assert_eq!(
        errors,
        [
            "tls-san in /etc/weft/config.yaml is a k3s server setting, which an agent does not take (k3s agent refuses it too): remove it from the agent's config file",
            "write-kubeconfig-mode in /etc/weft/config.yaml.d/10.yaml is a k3s server setting, which an agent does not take (k3s agent refuses it too): remove it from the agent's config file",
            "unknown key kublet-arg in /etc/weft/config.yaml.d/10.yaml: the closest known key is kubelet-arg",
        ]
    );
    assert_eq!(
        warnings,
        [
            "ignoring node-label: not a network setting weft uses",
            "ignoring kubelet-arg: not a network setting weft uses",
            "ignoring disable-apiserver-lb: not a network setting weft uses",
        ]
    );
    assert_eq!(
        value(&values, Key::NodeName),
        Some((one("n1"), "/etc/weft/config.yaml".to_owned()))
    );
}

#[test]
fn k3s_network_keys_weft_cant_honour_are_errors() {
    for role in [Role::Server, Role::Agent] {
        let (_, errors, warnings) = load_messages(
            role,
            &[(
                "/etc/weft/config.yaml",
                "vpn-auth: name=tailscale,joinKey=k\nvpn-auth-file: /k\n",
            )],
        );
        let fix = "weft has no VPN integration (K3s's tailscale backend); remove it and pick a flannel-backend, e.g. wireguard-native to encrypt traffic between nodes";
        assert_eq!(
            errors,
            [
                format!(
                    "vpn-auth in /etc/weft/config.yaml is a k3s setting weft can't honour: {fix}"
                ),
                format!(
                    "vpn-auth-file in /etc/weft/config.yaml is a k3s setting weft can't honour: {fix}"
                ),
            ],
            "{role:?}"
        );
        assert_eq!(warnings, Vec::<String>::new());
    }
}

#[test]
fn typos_still_fail_with_the_closest_key() {
    let (_, errors, warnings) = load_messages(
        Role::Server,
        &[(
            "/etc/weft/config.yaml",
            "tls-sna: [x]\nclustr-cidr: 10.42.0.0/16\nwrite-kubeconfig-mod: \"0644\"\n",
        )],
    );
    assert_eq!(
        errors,
        [
            "unknown key tls-sna in /etc/weft/config.yaml: the closest known key is tls-san",
            "unknown key clustr-cidr in /etc/weft/config.yaml: the closest known key is cluster-cidr",
            "unknown key write-kubeconfig-mod in /etc/weft/config.yaml: the closest known key is write-kubeconfig-mode",
        ]
    );
    assert_eq!(warnings, Vec::<String>::new());
}
