//! Any supported audio file to 16 kHz mono `f32`: WAV, FLAC, MP3 and
//! OGG/Vorbis through `symphonia`, at any sample rate and channel count,
//! downmixed and resampled with a windowed-sinc filter.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The sample rate speech models take.
pub const SAMPLE_RATE: u32 = 16_000;

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

/// Why audio could not be used; each is the client's 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudioError {
    #[error("unsupported or unrecognised audio format: send WAV, FLAC, MP3 or OGG/Vorbis")]
    Unsupported,
    #[error("the audio cannot be decoded: {0}")]
    Corrupt(String),
    #[error("the audio contains no samples")]
    Empty,
    #[error("the audio is longer than the limit of {limit} seconds")]
    TooLong { limit: f64 },
}

/// Decode and convert to 16 kHz mono, stopping as soon as the audio is
/// longer than `max_seconds` (so an hour-long upload costs no more than
/// the limit to refuse).
pub fn decode(bytes: &[u8], max_seconds: f64) -> Result<Pcm, AudioError> {
    super::metadata::check(bytes)?;
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
    if rate == 0 {
        return Err(AudioError::Corrupt("sample rate 0".into()));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|_| AudioError::Unsupported)?;
    let max_frames = (max_seconds * f64::from(rate)).ceil() as usize;
    let mut mono: Vec<f32> = Vec::new();
    let mut buffer: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => {
                // A truncated file decodes to where it ends, if anything came out.
                if mono.is_empty() {
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
        let channels = spec.channels.count().max(1);
        let samples = buffer.get_or_insert_with(|| SampleBuffer::new(decoded.capacity() as u64, spec));
        if samples.capacity() < decoded.capacity() * channels {
            *samples = SampleBuffer::new(decoded.capacity() as u64, spec);
        }
        samples.copy_interleaved_ref(decoded);
        mono.extend(
            samples.samples().chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        if mono.len() > max_frames {
            return Err(AudioError::TooLong { limit: max_seconds });
        }
    }
    if mono.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok(Pcm { samples: resample(&mono, rate, SAMPLE_RATE) })
}

/// Band-limited resampling: a Hann-windowed sinc, cut off at the lower
/// Nyquist frequency, 16 zero crossings each side.
fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    const HALF: f64 = 16.0;
    let ratio = f64::from(to) / f64::from(from);
    let cutoff = ratio.min(1.0);
    let half_width = HALF / cutoff;
    let out_len = ((input.len() as f64) * ratio).round().max(1.0) as usize;
    (0..out_len)
        .map(|n| {
            let t = n as f64 / ratio;
            let (lo, hi) = (
                (t - half_width).ceil().max(0.0) as usize,
                ((t + half_width).floor() as usize).min(input.len() - 1),
            );
            let (mut sum, mut weight) = (0.0f64, 0.0f64);
            for (k, &x) in input.iter().enumerate().take(hi + 1).skip(lo) {
                let d = (t - k as f64) * cutoff;
                let sinc = if d.abs() < 1e-9 {
                    1.0
                } else {
                    (std::f64::consts::PI * d).sin() / (std::f64::consts::PI * d)
                };
                let window = 0.5 + 0.5 * (std::f64::consts::PI * d / HALF).cos();
                let w = sinc * window;
                sum += f64::from(x) * w;
                weight += w;
            }
            if weight.abs() < 1e-12 {
                0.0
            } else {
                (sum / weight) as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let pcm = decode(&wav(rate, channels, 1.5, 440.0), 60.0).unwrap();
            assert!((pcm.seconds() - 1.5).abs() < 0.01, "{rate} Hz × {channels}: {}", pcm.seconds());
            // Still a 440 Hz sine of the same amplitude: count zero crossings.
            let crossings = pcm.samples.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
            assert!((crossings as f64 - 1320.0).abs() < 10.0, "{rate} Hz: {crossings} crossings");
            let peak = pcm.samples[1000..20000].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((peak - 16000.0 / 32768.0).abs() < 0.02, "{rate} Hz: peak {peak}");
        }
    }

    #[test]
    fn bad_audio_is_a_clear_error() {
        assert_eq!(decode(b"not audio at all", 60.0), Err(AudioError::Unsupported));
        assert_eq!(decode(&[], 60.0), Err(AudioError::Unsupported));
        let long = wav(16_000, 1, 3.0, 440.0);
        assert_eq!(decode(&long, 2.0), Err(AudioError::TooLong { limit: 2.0 }));
        let header_only = &long[..44];
        assert!(matches!(decode(header_only, 60.0), Err(AudioError::Empty | AudioError::Corrupt(_))));
        // Truncated mid-data: what is there decodes.
        let cut = decode(&long[..44 + 16_000], 60.0).unwrap();
        assert!((cut.seconds() - 0.5).abs() < 0.01);
    }
}
