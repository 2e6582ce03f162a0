//! Where to cut long audio into chunks a speech model takes (≤ 30 s for
//! Whisper): in silences, so no word is cut in half.

use super::SAMPLE_RATE;

/// Chunks `(start, end)` in seconds of at most `max` seconds covering the
/// audio. Each cut is in the middle of the longest pause between speech
/// segments (the part of it between a third of `max` and `max` into the
/// chunk), or — with no pause there, or no speech segments given — at the
/// quietest 100 ms of that stretch. With speech segments given, chunks
/// holding no speech are left out.
pub fn split(pcm: &[f32], speech: Option<&[(f64, f64)]>, max: f64) -> Vec<(f64, f64)> {
    let total = pcm.len() as f64 / f64::from(SAMPLE_RATE);
    let mut chunks = Vec::new();
    let mut start = 0.0;
    while total - start > max {
        let (lo, hi) = (start + max / 3.0, start + max);
        let pause = speech.and_then(|segments| {
            pauses(segments, total)
                .map(|(a, b)| (a.max(lo), b.min(hi)))
                .filter(|(a, b)| b > a)
                .max_by(|x, y| (x.1 - x.0).total_cmp(&(y.1 - y.0)))
                .map(|(a, b)| (a + b) / 2.0)
        });
        let cut = pause.unwrap_or_else(|| quietest(pcm, lo, hi));
        chunks.push((start, cut));
        start = cut;
    }
    chunks.push((start, total));
    if let Some(segments) = speech {
        chunks.retain(|(s, e)| segments.iter().any(|(a, b)| a < e && b > s));
    }
    chunks
}

/// The gaps between speech segments (and before the first, after the last).
fn pauses(segments: &[(f64, f64)], total: f64) -> impl Iterator<Item = (f64, f64)> + '_ {
    let starts = std::iter::once(0.0).chain(segments.iter().map(|s| s.1));
    let ends = segments.iter().map(|s| s.0).chain(std::iter::once(total));
    starts.zip(ends).filter(|(a, b)| b > a)
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
    fn cuts_fall_in_pauses_and_silent_chunks_are_dropped() {
        // 105 s: speech 0–18 and 21–45, silence 45–100, speech 100–105.
        let pcm = tone(105.0);
        let speech = [(0.0, 18.0), (21.0, 45.0), (100.0, 105.0)];
        let chunks = split(&pcm, Some(&speech), 30.0);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // Cut in the 18–21 pause, then in the long silence (47.25 = middle of
        // 45–49.5); the two chunks inside the silence are dropped.
        assert_eq!(chunks.len(), 3, "{chunks:?}");
        assert!(near(chunks[0].0, 0.0) && near(chunks[0].1, 19.5), "{chunks:?}");
        assert!(near(chunks[1].0, 19.5) && near(chunks[1].1, 47.25), "{chunks:?}");
        assert!(near(chunks[2].1, 105.0) && chunks[2].0 < 100.0 && 105.0 - chunks[2].0 <= 30.0, "{chunks:?}");
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
