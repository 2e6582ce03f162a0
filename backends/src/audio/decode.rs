//! Any supported audio file to 16 kHz mono `f32`: WAV, FLAC, MP3, OGG and
//! WebM (Vorbis or Opus) and MP4/M4A (AAC or ALAC) through `symphonia`, Opus with libopus
//! (`symphonia-adapter-libopus`), at any sample rate up to a bound and any
//! channel count, downmixed and resampled as it is decoded (rubato's FFT
//! resampler: cost and memory linear in the audio's length, and only the
//! 16 kHz result is kept).

use std::io::Cursor;
use std::sync::LazyLock;

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CodecRegistry, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The sample rate speech models take.
pub const SAMPLE_RATE: u32 = 16_000;

/// Lowest source rate accepted: below it there is no speech band to keep.
const MIN_RATE: u32 = 4_000;

/// Input frames per resampler run.
const CHUNK: usize = 4096;

/// The formats `decode` takes, as refusals name them.
pub const ACCEPTED: &str = "WAV, FLAC, MP3, OGG or WebM (Vorbis or Opus) or M4A/MP4 (AAC or ALAC) audio";

/// symphonia's codecs and libopus.
fn codecs() -> &'static CodecRegistry {
    static CODECS: LazyLock<CodecRegistry> = LazyLock::new(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_all::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    });
    &CODECS
}

/// Decoded audio: 16 kHz mono samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Length in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(SAMPLE_RATE)
    }
}

/// What one decode may cost: the audio's length and its source sample rate
/// (decoding and resampling work grows with both).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeLimits {
    pub max_seconds: f64,
    pub max_sample_rate: u32,
}

/// Why audio could not be used; each is the client's 400 (but `Stopped`,
/// whose client has left or whose deadline has passed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudioError {
    #[error("unsupported or unrecognised audio format: send {ACCEPTED}")]
    Unsupported,
    #[error("the audio cannot be decoded: {0}")]
    Corrupt(String),
    #[error("the audio contains no samples")]
    Empty,
    #[error("the audio is longer than the limit of {limit} seconds")]
    TooLong { limit: f64 },
    #[error("the audio's sample rate of {rate} Hz is outside {MIN_RATE}..={limit} Hz")]
    SampleRate { rate: u32, limit: u32 },
    #[error("decoding was stopped")]
    Stopped,
}

