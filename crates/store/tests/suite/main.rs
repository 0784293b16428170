//! Integration tests of weft-store: one suite that runs against the embedded store (in a
//! temporary directory) and against a real etcd that each test starts and stops itself, plus
//! tests of what only the embedded store has.
//!
//! The etcd tests need Debian's `etcd-server` (the `etcd` binary on PATH); without it they
//! fail with a message saying so.

mod embedded;
mod etcd;
mod harness;
mod kv;
mod model;
mod typed;
