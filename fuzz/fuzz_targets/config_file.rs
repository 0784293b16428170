//! Fuzzes weft-config's config-file parser: the bytes are read as a YAML and as a TOML config
//! file and merged for a server and an agent. The logic lives in `weft_config::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_config::fuzzing::config_file(data));
