//! Audio uploads: the sniffer, the WAV header reader, the decoders (WAV,
//! FLAC, MP3, OGG/Vorbis) to 16 kHz mono, and the split into chunks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_backends::fuzzing::audio(data, 30.0));
