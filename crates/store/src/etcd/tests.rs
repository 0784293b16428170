//! Unit tests of the etcd back end's pure parts: endpoints and revisions.

use super::*;

#[test]
fn endpoints_parse() {
    let check = |value: &str, expect: &[&str]| {
        assert_eq!(parse_endpoints(value).unwrap(), expect, "{value}");
    };
    check("http://127.0.0.1:2379", &["http://127.0.0.1:2379"]);
    check(
        " http://10.0.0.1:2379/, http://etcd-b:2379,,",
        &["http://10.0.0.1:2379", "http://etcd-b:2379"],
    );
    check("http://[fd00::1]:2379", &["http://[fd00::1]:2379"]);
    check(
        "https://10.0.0.1:2379, https://etcd-b:2379/",
        &["https://10.0.0.1:2379", "https://etcd-b:2379"],
    );
}

#[test]
fn bad_endpoints_say_what_to_give() {
    for (value, reason) in [
        ("", "no endpoint given"),
        (" , ", "no endpoint given"),
        ("127.0.0.1:2379", "does not start with http:// or https://"),
        ("http://127.0.0.1", "not http://HOST:PORT"),
        ("https://127.0.0.1", "not https://HOST:PORT"),
        ("http://:2379", "not http://HOST:PORT"),
        ("http://127.0.0.1:99999", "not http://HOST:PORT"),
        ("http://127.0.0.1:2379/path", "not http://HOST:PORT"),
        (
            "postgres://db:5432",
            "does not start with http:// or https://",
        ),
        (
            "https://10.0.0.1:2379,http://10.0.0.2:2379",
            "https://10.0.0.1:2379 and http://10.0.0.2:2379 mix http:// and https://; use https:// for every endpoint",
        ),
    ] {
        let message = parse_endpoints(value).unwrap_err().to_string();
        assert!(
            message.starts_with("invalid datastore-endpoint"),
            "{message}"
        );
        assert!(message.contains(reason), "{value}: {message}");
        assert!(message.contains("like https://127.0.0.1:2379"), "{message}");
    }
}

#[test]
fn revisions_convert() {
    assert_eq!(revision_from(-1), Revision::ZERO);
    assert_eq!(revision_from(42), Revision(42));
    assert_eq!(revision_to_etcd(Revision(42)), 42);
    assert_eq!(revision_to_etcd(Revision(u64::MAX)), i64::MAX);
}
