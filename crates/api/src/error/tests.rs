//! Tests of the error's causes: kept as sources, printed whole by [`Chain`].

use std::error::Error as _;

use weft_cause::Chain;

use super::*;

#[test]
fn a_cause_is_the_source_and_the_chain_prints_it() {
    let parse = "x".parse::<u8>().unwrap_err();
    let error = ApiError::protocol("unexpected answer from https://192.0.2.1:9345", parse);
    assert_eq!(
        error.to_string(),
        "protocol error: unexpected answer from https://192.0.2.1:9345"
    );
    assert_eq!(
        error.source().map(ToString::to_string).as_deref(),
        Some("invalid digit found in string")
    );
    assert_eq!(
        Chain(&error).to_string(),
        "protocol error: unexpected answer from https://192.0.2.1:9345: invalid digit found in string"
    );
    // Clone and equality hold through the shared cause.
    assert_eq!(error.clone(), error);
    let other = ApiError::protocol(
        "unexpected answer from https://192.0.2.1:9345",
        "y".parse::<u8>().unwrap_err(),
    );
    assert_eq!(other, error);
    let none = ApiError::Tls {
        what: "the PEM holds no certificate".into(),
        source: None,
    };
    assert_eq!(
        Chain(&none).to_string(),
        "TLS error: the PEM holds no certificate"
    );
}
