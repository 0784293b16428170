//! Fuzzes weft-tunnel's frame decoder: any message decodes to a typed error or to a frame that
//! encodes back to the same bytes. The logic lives in `weft_tunnel::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_tunnel::fuzzing::frame(data));
