//! A FLAC file's Vorbis comments, checked before symphonia reads them:
//! symphonia 0.5 allocates each comment's declared length (a `u32`, up to
//! 4 GiB) before it reads the bytes, so a 1 KB upload could make the
//! gateway allocate 4 GiB (found by the `audio_decode` fuzz target). A
//! comment must fit in its metadata block, and the block in the file.

/// `Err` (why) when a FLAC file declares a Vorbis comment longer than its block;
/// any other input passes (symphonia judges it). symphonia's probe skips
/// whatever comes before the first `fLaC` marker, so the check starts there.
pub(super) fn check(bytes: &[u8]) -> Result<(), &'static str> {
    let Some(marker) = bytes.windows(4).position(|w| w == b"fLaC") else { return Ok(()) };
    let mut rest = &bytes[marker + 4..];
    while let [header, a, b, c, tail @ ..] = rest {
        let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
        let body = tail.get(..len).unwrap_or(tail);
        // Block type 4 is VORBIS_COMMENT; the high bit marks the last block.
        if header & 0x7F == 4 && !comments_fit(body) {
            return Err("a FLAC comment is longer than its metadata block");
        }
        if header & 0x80 != 0 {
            break;
        }
        rest = tail.get(len..).unwrap_or_default();
    }
    Ok(())
}

/// Whether each comment's declared length fits in what is left of the
/// block. What is cut short otherwise is left to symphonia, which fails on
/// it without allocating (it skips the vendor string unread).
fn comments_fit(mut body: &[u8]) -> bool {
    fn field(body: &mut &[u8]) -> Option<usize> {
        let (n, tail) = body.split_first_chunk::<4>()?;
        *body = tail;
        Some(u32::from_le_bytes(*n) as usize)
    }
    let Some(vendor) = field(&mut body) else { return true };
    let Some(tail) = body.get(vendor..) else { return true };
    body = tail;
    let Some(count) = field(&mut body) else { return true };
    for _ in 0..count {
        let Some(len) = field(&mut body) else { return true };
        match body.get(len..) {
            Some(tail) => body = tail,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {

    fn limits() -> super::super::DecodeLimits {
        super::super::DecodeLimits { max_seconds: 60.0, max_sample_rate: 192_000 }
    }
    use super::super::AudioError;
    use super::*;

    /// `fLaC`, a STREAMINFO block, then a VORBIS_COMMENT block (the last)
    /// holding one comment that declares `declared` bytes and has `text`.
    fn flac(declared: u32, text: &[u8]) -> Vec<u8> {
        let mut comment = Vec::new();
        comment.extend_from_slice(&6u32.to_le_bytes());
        comment.extend_from_slice(b"vendor");
        comment.extend_from_slice(&1u32.to_le_bytes());
        comment.extend_from_slice(&declared.to_le_bytes());
        comment.extend_from_slice(text);
        let mut out = b"fLaC".to_vec();
        out.extend_from_slice(&[0x00, 0, 0, 34]);
        out.extend_from_slice(&[
            0x10, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0, 0x03, 0xE8, 0x00, 0xF0, 0, 0, 0, 0,
        ]);
        out.extend_from_slice(&[0; 16]);
        out.push(0x84);
        out.extend_from_slice(&(comment.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&comment);
        out
    }

    #[test]
    fn a_flac_comment_longer_than_its_block_is_refused_before_symphonia_allocates_it() {
        // Found by fuzzing: symphonia would allocate the 4 GiB declared here.
        let bomb = flac(0xFFFF_FFF0, b"TITLE=x");
        assert!(check(&bomb).is_err());
        assert!(matches!(super::super::decode(&bomb, limits(), &|| false), Err(AudioError::Corrupt(_))));
        // Found next: junk before the marker, which symphonia's probe skips.
        let mut behind_junk = b"fLh\xff\xdf\0aC".to_vec();
        behind_junk.extend_from_slice(&bomb);
        assert!(matches!(
            super::super::decode(&behind_junk, limits(), &|| false),
            Err(AudioError::Corrupt(_))
        ));
        assert_eq!(check(&flac(7, b"TITLE=x")), Ok(()));
        assert!(check(&flac(8, b"TITLE=x")).is_err(), "one byte past the block");
        // Not FLAC, or cut short: left to symphonia.
        assert_eq!(check(b"RIFF"), Ok(()));
        assert_eq!(check(&flac(7, b"TITLE=x")[..50]), Ok(()));
    }
}
