//! Tests for reading libtest's summary lines, e2e's verdict line and `/proc/self/status`.

use super::*;

fn check(line: &str, expect: Option<(u64, u64)>) {
    let got = parse_test_result(line).map(|tally| (tally.passed, tally.failed));
    assert_eq!(got, expect, "line: {line:?}");
}

#[test]
fn test_result_lines() {
    check(
        "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        Some((12, 0)),
    );
    check(
        "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s",
        Some((3, 2)),
    );
    check(
        "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        Some((0, 0)),
    );
}

#[test]
fn other_lines_are_not_results() {
    check("running 12 tests", None);
    check("test tidy::tests::tidy_doc_comments ... ok", None);
    check("  test result: ok. 1 passed; 0 failed", None);
    check("test result: garbled", None);
}

#[test]
fn effective_uid_is_the_second_id() {
    let status = "Name:\tcargo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
    assert_eq!(effective_uid(status), Some(0));
    assert_eq!(effective_uid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
    assert_eq!(effective_uid("Name:\tcargo\n"), None);
    assert_eq!(effective_uid(""), None);
}

#[test]
fn e2e_summary_lines() {
    let check = |line: &str, expect: Option<(u64, u64)>| {
        let got = parse_summary(line).map(|tally| (tally.passed, tally.failed));
        assert_eq!(got, expect, "line: {line:?}");
    };
    check("12 passed, 0 failed", Some((12, 0)));
    check("9 passed, 3 failed", Some((9, 3)));
    check("e2e took 62s", None);
    check("--- restart: ok (11.3s)", None);
    check("12 passed, 0 failed; 1 ignored", None);
    check("test result: ok. 1 passed; 0 failed", None);
}
