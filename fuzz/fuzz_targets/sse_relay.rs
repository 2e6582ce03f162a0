//! The upstream SSE relay's parser: the same stream cut into body pieces
//! anywhere gives the same chunks. The first byte is the number of cuts
//! (up to 7), then two bytes (little endian) per cut; the rest is the stream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_backends::fuzzing::sse_relay(data));
