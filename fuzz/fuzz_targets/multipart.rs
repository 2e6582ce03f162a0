//! `multipart/form-data` bodies of the audio routes and OCR (boundary
//! `fuzzboundary`). The first byte picks the route.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&route, body)) = data.split_first() {
        infergate_gateway::fuzzing::multipart(route, body);
    }
});
