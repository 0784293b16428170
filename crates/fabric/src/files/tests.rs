//! Tests of the files module.
