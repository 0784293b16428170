//! The tidy checks run on the real tree (one `#[test]` per check), and unit tests of the checks
//! themselves on small inputs.

use std::sync::OnceLock;

use super::*;
use crate::project_root;

/// Runs the check called `name` on the working tree and fails with every violation.
fn check_tree(name: &str) {
    let check = CHECKS
        .iter()
        .find(|check| check.name.starts_with(name))
        .unwrap_or_else(|| panic!("no tidy check starts with {name:?}"));
    // One tree for every test, so `cargo metadata` runs once per test run.
    static TREE: OnceLock<Tree> = OnceLock::new();
    let tree = TREE.get_or_init(|| Tree::load(&project_root()).unwrap());
    let violations = (check.run)(tree).unwrap();
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "tidy: {}:\n{}",
        check.name,
        listed.join("\n"),
    );
}

#[test]
fn every_check_has_a_test() {
    // The tests below name checks by prefix; this keeps the list and the tests in step.
    let prefixes = [
        "every .rs file",
        "no trailing whitespace",
        "no should_panic",
        "no todo or",
        "pure crates",
        "only weft-kernel",
        "crate boundaries",
        "the tunnel protocol",
        "every fuzz target",
    ];
    assert_eq!(CHECKS.len(), prefixes.len());
    for (check, prefix) in CHECKS.iter().zip(prefixes) {
        assert!(check.name.starts_with(prefix), "{}", check.name);
    }
}

#[test]
fn tidy_doc_comments() {
    check_tree("every .rs file");
}

#[test]
fn tidy_trailing_whitespace() {
    check_tree("no trailing whitespace");
}

#[test]
fn tidy_should_panic() {
    check_tree("no should_panic");
}

#[test]
fn tidy_placeholders() {
    check_tree("no todo or");
}

#[test]
fn tidy_pure_crates() {
    check_tree("pure crates");
}

#[test]
fn tidy_netlink_only_in_kernel() {
    check_tree("only weft-kernel");
}

#[test]
fn tidy_crate_boundaries() {
    check_tree("crate boundaries");
}

/// A workspace that breaks every boundary: weft-ipam reaches weft-fabric through a third-party
/// crate, weft-node reaches weft-store, and weft-fabric declares anyhow (weft-agent may).
const CROSSED: &str = r#"{
  "packages": [
    {"id": "ipam", "name": "weft-ipam", "manifest_path": "/w/crates/ipam/Cargo.toml", "targets": []},
    {"id": "fabric", "name": "weft-fabric", "manifest_path": "/w/crates/fabric/Cargo.toml", "targets": []},
    {"id": "node", "name": "weft-node", "manifest_path": "/w/crates/node/Cargo.toml", "targets": []},
    {"id": "store", "name": "weft-store", "manifest_path": "/w/crates/store/Cargo.toml", "targets": []},
    {"id": "agent", "name": "weft-agent", "manifest_path": "/w/bins/agent/Cargo.toml", "targets": []},
    {"id": "mid", "name": "mid", "manifest_path": "/r/mid/Cargo.toml", "targets": []},
    {"id": "anyhow", "name": "anyhow", "manifest_path": "/r/anyhow/Cargo.toml", "targets": []}
  ],
  "workspace_members": ["ipam", "fabric", "node", "store", "agent"],
  "resolve": {"nodes": [
    {"id": "ipam", "deps": [{"pkg": "mid", "dep_kinds": [{"kind": null}]}]},
    {"id": "mid", "deps": [{"pkg": "fabric", "dep_kinds": [{"kind": null}]}]},
    {"id": "fabric", "deps": [{"pkg": "anyhow", "dep_kinds": [{"kind": null}]}]},
    {"id": "node", "deps": [{"pkg": "store", "dep_kinds": [{"kind": null}]}]},
    {"id": "store", "deps": []},
    {"id": "agent", "deps": [{"pkg": "anyhow", "dep_kinds": [{"kind": null}]}]},
    {"id": "anyhow", "deps": []}
  ]}
}"#;

