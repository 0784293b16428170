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
