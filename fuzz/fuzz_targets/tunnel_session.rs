//! Fuzzes a weft-tunnel session with random frame sequences from its peer: it never panics and
//! its buffers stay within their bounds. The logic lives in `weft_tunnel::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_tunnel::fuzzing::session(data));