/// Decode and convert to 16 kHz mono, stopping as soon as the audio is
/// longer than `limits.max_seconds` (so an hour-long upload costs no more
/// than the limit to refuse), and between packets and resampler runs as soon
/// as `stop()` says so.
pub fn decode(bytes: &[u8], limits: DecodeLimits, stop: &dyn Fn() -> bool) -> Result<Pcm, AudioError> {
    super::metadata::check(bytes).map_err(|why| AudioError::Corrupt(why.into()))?;
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let probed = symphonia::default::get_probe()
        .format(&Hint::new(), source, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|_| AudioError::Unsupported)?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or(AudioError::Unsupported)?;
    let track_id = track.id;
    let rate = track.codec_params.sample_rate.ok_or_else(|| AudioError::Corrupt("no sample rate".into()))?;
    if !(MIN_RATE..=limits.max_sample_rate).contains(&rate) {
        return Err(AudioError::SampleRate { rate, limit: limits.max_sample_rate });
    }
    let mut decoder = codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|_| AudioError::Unsupported)?;
    let max_frames = (limits.max_seconds * f64::from(rate)).ceil() as usize;
    let mut resampler = Stream::new(rate)?;
    let mut buffer: Option<SampleBuffer<f32>> = None;
    let mut mono: Vec<f32> = Vec::new();
    loop {
        if stop() {
            return Err(AudioError::Stopped);
        }
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => {
                // A truncated file decodes to where it ends, if anything came out.
                if resampler.frames_in == 0 {
                    return Err(AudioError::Corrupt(e.to_string()));
                }
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            // A damaged packet is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        let spec = *decoded.spec();
        if spec.rate != rate {
            return Err(AudioError::Corrupt("the sample rate changes within the stream".into()));
        }
        let channels = spec.channels.count().max(1);
        let samples = buffer.get_or_insert_with(|| SampleBuffer::new(decoded.capacity() as u64, spec));
        if samples.capacity() < decoded.capacity() * channels {
            *samples = SampleBuffer::new(decoded.capacity() as u64, spec);
        }
        samples.copy_interleaved_ref(decoded);
        mono.clear();
        mono.extend(
            samples.samples().chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        resampler.push(&mono, stop)?;
        if resampler.frames_in > max_frames {
            return Err(AudioError::TooLong { limit: limits.max_seconds });
        }
    }
    if resampler.frames_in == 0 {
        return Err(AudioError::Empty);
    }
    Ok(Pcm { samples: resampler.finish()? })
}

/// Resampling to [`SAMPLE_RATE`] as samples arrive: the source-rate samples
/// wait only until a resampler run's worth has come.
struct Stream {
    /// `None` when the source is already at 16 kHz.
    fft: Option<Fft<f32>>,
    ratio: f64,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    out: Vec<f32>,
    /// Output frames still to drop: the resampler's delay.
    delay: usize,
    frames_in: usize,
}

impl Stream {
    fn new(rate: u32) -> Result<Stream, AudioError> {
        let ratio = f64::from(SAMPLE_RATE) / f64::from(rate);
        let fft = if rate == SAMPLE_RATE {
            None
        } else {
            Some(
                // One FFT per run (no sub-chunks): a long filter, a sharp
                // anti-aliasing cut (small sub-chunks cost Whisper accuracy).
                Fft::<f32>::new_custom(
                    rate as usize,
                    SAMPLE_RATE as usize,
                    CHUNK,
                    1,
                    1,
                    rubato::WindowFunction::BlackmanHarris2,
                    FixedSync::Input,
                )
                .map_err(|e| AudioError::Corrupt(e.to_string()))?,
            )
        };
        let (delay, scratch) = match &fft {
            Some(fft) => (fft.output_delay(), vec![0.0; fft.output_frames_max()]),
            None => (0, Vec::new()),
        };
        Ok(Stream { fft, ratio, pending: Vec::new(), scratch, out: Vec::new(), delay, frames_in: 0 })
    }

    fn push(&mut self, samples: &[f32], stop: &dyn Fn() -> bool) -> Result<(), AudioError> {
        self.frames_in += samples.len();
        let Some(fft) = self.fft.as_mut() else {
            self.out.extend_from_slice(samples);
            return Ok(());
        };
        self.pending.extend_from_slice(samples);
        let mut at = 0;
        while self.pending.len() - at >= fft.input_frames_next() {
            if stop() {
                return Err(AudioError::Stopped);
            }
            let n = fft.input_frames_next();
            let produced = run(fft, &self.pending[at..at + n], None, &mut self.scratch)?;
            keep(&mut self.out, &self.scratch[..produced], &mut self.delay);
            at += n;
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// The rest of the input, and zeros until the output is as long as the
    /// input (the resampler's delay flushed out).
    fn finish(mut self) -> Result<Vec<f32>, AudioError> {
        let Some(fft) = self.fft.as_mut() else { return Ok(self.out) };
        let expected = (self.frames_in as f64 * self.ratio).round().max(1.0) as usize;
        let mut partial = Some(self.pending.len());
        while self.out.len() < expected {
            let input = if partial.is_some() { &self.pending[..] } else { &[][..] };
            let produced = run(fft, input, Some(partial.take().unwrap_or(0)), &mut self.scratch)?;
            keep(&mut self.out, &self.scratch[..produced], &mut self.delay);
        }
        self.out.truncate(expected);
        Ok(self.out)
    }
}

/// One resampler run over `input` (`partial`: fewer frames than a run takes).
fn run(
    fft: &mut Fft<f32>,
    input: &[f32],
    partial: Option<usize>,
    out: &mut [f32],
) -> Result<usize, AudioError> {
    let broken = |e: &dyn std::fmt::Display| AudioError::Corrupt(format!("resampling failed: {e}"));
    let adapter_in = SequentialSlice::new(input, 1, input.len()).map_err(|e| broken(&e))?;
    let frames = out.len();
    let mut adapter_out = SequentialSlice::new_mut(out, 1, frames).map_err(|e| broken(&e))?;
    let indexing = partial.map(|n| Indexing::new().partial_len(n));
    let (_, produced) =
        fft.process_into_buffer(&adapter_in, &mut adapter_out, indexing.as_ref()).map_err(|e| broken(&e))?;
    Ok(produced)
}

/// Append `produced` to `out`, first dropping what is left of `delay`.
fn keep(out: &mut Vec<f32>, produced: &[f32], delay: &mut usize) {
    let skip = (*delay).min(produced.len());
    *delay -= skip;
    out.extend_from_slice(&produced[skip..]);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn limits(max_seconds: f64) -> DecodeLimits {
        DecodeLimits { max_seconds, max_sample_rate: 192_000 }
    }

    fn never() -> bool {
        false
    }

    /// A 16-bit PCM WAV of a sine, `channels` interleaved copies.
    fn wav(rate: u32, channels: u16, seconds: f64, hz: f64) -> Vec<u8> {
        let frames = (seconds * f64::from(rate)) as u32;
        let data = frames * u32::from(channels) * 2;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
        out.extend_from_slice(&(channels * 2).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data.to_le_bytes());
        for i in 0..frames {
            let v =
                ((2.0 * std::f64::consts::PI * hz * f64::from(i) / f64::from(rate)).sin() * 16000.0) as i16;
            for _ in 0..channels {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn any_rate_and_channel_count_becomes_16k_mono() {
        for (rate, channels) in [(16_000, 1), (44_100, 2), (48_000, 6), (8_000, 1), (22_050, 2)] {
            let pcm = decode(&wav(rate, channels, 1.5, 440.0), limits(60.0), &never).unwrap();
            assert!((pcm.seconds() - 1.5).abs() < 0.01, "{rate} Hz × {channels}: {}", pcm.seconds());
            // Still a 440 Hz sine of the same amplitude: count zero crossings.
            let crossings = pcm.samples.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
            assert!((crossings as f64 - 1320.0).abs() < 10.0, "{rate} Hz: {crossings} crossings");
            let peak = pcm.samples[1000..20000].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((peak - 16000.0 / 32768.0).abs() < 0.02, "{rate} Hz: peak {peak}");
        }
    }

    /// A committed clip (tests/fixtures/audio: 8.5 s of espeak-ng English,
    /// encoded by ffmpeg as phones and browsers do).
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../tests/fixtures/audio/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn aac_in_mp4_and_opus_in_ogg_and_webm_decode() {
        for name in [
            "english-aac.m4a",
            "english-aac-fragmented.m4a",
            "english-video.mp4",
            "english-opus.ogg",
            "english-opus.webm",
            "english-opus-live.webm",
        ] {
            let pcm = decode(&fixture(name), limits(60.0), &never).unwrap();
            // Encoders pad a few milliseconds at either end.
            assert!((pcm.seconds() - 8.54).abs() < 0.1, "{name}: {} s", pcm.seconds());
            let energy = pcm.samples.iter().map(|v| v * v).sum::<f32>() / pcm.samples.len() as f32;
            assert!(energy > 1e-3, "{name}: silent ({energy})");
        }
        // Apple Lossless (iPhone Voice Memos' lossless setting): the clip's first 2 s.
        let alac = decode(&fixture("english-alac-2s.m4a"), limits(60.0), &never).unwrap();
        assert!((alac.seconds() - 2.0).abs() < 0.01, "{} s", alac.seconds());
        assert!(alac.samples.iter().any(|v| v.abs() > 0.1));
    }

    /// A fuzzer's first moves, kept as a test: in each container, 4 bytes
    /// at a time (at 32 offsets) set to all ones, zero, or a large
    /// positive value. Whatever comes out, decoding returns (no panic, no
    /// abort on an allocation) with audio or a clear error.
    #[test]
    fn damaged_containers_are_errors_or_audio_never_a_crash() {
        for name in [
            "english-aac.m4a",
            "english-aac-fragmented.m4a",
            "english-opus.webm",
            "english-opus-live.webm",
            "english-opus.ogg",
            "english-alac-2s.m4a",
        ] {
            let file = fixture(name);
            let mut outcomes = [0usize; 2];
            for at in (0..file.len() - 4).step_by(file.len() / 32) {
                for word in [[0xFF; 4], [0; 4], [0x7F, 0xFF, 0xFF, 0xF0]] {
                    let mut damaged = file.clone();
                    damaged[at..at + 4].copy_from_slice(&word);
                    // 3 s of the 8.5 s clip at most: the rest is TooLong.
                    match decode(&damaged, limits(3.0), &never) {
                        Ok(pcm) if pcm.seconds() <= 3.0 => outcomes[0] += 1,
                        Ok(pcm) => panic!("{name} at {at}: {} s", pcm.seconds()),
                        Err(AudioError::TooLong { .. }) => outcomes[0] += 1,
                        Err(_) => outcomes[1] += 1,
                    }
                }
            }
            assert!(outcomes[0] > 0, "{name}: no damaged copy decoded at all: {outcomes:?}");
        }
    }

    #[test]
    fn bad_audio_is_a_clear_error() {
        assert_eq!(decode(b"not audio at all", limits(60.0), &never), Err(AudioError::Unsupported));
        assert_eq!(decode(&[], limits(60.0), &never), Err(AudioError::Unsupported));
        let long = wav(16_000, 1, 3.0, 440.0);
        assert_eq!(decode(&long, limits(2.0), &never), Err(AudioError::TooLong { limit: 2.0 }));
        let header_only = &long[..44];
        assert!(matches!(
            decode(header_only, limits(60.0), &never),
            Err(AudioError::Empty | AudioError::Corrupt(_))
        ));
        // Truncated mid-data: what is there decodes.
        let cut = decode(&long[..44 + 16_000], limits(60.0), &never).unwrap();
        assert!((cut.seconds() - 0.5).abs() < 0.01);
    }

    #[test]
    fn sample_rates_outside_the_bounds_are_refused_from_the_header() {
        // A header claiming 4 GHz (or 400 kHz, or 1 Hz) is refused, not
        // resampled to nothing.
        for rate in [4_000_000_000u32, 400_000, 1] {
            let mut file = wav(16_000, 1, 0.1, 440.0);
            file[24..28].copy_from_slice(&rate.to_le_bytes());
            assert_eq!(
                decode(&file, limits(60.0), &never),
                Err(AudioError::SampleRate { rate, limit: 192_000 }),
                "{rate} Hz"
            );
        }
    }

    #[test]
    fn resampling_cost_is_linear_and_stops_when_asked() {
        // 20 s at the highest rate: one pass, not a sinc per output sample.
        let file = wav(192_000, 1, 20.0, 440.0);
        let started = std::time::Instant::now();
        let pcm = decode(&file, limits(60.0), &never).unwrap();
        assert_eq!(pcm.samples.len(), 320_000);
        let crossings = pcm.samples.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        assert!((crossings as f64 - 17_600.0).abs() < 20.0, "{crossings} crossings");
        // Generous for a debug build on a busy machine; the old resampler took minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
        // Asked to stop, it stops at the next packet.
        let calls = std::cell::Cell::new(0);
        let stop = || {
            calls.set(calls.get() + 1);
            calls.get() > 3
        };
        assert_eq!(decode(&file, limits(60.0), &stop), Err(AudioError::Stopped));
    }
}
