//! KServe v2 inference bodies, JSON or with Triton's binary tensors. The
//! first two bytes are the `Inference-Header-Content-Length` (little
//! endian; 0xFFFF: no header, a JSON body).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((length, body)) = data.split_first_chunk::<2>() else { return };
    let length = match u16::from_le_bytes(*length) {
        u16::MAX => None,
        n => Some(usize::from(n)),
    };
    infergate_gateway::fuzzing::kserve(length, body);
});
