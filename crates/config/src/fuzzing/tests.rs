//! Replays every seed of `fuzz/corpus/config_file/` through the fuzz entry point, so the
//! target keeps compiling and its seeds keep passing without cargo-fuzz.

use std::path::PathBuf;

#[test]
fn replay_config_file_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config_file");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        super::config_file(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}

#[test]
fn odd_inputs_do_not_panic() {
    for input in [
        &b""[..],
        b"\xff\xfe",
        b"{",
        b"a: !!binary aGVsbG8=",
        b"\"a+\" = 1",
        b"+: 1",
        b"&a [*a]",
    ] {
        super::config_file(input);
    }
}
