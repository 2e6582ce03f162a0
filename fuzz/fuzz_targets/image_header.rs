//! Image uploads: the header check before queueing, the decode under a
//! pixel limit (PNG, JPEG, WebP), and `data:` URLs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_backends::fuzzing::image(data, 4_000_000));
