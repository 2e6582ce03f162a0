//! The JSON object scanner (`backends/src/json_object.rs`) against
//! serde_json, its rewrite and splice, and upstream chat answers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_backends::fuzzing::json_object(data));
