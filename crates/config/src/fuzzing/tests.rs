//! Tests of `fuzzing`.
