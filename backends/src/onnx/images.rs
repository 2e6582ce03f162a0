//! Image input: `data:` URLs, base64 and raw bytes, decoded through the
//! `image` crate (PNG, JPEG, WebP) with the pixel limit checked from the
//! header before any pixel is decoded (decompression bombs), and the EXIF
//! orientation applied.

use std::io::Cursor;

use base64::Engine as _;
use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::BackendError;

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::InvalidInput(message.into())
}

/// A decoder's error as the client sees it: what is wrong, in general
/// terms; the decoder's own words (chunk types, CRCs) go to the debug log.
fn broken(what: &'static str) -> impl FnOnce(image::ImageError) -> BackendError {
    move |error| {
        tracing::debug!(%error, "{what}");
        match error {
            image::ImageError::Limits(_) => invalid("image exceeds the decoder's memory limit"),
            image::ImageError::Unsupported(_) => {
                invalid("unsupported image encoding; send PNG, JPEG or WebP")
            }
            _ => invalid(what),
        }
    }
}

/// JPEG data ends with the end-of-image marker (possibly followed by
/// padding); without it the file was cut short, and the decoder would fill
/// the missing rows in rather than fail.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// The bytes of an image given as a `data:` URL (`data:image/png;base64,...`)
/// or bare base64. Remote URLs are refused: fetching them from the gateway
/// would let any client make it call any address.
pub fn bytes_from_url(url: &str) -> Result<Vec<u8>, BackendError> {
    let url = url.trim();
    let payload = if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| invalid("malformed data: URL (no ',')"))?;
        if !meta.ends_with(";base64") {
            return Err(invalid("data: URLs must be base64-encoded (data:image/png;base64,...)"));
        }
        data
    } else if url.starts_with("http://") || url.starts_with("https://") {
        return Err(invalid(
            "image URLs are not fetched; send the image as a data: URL (data:image/png;base64,...)",
        ));
    } else {
        url
    };
    let compact: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| invalid(format!("image is not valid base64: {e}")))
}

/// Width and height from the image's header, without decoding it.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), BackendError> {
    if bytes.is_empty() {
        return Err(invalid("image is empty"));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| invalid("image cannot be read"))?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP)
    ) {
        return Err(invalid("unsupported or unrecognised image format; send PNG, JPEG or WebP"));
    }
    let (width, height) = reader.into_dimensions().map_err(broken("image header is corrupt"))?;
    if width == 0 || height == 0 {
        return Err(invalid("image has zero size"));
    }
    Ok((width, height))
}

/// Decode an image, refusing more than `max_pixels` before decoding it.
pub(crate) fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, BackendError> {
    if bytes.is_empty() {
        return Err(invalid("image is empty"));
    }
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|_| invalid("image cannot be read"))
    };
    let probe = reader()?;
    match probe.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP) => {}
        Some(other) => {
            return Err(invalid(format!("unsupported image format {other:?}; send PNG, JPEG or WebP")))
        }
        None => return Err(invalid("unrecognised image format; send PNG, JPEG or WebP")),
    }
    let (width, height) = probe.into_dimensions().map_err(broken("image header is corrupt"))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(invalid("image has zero size"));
    }
    if pixels > max_pixels {
        return Err(invalid(format!(
            "image is {width}x{height} = {pixels} pixels; the limit is {max_pixels}"
        )));
    }
    let mut reader = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // RGBA at 16 bits per channel, and the decoder's own buffers.
    limits.max_alloc = Some(pixels.saturating_mul(16).max(64 << 20));
    reader.limits(limits);
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(invalid("image is truncated (the JPEG has no end-of-image marker)"));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_holds_its_blocks(bytes) {
        return Err(invalid("image is truncated (the JPEG holds less data than its size needs)"));
    }
    let mut decoder = reader.into_decoder().map_err(broken("image is corrupt or truncated"))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(broken("image is corrupt or truncated"))?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Whether a JPEG's compressed data could hold every 8×8 block its frame
