//! Tests of `resolve`.
