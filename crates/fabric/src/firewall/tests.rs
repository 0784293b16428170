//! Tests of the firewall module.
