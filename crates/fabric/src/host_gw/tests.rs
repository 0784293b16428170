//! Tests of the host_gw module.
