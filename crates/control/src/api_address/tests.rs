//! Tests of the recorded API address.

use std::net::SocketAddr;

use super::{local_api_url, read, record};

#[test]
fn wildcards_become_loopback_of_their_family() {
    let cases: &[(&str, &str)] = &[
        ("0.0.0.0:9345", "https://127.0.0.1:9345"),
        ("[::]:9345", "https://[::1]:9345"),
        ("10.0.0.5:1234", "https://10.0.0.5:1234"),
        ("[fd00::5]:9345", "https://[fd00::5]:9345"),
    ];
    for (bound, want) in cases {
        let bound: SocketAddr = bound.parse().expect("an address");
        assert_eq!(local_api_url(bound), *want, "{bound}");
    }
}

#[test]
fn recorded_url_reads_back_and_a_missing_or_bad_file_says_so() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let server = dir.path().join("server");
    let err = read(&server).expect_err("nothing recorded yet");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/api-address does not exist: start weft-server with this data dir first (it records its API's address there at start), or give the server's --data-dir",
            server.display()
        )
    );
    record(&server, "https://127.0.0.1:9345").expect("recorded");
    assert_eq!(
        std::fs::read_to_string(server.join("api-address")).expect("read"),
        "https://127.0.0.1:9345\n"
    );
    assert_eq!(read(&server).expect("read"), "https://127.0.0.1:9345");
    std::fs::write(server.join("api-address"), "garbage\n").expect("written");
    assert!(
        read(&server)
            .expect_err("not a URL")
            .to_string()
            .contains("api-address does not hold an https:// URL"),
    );
}
