//! Tests of the vxlan module.
