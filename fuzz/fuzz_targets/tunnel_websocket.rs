//! Fuzzes weft-tunnel's WebSocket framing: any bytes, received by either side in two reads,
//! decode to whole messages or a typed error, and every binary message framed again decodes to
//! itself. The logic lives in `weft_tunnel::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_tunnel::fuzzing::websocket(data));
