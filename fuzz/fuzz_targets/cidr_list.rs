//! Fuzzes weft-ipam's CIDR-list parser (`--cluster-cidr`, `--service-cidr`); newline-separated
//! values stand for a repeated flag. The logic lives in `weft_ipam::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_ipam::fuzzing::cidr_list(data));
