//! Tests for the `cargo metadata` reader on a small hand-written graph.

use super::*;

/// `pure` reaches `tokio` through `mid`; `nix` only as a dev-dependency; `rtnetlink` only as a
/// build-dependency. `shell` (another member) depends on `tokio` directly.
const GRAPH: &str = r#"{
  "packages": [
    {"id": "pure 0.0.0", "name": "pure", "manifest_path": "/w/crates/pure/Cargo.toml",
     "targets": [{"name": "pure", "kind": ["lib"], "src_path": "/w/crates/pure/src/lib.rs"}]},
    {"id": "shell 0.0.0", "name": "shell", "manifest_path": "/w/crates/shell/Cargo.toml",
     "targets": []},
    {"id": "mid 1.0.0", "name": "mid", "manifest_path": "/r/mid/Cargo.toml", "targets": []},
    {"id": "tokio 1.0.0", "name": "tokio", "manifest_path": "/r/tokio/Cargo.toml", "targets": []},
    {"id": "nix 1.0.0", "name": "nix", "manifest_path": "/r/nix/Cargo.toml", "targets": []},
    {"id": "rtnetlink 1.0.0", "name": "rtnetlink", "manifest_path": "/r/rt/Cargo.toml", "targets": []}
  ],
  "workspace_members": ["pure 0.0.0", "shell 0.0.0"],
  "resolve": {"nodes": [
    {"id": "pure 0.0.0", "deps": [
      {"pkg": "mid 1.0.0", "dep_kinds": [{"kind": null}]},
      {"pkg": "nix 1.0.0", "dep_kinds": [{"kind": "dev"}]},
      {"pkg": "rtnetlink 1.0.0", "dep_kinds": [{"kind": "build"}]}
    ]},
    {"id": "shell 0.0.0", "deps": [{"pkg": "tokio 1.0.0", "dep_kinds": [{"kind": null}]}]},
    {"id": "mid 1.0.0", "deps": [
      {"pkg": "tokio 1.0.0", "dep_kinds": [{"kind": "dev"}, {"kind": null}]}
    ]},
    {"id": "tokio 1.0.0", "deps": []},
    {"id": "nix 1.0.0", "deps": []},
    {"id": "rtnetlink 1.0.0", "deps": []}
  ]}
}"#;

const FORBIDDEN: &[&str] = &["tokio", "nix", "rtnetlink"];

fn graph() -> Metadata {
    Metadata::from_json(GRAPH).unwrap()
}

#[test]
fn normal_edges_are_followed_transitively() {
    assert_eq!(
        graph().normal_dependency_chains("pure", FORBIDDEN),
        vec![vec!["pure", "mid", "tokio"]],
    );
    assert_eq!(
        graph().normal_dependency_chains("shell", FORBIDDEN),
        vec![vec!["shell", "tokio"]],
    );
}

#[test]
fn dev_and_build_edges_are_not_followed() {
    assert_eq!(
        graph().normal_dependency_chains("pure", &["nix", "rtnetlink"]),
        Vec::<Vec<String>>::new(),
    );
}

#[test]
fn only_workspace_members_are_roots() {
    assert_eq!(graph().manifest_path("mid"), None);
    assert!(
        graph()
            .normal_dependency_chains("mid", FORBIDDEN)
            .is_empty()
    );
    assert!(
        graph()
            .normal_dependency_chains("absent", FORBIDDEN)
            .is_empty()
    );
}

#[test]
fn members() {
    assert_eq!(graph().members(), ["pure", "shell"]);
}

#[test]
fn targets_and_manifests() {
    let graph = graph();
    assert_eq!(
        graph.targets("pure"),
        vec![Target {
            name: "pure".to_owned(),
            kinds: vec!["lib".to_owned()],
            src_path: "/w/crates/pure/src/lib.rs".into(),
        }],
    );
    assert_eq!(
        graph.manifest_path("pure"),
        Some(PathBuf::from("/w/crates/pure/Cargo.toml")),
    );
    assert_eq!(graph.manifest_path("tokio"), None);
}
