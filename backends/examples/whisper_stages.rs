//! Transcripts and times per encoder window, for `scripts/bench-speech-window.sh`:
//! `whisper_stages MODEL THREADS WINDOW...` reads paths of 16 kHz mono f32
//! clips from stdin and prints, per clip and WINDOW (whisper.cpp's
//! `audio_ctx`: 0 = the full 30 s, `auto:M:N` = the clip's positions + M, at
//! least N, the full window from 1500), a tab-separated line: path, window,
//! seconds, text. English, greedy, no context. Environment: `NO_TS` (skip
//! timestamp tokens), `TINC` (temperature fallback step, 0.2), `FLASH`
//! (flash attention), `STAGES` (after each transcription, time the mel
//! spectrogram and the encoder alone at that window: two more columns).
use std::io::BufRead;
use std::time::Instant;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

type Error = Box<dyn std::error::Error>;

/// whisper.cpp's `audio_ctx` for WINDOW and a clip of `samples`.
fn audio_ctx(window: &str, samples: usize) -> Result<i32, Error> {
    Ok(match window.split(':').collect::<Vec<_>>()[..] {
        ["auto", margin, least] => {
            let positions = (samples.div_ceil(320) + margin.parse::<usize>()?).max(least.parse()?);
            if positions >= 1500 {
                0
            } else {
                positions as i32
            }
        }
        [positions] => positions.parse()?,
        _ => return Err(format!("window '{window}': 0, N or auto:MARGIN:MIN").into()),
    })
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, threads, windows @ ..] = &args[..] else {
        return Err("usage: whisper_stages MODEL THREADS WINDOW... < clip paths".into());
    };
    let threads: i32 = threads.parse()?;
    let increment: f32 = std::env::var("TINC").map_or(Ok(0.2), |v| v.parse())?;
    let mut context = WhisperContextParameters::default();
    context.flash_attn(std::env::var("FLASH").is_ok());
    let context = WhisperContext::new_with_params(model, context)?;
    let mut state = context.create_state()?;
    for path in std::io::stdin().lock().lines() {
        let path = path?;
        let bytes = std::fs::read(&path)?;
        let mut pcm: Vec<f32> =
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        // whisper.cpp refuses less than 1 s.
        pcm.resize(pcm.len().max(16_000), 0.0);
        for window in windows {
            let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
            params.set_n_threads(threads);
            params.set_language(Some("en"));
            params.set_no_context(true);
            params.set_no_timestamps(std::env::var("NO_TS").is_ok());
            params.set_print_progress(false);
            params.set_temperature_inc(increment);
            params.set_audio_ctx(audio_ctx(window, pcm.len())?);
            let start = Instant::now();
            state.full(params, &pcm)?;
            let seconds = start.elapsed().as_secs_f64();
            let mut text = String::new();
            for segment in state.as_iter() {
                text.push_str(&segment.to_str_lossy()?);
            }
            let mut stages = String::new();
            if std::env::var("STAGES").is_ok() {
                // The state keeps the window of its last `full`.
                let start = Instant::now();
                state.pcm_to_mel(&pcm, threads as usize)?;
                let mel = start.elapsed().as_secs_f64();
                let start = Instant::now();
                state.encode(0, threads as usize)?;
                stages = format!("\tmel {mel:.3}\tencoder {:.3}", start.elapsed().as_secs_f64());
            }
            println!("{path}\t{window}\t{seconds:.3}\t{}{stages}", text.trim());
        }
    }
    Ok(())
}
