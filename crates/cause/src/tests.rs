//! Tests of [`Cause`] and [`Chain`].

use std::error::Error;

use super::*;

/// An error with a context line over a [`Cause`], as weft's enums hold one.
#[derive(Debug, Clone, PartialEq)]
struct Failed {
    what: &'static str,
    source: Option<Cause>,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }
}

impl Error for Failed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_ref().map(|c| c as &(dyn Error + 'static))
    }
}

#[test]
fn a_cause_stays_the_source_and_the_chain_prints_it_whole() {
    let parse = "x".parse::<u8>().unwrap_err();
    let error = Failed {
        what: "reading the port",
        source: Some(Cause::new(parse)),
    };
    assert_eq!(
        error.source().map(ToString::to_string).as_deref(),
        Some("invalid digit found in string")
    );
    assert_eq!(
        Chain(&error).to_string(),
        "reading the port: invalid digit found in string"
    );
    let none = Failed {
        what: "reading the port",
        source: None,
    };
    assert_eq!(Chain(&none).to_string(), "reading the port");
}

#[test]
fn a_cause_is_cloned_shared_and_equal_by_its_message() {
    let cause = Cause::new("y".parse::<u8>().unwrap_err());
    assert_eq!(cause.clone(), cause);
    assert!(Arc::ptr_eq(&cause.clone().0, &cause.0));
    assert_eq!(cause, Cause::new("z".parse::<u8>().unwrap_err()));
    assert_ne!(cause, Cause::new("number too large to fit in target type"));
    assert_eq!(
        Cause::new("number too large to fit in target type"),
        Cause::new("300".parse::<u8>().unwrap_err())
    );
}

#[test]
fn the_chain_walks_through_a_cause_to_the_errors_under_it() {
    let inner = Failed {
        what: "the socket",
        source: Some(Cause::new(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ))),
    };
    let outer = Failed {
        what: "serving the device",
        source: Some(Cause::new(inner)),
    };
    assert_eq!(
        Chain(&outer).to_string(),
        "serving the device: the socket: permission denied"
    );
}
