//! OpenAI request bodies: chat (in-process and upstream rules), embeddings
//! and moderations, decoded and checked as their handlers do. The first
//! byte picks the route.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_gateway::fuzzing::openai_request(data));
