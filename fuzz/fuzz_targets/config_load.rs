//! Configuration loading: TOML, then `INFERGATE__*` overrides (the lines
//! after a `%%` line, `NAME=value` each), then validation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_gateway::fuzzing::config(data));
