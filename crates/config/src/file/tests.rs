//! Tests of `file`.
