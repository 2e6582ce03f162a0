//! The upstream SSE relay's parser: the same stream cut into body pieces
//! anywhere gives the same chunks. The first byte is the number of cuts
//! (up to 7), then two bytes (little endian) per cut; the rest is the stream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let count = usize::from(count % 8).min(rest.len() / 2);
    let (cuts, stream) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> =
        cuts.chunks_exact(2).map(|c| usize::from(u16::from_le_bytes([c[0], c[1]]))).collect();
    cuts.sort_unstable();
    infergate_backends::fuzzing::sse_relay(stream, &cuts);
});
