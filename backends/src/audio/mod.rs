//! Audio input: container facts from the first bytes (format, WAV layout),
//! [`decode`] to 16 kHz mono samples, and [`split`] into chunks a speech
//! model takes.

mod decode;
mod metadata;
mod split;

pub use decode::{decode, AudioError, DecodeLimits, Pcm, ACCEPTED, SAMPLE_RATE};
pub use split::split;

/// Why bytes are not a WAV file [`WavInfo::parse`] can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF/WAVE file")]
    NotWav,
    #[error("truncated WAV: the fmt chunk is cut short")]
    ShortFormat,
    #[error("malformed WAV: the data chunk comes before the fmt chunk")]
    DataFirst,
    #[error("malformed WAV: zero channels, sample rate or sample size")]
    Zero,
    #[error("truncated WAV: no data chunk")]
    NoData,
}

/// A container format recognised from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Wav,
    Flac,
    Mp3,
    Ogg,
    WebM,
    Mp4,
}

impl AudioFormat {
    /// Recognise a container from its magic bytes.
    pub fn sniff(bytes: &[u8]) -> Option<AudioFormat> {
        let at = |range: std::ops::Range<usize>, magic: &[u8]| bytes.get(range) == Some(magic);
        if at(0..4, b"RIFF") && at(8..12, b"WAVE") {
            Some(AudioFormat::Wav)
        } else if at(0..4, b"fLaC") {
            Some(AudioFormat::Flac)
        } else if at(0..4, b"OggS") {
            Some(AudioFormat::Ogg)
        } else if at(0..4, &[0x1A, 0x45, 0xDF, 0xA3]) {
            Some(AudioFormat::WebM)
        } else if at(4..8, b"ftyp") {
            Some(AudioFormat::Mp4)
        } else if at(0..3, b"ID3") || matches!(bytes, [0xFF, b, ..] if b & 0xE0 == 0xE0) {
            Some(AudioFormat::Mp3)
        } else {
            None
        }
    }
}

/// The layout of a WAV file's PCM data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WavInfo {
    pub channels: u16,
    pub sample_rate: u32,
    pub bits_per_sample: u16,
    /// Bytes of sample data actually present.
    pub data_bytes: usize,
}

impl WavInfo {
    /// Read a RIFF/WAVE header; errors say what is wrong with the file.
    pub fn parse(bytes: &[u8]) -> Result<WavInfo, WavError> {
        if AudioFormat::sniff(bytes) != Some(AudioFormat::Wav) {
            return Err(WavError::NotWav);
        }
        let u16_at = |p: usize| bytes.get(p..p + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |p: usize| bytes.get(p..p + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let mut pos = 12usize;
        let mut format = None;
        while let (Some(id), Some(size)) = (bytes.get(pos..pos + 4), u32_at(pos + 4)) {
            let body = pos + 8;
            let size = size as usize;
            if id == b"fmt " {
                match (u16_at(body + 2), u32_at(body + 4), u16_at(body + 14)) {
                    (Some(channels), Some(sample_rate), Some(bits)) => {
                        format = Some((channels, sample_rate, bits))
                    }
                    _ => return Err(WavError::ShortFormat),
                }
            } else if id == b"data" {
                let (channels, sample_rate, bits_per_sample) = format.ok_or(WavError::DataFirst)?;
                if channels == 0 || sample_rate == 0 || bits_per_sample == 0 {
                    return Err(WavError::Zero);
                }
                let data_bytes = size.min(bytes.len().saturating_sub(body));
                return Ok(WavInfo { channels, sample_rate, bits_per_sample, data_bytes });
            }
            pos = body.saturating_add(size).saturating_add(size & 1);
        }
        Err(WavError::NoData)
    }

    /// Length of the audio in seconds.
    pub fn duration(&self) -> f64 {
        let frame = f64::from(self.channels) * f64::from(self.bits_per_sample) / 8.0;
        self.data_bytes as f64 / (frame * f64::from(self.sample_rate))
    }
}

/// 16-bit PCM WAV of mono samples in [-1, 1] (remote backends send the
/// decoded audio upstream in this form).
pub(crate) fn wav_bytes(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_bytes_round_trip_through_the_decoder() {
        let samples: Vec<f32> = (0..1600).map(|i| ((i as f32) * 0.05).sin() * 0.5).collect();
        let pcm = decode::decode(
            &wav_bytes(&samples, SAMPLE_RATE),
            DecodeLimits { max_seconds: 60.0, max_sample_rate: 48_000 },
            &|| false,
        )
        .unwrap();
        assert_eq!(pcm.samples.len(), samples.len());
        assert!(pcm.samples.iter().zip(&samples).all(|(a, b)| (a - b).abs() < 1e-3));
    }

    /// A 16-bit mono WAV of `data` bytes of silence.
    pub fn wav(sample_rate: u32, data: usize) -> Vec<u8> {
        wav_bytes(&vec![0.0; data / 2], sample_rate)
    }

    #[test]
    fn reads_wav_duration_and_rejects_broken_files() {
        let info = WavInfo::parse(&wav(16_000, 32_000)).unwrap();
        assert_eq!((info.channels, info.sample_rate, info.bits_per_sample), (1, 16_000, 16));
        assert!((info.duration() - 1.0).abs() < 1e-9);
        assert!(WavInfo::parse(&wav(16_000, 32_000)[..30]).is_err());
        assert!(WavInfo::parse(b"RIFF\0\0\0\0WAVE").is_err());
        assert!(WavInfo::parse(b"hello").is_err());
    }

    #[test]
    fn wav_errors_say_what_is_wrong() {
        assert_eq!(WavInfo::parse(b"hello").unwrap_err().to_string(), "not a RIFF/WAVE file");
        assert_eq!(
            WavInfo::parse(b"RIFF\0\0\0\0WAVE").unwrap_err().to_string(),
            "truncated WAV: no data chunk"
        );
    }

    #[test]
    fn sniffs_containers() {
        assert_eq!(AudioFormat::sniff(&wav(8000, 2)), Some(AudioFormat::Wav));
        assert_eq!(AudioFormat::sniff(b"fLaC\0\0"), Some(AudioFormat::Flac));
        assert_eq!(AudioFormat::sniff(b"ID3\x04"), Some(AudioFormat::Mp3));
        assert_eq!(AudioFormat::sniff(b"OggS\0"), Some(AudioFormat::Ogg));
        assert_eq!(AudioFormat::sniff(b"\0\0\0\x20ftypM4A "), Some(AudioFormat::Mp4));
        assert_eq!(AudioFormat::sniff(b"%PDF-1.4"), None);
        assert_eq!(AudioFormat::sniff(b""), None);
    }
}