#[test]
fn crossed_boundaries_are_each_named() {
    let metadata = Metadata::from_json(CROSSED).unwrap();
    let messages: Vec<String> = boundaries(Path::new("/w"), &metadata)
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(
        messages,
        [
            "crates/ipam/Cargo.toml:1: weft-ipam depends on weft-fabric (weft-ipam -> mid -> weft-fabric): it is the bottom of the graph: move the code that needs it up a layer",
            "crates/node/Cargo.toml:1: weft-node depends on weft-store (weft-node -> weft-store): an agent learns leases from the servers' API, never from the store",
            "crates/fabric/Cargo.toml:1: weft-fabric depends on anyhow (weft-fabric -> anyhow): a library returns its crate's thiserror enum; anyhow is for the binaries and xtask",
        ]
    );
}

#[test]
fn tidy_tunnel_proto() {
    check_tree("the tunnel protocol");
}

#[test]
fn tidy_fuzz_targets() {
    check_tree("every fuzz target");
}

// === the checks on small inputs ===

fn lines_of(violations: Vec<Violation>) -> Vec<usize> {
    violations.into_iter().map(|v| v.line).collect()
}

#[test]
fn doc_comment_must_be_the_first_line() {
    assert!(doc_comment("a.rs", "//! Does a thing.\nfn f() {}\n").is_empty());
    assert_eq!(lines_of(doc_comment("a.rs", "\n//! Late.\n")), [1]);
    assert_eq!(lines_of(doc_comment("a.rs", "/// Item doc.\n")), [1]);
    assert_eq!(lines_of(doc_comment("a.rs", "")), [1]);
}

#[test]
fn trailing_whitespace_names_each_line() {
    let text = "ok\nspace \ntab\t\nok\n";
    assert_eq!(lines_of(trailing_whitespace("a.md", text)), [2, 3]);
    assert_eq!(
        trailing_whitespace("a.md", "x \n")[0].to_string(),
        "a.md:1: trailing whitespace",
    );
}

#[test]
fn should_panic_is_found() {
    let text = format!("#[test]\n{SHOULD_PANIC}]\nfn f() {{}}\n");
    assert_eq!(lines_of(should_panic("a.rs", &text)), [2]);
}

#[test]
fn placeholders_outside_tests_are_found() {
    let text = format!(
        "\
fn a() {{
    {TODO}()
}}
fn b() {{ {UNIMPLEMENTED}(\"later\") }}
fn c() {{ my_{TODO}() }}
// {TODO}() in a comment is prose
"
    );
    assert_eq!(lines_of(placeholders("crates/x/src/lib.rs", &text)), [2, 4]);
}

#[test]
fn test_files_may_hold_placeholders() {
    let text = format!("fn a() {{ {TODO}() }}\n");
    assert!(placeholders("crates/x/src/tests.rs", &text).is_empty());
    assert!(placeholders("crates/x/src/foo/tests.rs", &text).is_empty());
    assert!(placeholders("crates/x/tests/it.rs", &text).is_empty());
    assert_eq!(
        lines_of(placeholders("crates/x/src/contests.rs", &text)),
        [1]
    );
}

#[test]
fn cfg_test_items_may_hold_placeholders() {
    let text = format!(
        "\
#[cfg(test)]
mod tests;

fn a() {{ {TODO}() }}

#[cfg(test)]
#[allow(dead_code)]
fn helper() {{
    if true {{
        {TODO}()
    }}
}}

fn b() {{ {TODO}() }}

mod inner {{
    #[cfg(test)]
    mod tests {{
        fn t() {{ {TODO}() }}
    }}

    fn c() {{ {TODO}() }}
}}

#[cfg(test)]
fn one_line() {{ {TODO}() }}
fn d() {{ {TODO}() }}
"
    );
    assert_eq!(
        lines_of(placeholders("crates/x/src/lib.rs", &text)),
        [4, 14, 22, 27],
    );
}

#[test]
fn cfg_any_test_is_not_test_only() {
    // `#[cfg(any(test, fuzzing))]` code ships in fuzz builds.
    let text = format!("#[cfg(any(test, fuzzing))]\nfn f() {{ {TODO}() }}\n");
    assert_eq!(lines_of(placeholders("crates/x/src/lib.rs", &text)), [2]);
}

#[test]
fn dependency_declaration_line() {
    let manifest = "[package]\nname = \"x\"\n\n[dependencies]\ntokio-util = \"1\"\ntokio = { version = \"1\" }\nnix.workspace = true\n";
    assert_eq!(declaration_line(manifest, "tokio"), 6);
    assert_eq!(declaration_line(manifest, "nix"), 7);
    assert_eq!(declaration_line(manifest, "rtnetlink"), 1);
}
