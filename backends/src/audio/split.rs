//! Where to cut long audio into chunks a speech model takes (≤ 30 s for
//! Whisper): in silences, so no word is cut in half.

use super::SAMPLE_RATE;

/// How much audio is kept around detected speech, in seconds.
const MARGIN: f64 = 0.25;
/// Speech segments closer than this run in one chunk.
const JOIN_GAP: f64 = 1.5;

/// Chunks `(start, end)` in seconds, each at most `max` seconds, that a
/// speech model runs one at a time.
///
/// With speech segments (from a voice activity detector), chunks hug the
/// speech: segments are widened by a quarter second and joined while the
/// gap between them is short and the chunk stays within `max`; silence
/// between chunks is not sent to the model at all (Whisper invents text in
/// silence, and a chunk that starts in silence gets its first timestamps
/// wrong). Without them the whole audio is covered, cut at the quietest
/// moments. Speech longer than `max` is cut at its quietest moment too.
pub fn split(pcm: &[f32], speech: Option<&[(f64, f64)]>, max: f64) -> Vec<(f64, f64)> {
    let total = pcm.len() as f64 / f64::from(SAMPLE_RATE);
    let Some(speech) = speech else {
        return cover(pcm, 0.0, total, max);
    };
    let mut groups: Vec<(f64, f64)> = Vec::new();
    for &(s, e) in speech {
        let (s, e) = ((s - MARGIN).max(0.0), (e + MARGIN).min(total));
        match groups.last_mut() {
            Some(last) if s - last.1 <= JOIN_GAP && e - last.0 <= max => last.1 = last.1.max(e),
            _ => groups.push((s, e)),
        }
    }
    groups.into_iter().flat_map(|(s, e)| cover(pcm, s, e, max)).collect()
}

/// `start..end` in chunks of at most `max`, cut at the quietest moment of
/// each chunk's last two thirds.
fn cover(pcm: &[f32], mut start: f64, end: f64, max: f64) -> Vec<(f64, f64)> {
    let mut chunks = Vec::new();
    while end - start > max {
        let cut = quietest(pcm, start + max / 3.0, start + max);
        chunks.push((start, cut));
        start = cut;
    }
    if end > start {
        chunks.push((start, end));
    }
    chunks
}

/// The centre of the quietest 100 ms window between `lo` and `hi` seconds.
fn quietest(pcm: &[f32], lo: f64, hi: f64) -> f64 {
    let rate = f64::from(SAMPLE_RATE);
    let window = (0.1 * rate) as usize;
    let hop = (0.01 * rate) as usize;
    let (from, to) = ((lo * rate) as usize, ((hi * rate) as usize).min(pcm.len()));
    let mut best = (f32::MAX, hi);
    let mut at = from;
    while at + window <= to {
        let energy: f32 = pcm[at..at + window].iter().map(|s| s * s).sum();
        if energy < best.0 {
            best = (energy, (at + window / 2) as f64 / rate);
        }
        at += hop;
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64) -> Vec<f32> {
        (0..(seconds * 16_000.0) as usize).map(|i| (i as f32 * 0.1).sin() * 0.5).collect()
    }

    #[test]
    fn short_audio_is_one_chunk() {
        assert_eq!(split(&tone(12.0), None, 30.0), vec![(0.0, 12.0)]);
    }

    #[test]
    fn chunks_hug_speech_and_skip_silence() {
        // 105 s: speech 2–18 and 19–25 (joined), 40–75 (longer than a chunk),
        // silence, 100–104.
        let pcm = tone(105.0);
        let speech = [(2.0, 18.0), (19.0, 25.0), (40.0, 75.0), (100.0, 104.0)];
        let chunks = split(&pcm, Some(&speech), 30.0);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(chunks.iter().all(|(s, e)| e > s && e - s <= 30.0 + 1e-9), "{chunks:?}");
        assert!(near(chunks[0].0, 1.75) && near(chunks[0].1, 25.25), "{chunks:?}");
        // 39.75–75.25 is cut once, inside it.
        assert!(
            near(chunks[1].0, 39.75) && near(chunks[2].1, 75.25) && near(chunks[1].1, chunks[2].0),
            "{chunks:?}"
        );
        assert!(near(chunks[3].0, 99.75) && near(chunks[3].1, 104.25), "{chunks:?}");
        assert_eq!(chunks.len(), 4);
        assert!(split(&pcm, Some(&[]), 30.0).is_empty(), "no speech, nothing to run");
    }

    #[test]
    fn without_speech_segments_it_cuts_at_the_quietest_moment() {
        let mut pcm = tone(50.0);
        // A quiet 300 ms at 25 s.
        pcm[(25.0 * 16_000.0) as usize..(25.3 * 16_000.0) as usize].fill(0.0);
        let chunks = split(&pcm, None, 30.0);
        assert_eq!(chunks.len(), 2);
        assert!((chunks[0].1 - 25.15).abs() < 0.1, "{chunks:?}");
    }
}
