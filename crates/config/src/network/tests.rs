//! Tests of `network`.