/// header declares: each block costs at least one bit (its DC code) in any
/// sequential or progressive JPEG. The decoder fills missing blocks in with
/// grey, so a header declaring 5000×5000 followed by a few bytes would
/// otherwise cost a whole 5000×5000 image of work and be answered as one.
fn jpeg_holds_its_blocks(bytes: &[u8]) -> bool {
    let mut at = 2;
    let mut blocks: Option<u64> = None;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return false;
        }
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1;
            continue;
        }
        let length = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let segment = at + 4..(at + 2 + length).min(bytes.len());
        match marker {
            // SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let frame = &bytes[segment];
                if frame.len() < 6 {
                    return false;
                }
                let height = u64::from(u16::from_be_bytes([frame[1], frame[2]]));
                let width = u64::from(u16::from_be_bytes([frame[3], frame[4]]));
                let components: Vec<(u64, u64)> = frame[6..]
                    .chunks_exact(3)
                    .take(usize::from(frame[5]))
                    .map(|c| (u64::from(c[1] >> 4).max(1), u64::from(c[1] & 15).max(1)))
                    .collect();
                let h_max = components.iter().map(|c| c.0).max().unwrap_or(1);
                let v_max = components.iter().map(|c| c.1).max().unwrap_or(1);
                blocks = Some(
                    components
                        .iter()
                        .map(|&(h, v)| (width * h).div_ceil(8 * h_max) * (height * v).div_ceil(8 * v_max))
                        .sum(),
                );
            }
            // Start of scan: the compressed data follows to the end.
            0xDA => {
                let data = bytes.len().saturating_sub(segment.end) as u64;
                return blocks.is_some_and(|blocks| data * 8 >= blocks);
            }
            _ => {}
        }
        at += 2 + length;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::new_rgb8(width, height)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_data_urls_and_refuses_what_it_should() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(png(3, 2));
        let bytes = bytes_from_url(&format!("data:image/png;base64,{b64}")).unwrap();
        let image = decode(&bytes, 100).unwrap();
        assert_eq!((image.width(), image.height()), (3, 2));
        assert!(bytes_from_url("https://example.com/a.png").is_err());
        assert!(bytes_from_url("data:image/png;base64,@@@").is_err());
        assert!(bytes_from_url("data:image/png,rawtext").is_err());
        assert!(decode(&bytes, 5).is_err(), "over the pixel limit");
        assert!(decode(&bytes[..bytes.len() / 2], 100).is_err(), "truncated");
        assert!(decode(b"GIF89a\x01\x00\x01\x00", 100).is_err(), "unsupported format");
        assert!(decode(b"not an image", 100).is_err());
        assert!(decode(&[], 100).is_err());
        // A JPEG cut in its data is refused, not filled in.
        let mut jpeg = Vec::new();
        DynamicImage::new_rgb8(64, 64)
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(decode(&jpeg, 10_000).is_ok());
        let error = decode(&jpeg[..jpeg.len() * 3 / 4], 10_000).unwrap_err();
        assert!(error.to_string().contains("truncated") || error.to_string().contains("corrupt"), "{error}");
        // A header declaring far more than its data holds, ending in an
        // end-of-image marker, is refused too, not filled in with grey.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let mut big = jpeg.clone();
        big[sof + 5..sof + 7].copy_from_slice(&5000u16.to_be_bytes());
        big[sof + 7..sof + 9].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(dimensions(&big).unwrap(), (5000, 5000));
        let error = decode(&big, 25_000_000).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("truncated"), "{error}");
        // The decoder's own words stay out of the message.
        let mut png = png(3, 2);
        png[30] ^= 0xFF;
        let error = decode(&png, 100).unwrap_err().to_string();
        assert!(!error.contains("CRC") && !error.contains("ChunkType"), "{error}");
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 4×2 JPEG with an APP1 Exif segment saying "rotate 90° clockwise" (6).
        let mut jpeg = Vec::new();
        DynamicImage::new_rgb8(4, 2).write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one IFD entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&[6, 0, 0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend_from_slice(&[0xFF, 0xE1]);
        with_exif.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        with_exif.extend_from_slice(&app1);
        with_exif.extend_from_slice(&jpeg[2..]);
        let image = decode(&with_exif, 100).unwrap();
        assert_eq!((image.width(), image.height()), (2, 4));
        assert_eq!(dimensions(&with_exif).unwrap(), (4, 2), "the header's size, before orientation");
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // A PNG header claiming 100000 x 100000 pixels, with no data behind it.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let error = decode(&bomb, 25_000_000).unwrap_err();
        assert!(error.to_string().contains("limit") || error.to_string().contains("corrupt"), "{error}");
    }
}
