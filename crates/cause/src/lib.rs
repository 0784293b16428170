//! The cause under weft's error enums, and the chain printer for logs.
//!
//! weft's error enums derive `Clone` and `PartialEq` (tests compare them, the agent keeps the
//! last one), which the errors of std, rustls or defguard are not. [`Cause`] keeps such an
//! error whole behind an `Arc`, as the `#[source]` of a variant, so `source()` still walks to
//! it; two causes are equal when their messages are. [`Chain`] prints an error with every
//! cause under it, the way a log line or an `error:` line wants it.
//!
//! It is its own crate because weft-api, weft-kernel and the crates above them all need it
//! and none of them may depend on another for it.

use std::fmt;
use std::sync::Arc;

#[cfg(test)]
mod tests;

/// An error with every cause under it, `error: cause: cause`, for logs: `%Chain(&e)`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + Send + Sync + 'static));

/// The error under a variant of a weft error enum, shared so the enum stays `Clone`; two are
/// equal when their messages are.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

// === impl Chain ===

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

// === impl Cause ===

impl Cause {
    /// Keeps `source`: any error, or a message (`&str`, `String`) where the failure has no
    /// error value of its own.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Cause {
        Cause(Arc::from(source.into()))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}
