//! `multipart/form-data` bodies of the audio routes and OCR (boundary
//! `fuzzboundary`). The first byte picks the route.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_gateway::fuzzing::multipart(data));
