//! Tests of `setting`.
