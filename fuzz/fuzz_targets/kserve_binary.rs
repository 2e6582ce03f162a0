//! KServe v2 inference bodies, JSON or with Triton's binary tensors. The
//! first two bytes are the `Inference-Header-Content-Length` (little
//! endian; 0xFFFF: no header, a JSON body).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_gateway::fuzzing::kserve(data));
