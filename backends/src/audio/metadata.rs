//! Declared lengths in an audio file's metadata, checked before symphonia
//! reads them: symphonia 0.5 allocates each length it reads (a `u32`, up
//! to 4 GiB) before it reads the bytes, so a 1 KB upload could make the
//! gateway ask for 4 GiB, and abort where the allocation is refused (found
//! by the `audio_decode` fuzz target). Checked, wherever symphonia would
//! trust them: Vorbis comments and pictures in FLAC, comment packets in
//! OGG (Vorbis, Opus and FLAC streams, packets reassembled from their pages
//! as symphonia does), and WAV `LIST`/`INFO` entries. Each declared length
//! must fit in what holds it.
//!
//! The checks run whatever the container turns out to be (a FLAC marker
//! inside an OGG file is checked as FLAC too): a file refused that way is
//! not a valid file of either kind.

use std::collections::HashMap;

use symphonia::core::checksum::Crc32;
use symphonia::core::io::Monitor;

/// `Err` (why) when a declared metadata length runs past what holds it;
/// any other input passes (symphonia judges it).
pub(super) fn check(bytes: &[u8]) -> Result<(), &'static str> {
    flac(bytes)?;
    ogg(bytes)?;
    wav(bytes)
}

/// Native FLAC: symphonia's probe skips whatever comes before the first
/// `fLaC` marker, so the walk through the metadata blocks starts there.
fn flac(bytes: &[u8]) -> Result<(), &'static str> {
    let Some(marker) = find(bytes, 0, b"fLaC") else { return Ok(()) };
    let mut rest = &bytes[marker + 4..];
    while let [header, a, b, c, tail @ ..] = rest {
        let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
        let body = tail.get(..len).unwrap_or(tail);
        if !flac_block_fits(*header, body) {
            return Err("a FLAC metadata field is longer than its block");
        }
        // The high bit marks the last block.
        if header & 0x80 != 0 {
            break;
        }
        rest = tail.get(len..).unwrap_or_default();
    }
    Ok(())
}

/// Whether a FLAC metadata block's fields fit in it: block type 4 is
/// VORBIS_COMMENT, 6 is PICTURE; the others symphonia reads without
/// allocating what they declare.
fn flac_block_fits(header: u8, body: &[u8]) -> bool {
    match header & 0x7F {
        4 => comments_fit(body),
        6 => picture_fits(body),
        _ => true,
    }
}

/// The next `u32` of `body` and what follows it.
fn field(body: &mut &[u8], big_endian: bool) -> Option<usize> {
    let (n, tail) = body.split_first_chunk::<4>()?;
    *body = tail;
    Some(if big_endian { u32::from_be_bytes(*n) } else { u32::from_le_bytes(*n) } as usize)
}

/// Whether each comment's declared length fits in what is left of the
/// block. What is cut short otherwise is left to symphonia, which fails on
/// it without allocating (it skips the vendor string unread).
fn comments_fit(mut body: &[u8]) -> bool {
    let Some(vendor) = field(&mut body, false) else { return true };
    let Some(tail) = body.get(vendor..) else { return true };
    body = tail;
    let Some(count) = field(&mut body, false) else { return true };
    for _ in 0..count {
        let Some(len) = field(&mut body, false) else { return true };
        match body.get(len..) {
            Some(tail) => body = tail,
            None => return false,
        }
    }
    true
}

/// Whether a FLAC PICTURE block's media type, description and data fit in
/// it (big-endian lengths; symphonia allocates each of the three).
fn picture_fits(mut body: &[u8]) -> bool {
    // The picture type, then media type and description, each after its length.
    let Some(_) = field(&mut body, true) else { return true };
    for _ in 0..2 {
        let Some(len) = field(&mut body, true) else { return true };
        match body.get(len..) {
            Some(tail) => body = tail,
            None => return false,
        }
    }
    // Width, height, depth and palette size, then the data's length.
    let Some(tail) = body.get(16..) else { return true };
    body = tail;
    match field(&mut body, true) {
        Some(len) => len <= body.len(),
        None => true,
    }
}

/// The first `needle` in `bytes` at or after `from`.
fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|at| from + at)
}

/// OGG's packet length bound in symphonia (a longer one fails there).
const OGG_MAX_PACKET: usize = 16 << 20;

/// OGG: pages are read as symphonia's page reader reads them (resync on the
/// capture pattern, the CRC checked, a bad page skipped) and each logical
/// stream's packets put back together as its `LogicalStream` does; every
/// complete packet that symphonia would read as comments is checked.
fn ogg(bytes: &[u8]) -> Result<(), &'static str> {
    let mut streams: HashMap<u32, Logical> = HashMap::new();
    let mut pos = 0;
    while let Some(at) = find(bytes, pos, b"OggS") {
        let Some(header) = bytes.get(at..at + 27) else { break };
        // A bad version or flags: symphonia goes on past the header it read.
        if header[4] != 0 || header[5] & 0xF8 != 0 {
            pos = at + 27;
            continue;
        }
        let segments = usize::from(header[26]);
        let Some(table) = bytes.get(at + 27..at + 27 + segments) else { break };
        let body_start = at + 27 + segments;
        let body_len = table.iter().map(|&s| usize::from(s)).sum::<usize>();
        let Some(body) = bytes.get(body_start..body_start + body_len) else { break };
        if !crc_matches(header, table, body) {
            // Resync just after this capture pattern.
            pos = at + 4;
            continue;
        }
        pos = body_start + body_len;
        let page = Page {
            continued: header[5] & 0x01 != 0,
            sequence: u32::from_le_bytes([header[18], header[19], header[20], header[21]]),
            table,
            body,
        };
        let serial = u32::from_le_bytes([header[14], header[15], header[16], header[17]]);
        streams.entry(serial).or_default().read(&page)?;
    }
    Ok(())
}

/// The CRC-32 (polynomial 0x04C11DB7, unreflected) an OGG page carries,
/// computed with its own field zeroed.
fn crc_matches(header: &[u8], table: &[u8], body: &[u8]) -> bool {
    let mut crc = Crc32::new(0);
    crc.process_buf_bytes(&header[..22]);
    crc.process_buf_bytes(&[0; 4]);
    crc.process_buf_bytes(&header[26..]);
    crc.process_buf_bytes(table);
    crc.process_buf_bytes(body);
    crc.crc() == u32::from_le_bytes([header[22], header[23], header[24], header[25]])
}

struct Page<'a> {
    continued: bool,
    sequence: u32,
    table: &'a [u8],
    body: &'a [u8],
}

/// One logical stream's packet assembly (symphonia's `LogicalStream`).
#[derive(Default)]
struct Logical {
    partial: Vec<u8>,
    last_sequence: Option<u32>,
    /// Its first packet was an OGG FLAC header: later packets are metadata blocks.
    flac: bool,
}

impl Logical {
    fn read(&mut self, page: &Page<'_>) -> Result<(), &'static str> {
        // A page out of order or after a gap drops what was held.
        if let Some(last) = self.last_sequence {
            if page.sequence < last || page.sequence - last > 1 {
                self.partial.clear();
            }
        }
        self.last_sequence = Some(page.sequence);
        let mut packets = Vec::new();
        let mut len = 0;
        for &segment in page.table {
            len += usize::from(segment);
            if segment < 255 {
                packets.push(len);
                len = 0;
            }
        }
        let mut body = page.body;
        let mut packets = packets.into_iter();
        if !page.continued {
            self.partial.clear();
        } else if self.partial.is_empty() {
            // A continuation with nothing to continue: its first packet is
            // dropped (a page that ends none is ignored whole).
            let Some(first) = packets.next() else { return Ok(()) };
            body = &body[first..];
        }
        for len in packets {
            let (packet, rest) = body.split_at(len);
            body = rest;
            self.partial.extend_from_slice(packet);
            let whole = std::mem::take(&mut self.partial);
            self.packet(&whole)?;
        }
        if !body.is_empty() {
            if self.partial.len() + body.len() > OGG_MAX_PACKET {
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(body);
            }
        }
        Ok(())
    }

    fn packet(&mut self, packet: &[u8]) -> Result<(), &'static str> {
        let fits = if let Some(comments) = packet.strip_prefix(b"\x03vorbis") {
            comments_fit(comments)
        } else if let Some(comments) = packet.strip_prefix(b"OpusTags") {
            comments_fit(comments)
        } else if packet.starts_with(b"\x7FFLAC") {
            self.flac = true;
            true
        } else if let (true, [header, _, _, _, block @ ..]) = (self.flac, packet) {
            flac_block_fits(*header, block)
        } else {
            true
        };
        if fits {
            Ok(())
        } else {
            Err("an OGG comment is longer than its packet")
        }
    }
}

/// WAV: the entries of each `LIST`/`INFO` chunk before the `data` chunk
/// (symphonia bounds an entry by its list's declared length, which nothing
/// bounds by the file).
fn wav(bytes: &[u8]) -> Result<(), &'static str> {
    let Some(marker) = find(bytes, 0, b"RIFF") else { return Ok(()) };
    let Some(mut rest) = bytes.get(marker + 12..) else { return Ok(()) };
    while let Some((id, len, body)) = chunk(rest) {
        if id == b"data" {
            break;
        }
        if let Some(mut entries) = body.strip_prefix(b"INFO").filter(|_| id == b"LIST") {
            while let Some((_, len, _)) = chunk(entries) {
                let Some(tail) = entries.get(8 + len..) else {
                    return Err("a WAV metadata entry is longer than the file");
                };
                // Entries are padded to an even length.
                entries = tail.get(len & 1..).unwrap_or_default();
            }
        }
        let Some(tail) = rest.get(8 + len + (len & 1)..) else { break };
        rest = tail;
    }
    Ok(())
}

/// A RIFF chunk's id, declared length and the bytes it has of its body.
fn chunk(bytes: &[u8]) -> Option<(&[u8], usize, &[u8])> {
    let (id, tail) = bytes.split_first_chunk::<4>()?;
    let (len, body) = tail.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    Some((id, len, body.get(..len).unwrap_or(body)))
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

    /// An OGG page of `serial` at `sequence`, its CRC computed; the last
    /// page (`flags` 0x04) ends at one 20 ms Opus frame after the pre-skip.
    fn page(serial: u32, sequence: u32, flags: u8, table: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = b"OggS".to_vec();
        out.extend_from_slice(&[0, flags]);
        let granule: u64 = if flags & 0x04 != 0 { 312 + 960 } else { 0 };
        out.extend_from_slice(&granule.to_le_bytes());
        out.extend_from_slice(&serial.to_le_bytes());
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(table.len() as u8);
        out.extend_from_slice(table);
        out.extend_from_slice(body);
        set_crc(&mut out, 0);
        out
    }

    /// Recompute the CRC of the page that starts at `at`.
    fn set_crc(bytes: &mut [u8], at: usize) {
        let segments = usize::from(bytes[at + 26]);
        let len =
            27 + segments + bytes[at + 27..at + 27 + segments].iter().map(|&s| usize::from(s)).sum::<usize>();
        bytes[at + 22..at + 26].fill(0);
        let mut crc = Crc32::new(0);
        crc.process_buf_bytes(&bytes[at..at + len]);
        bytes[at + 22..at + 26].copy_from_slice(&crc.crc().to_le_bytes());
    }

    /// The lacing values of one packet of `len` bytes that ends on its page.
    fn lacing(len: usize) -> Vec<u8> {
        let mut table = vec![255; len / 255];
        table.push((len % 255) as u8);
        table
    }

    /// An OGG Opus file: its identification header, then a comment packet
    /// with a vendor string of `vendor` bytes and one comment declaring
    /// `declared` bytes; the comment packet is cut into two pages after
    /// `split` bytes when `split` is set.
    fn opus(vendor: usize, declared: u32, split: Option<usize>) -> Vec<u8> {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 1, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&(vendor as u32).to_le_bytes());
        tags.extend(std::iter::repeat_n(b'v', vendor));
        tags.extend_from_slice(&1u32.to_le_bytes());
        tags.extend_from_slice(&declared.to_le_bytes());
        tags.extend_from_slice(b"TITLE=x");
        let mut out = page(7, 0, 0x02, &lacing(head.len()), &head);
        match split {
            None => out.extend(page(7, 1, 0, &lacing(tags.len()), &tags)),
            Some(at) => {
                assert_eq!(at % 255, 0, "a page ends a packet's segment");
                out.extend(page(7, 1, 0, &vec![255; at / 255], &tags[..at]));
                out.extend(page(7, 2, 0x01, &lacing(tags.len() - at), &tags[at..]));
            }
        }
        // One audio packet (a 20 ms silent Opus frame), on the last page.
        let sequence = if split.is_some() { 3 } else { 2 };
        out.extend(page(7, sequence, 0x04, &[3], &[0xF8, 0xFF, 0xFE]));
        out
    }

    /// The tags (`KEY=value`) and the number of pictures symphonia reads
    /// from a file, proving a test file is laid out as symphonia reads it.
    fn seen(bytes: &[u8]) -> Option<(Vec<String>, usize)> {
        use symphonia::core::formats::FormatOptions;
        use symphonia::core::io::MediaSourceStream;
        use symphonia::core::meta::MetadataOptions;
        use symphonia::core::probe::Hint;
        let source =
            MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes.to_vec())), Default::default());
        let mut probed = symphonia::default::get_probe()
            .format(&Hint::new(), source, &FormatOptions::default(), &MetadataOptions::default())
            .ok()?;
        let metadata = probed.format.metadata();
        let revision = metadata.current()?;
        let tags = revision.tags().iter().map(|t| format!("{}={}", t.key, t.value)).collect();
        Some((tags, revision.visuals().len()))
    }

    fn tags(bytes: &[u8]) -> Vec<String> {
        seen(bytes).map(|(tags, _)| tags).unwrap_or_default()
    }

    #[test]
    fn an_opus_comment_longer_than_its_packet_is_refused() {
        assert_eq!(check(&opus(1, 7, None)), Ok(()));
        assert_eq!(tags(&opus(1, 7, None)), ["TITLE=x"], "symphonia reads the test file's comment");
        assert!(check(&opus(1, 0xFFFF_FFF0, None)).is_err());
        assert!(check(&opus(1, 8, None)).is_err(), "one byte past the packet");
        assert!(matches!(
            super::super::decode(&opus(1, 0xFFFF_FFF0, None), limits(), &|| false),
            Err(AudioError::Corrupt(_))
        ));
        // A bad CRC: symphonia skips the page, and so does the check.
        let mut bad_crc = opus(1, 0xFFFF_FFF0, None);
        let tags_page = 27 + 1 + 19;
        bad_crc[tags_page + 27 + 1 + 2] ^= 1;
        assert_eq!(check(&bad_crc), Ok(()));
    }

    #[test]
    fn an_ogg_comment_is_checked_across_the_pages_it_spans() {
        // The comment's length field straddles the two pages: 8 + 4 + 240 + 4 = 256 bytes come before it.
        let fits = opus(240, 7, Some(255));
        assert_eq!(check(&fits), Ok(()));
        assert_eq!(tags(&fits), ["TITLE=x"], "symphonia joins the pages");
        assert!(check(&opus(240, 0xFFFF_FFF0, Some(255))).is_err());
        // The second page out of sequence: symphonia drops the start, and so does the check.
        let mut gap = opus(240, 0xFFFF_FFF0, Some(255));
        let second = gap.len() - (27 + 1 + 3) - (27 + 1 + 12);
        gap[second + 18] = 5;
        set_crc(&mut gap, second);
        assert_eq!(check(&gap), Ok(()));
    }

    #[test]
    fn an_unexpected_continuation_drops_its_first_packet_as_symphonia_does() {
        // The comment page marked as continuing a packet that never began:
        // symphonia drops its first (5-byte) packet and reads the comment after it.
        let with_junk_first = |declared: u32| {
            let mut file = opus(1, declared, None);
            let tags_page = 27 + 1 + 19;
            let tags_len = file.len() - tags_page - (27 + 1 + 3) - 27 - 1;
            let tags = file[tags_page + 28..tags_page + 28 + tags_len].to_vec();
            let mut table = lacing(5);
            table.extend(lacing(tags.len()));
            let mut body = b"junk!".to_vec();
            body.extend_from_slice(&tags);
            let tail = file.split_off(tags_page).split_off(28 + tags_len);
            file.extend(page(7, 1, 0x01, &table, &body));
            file.extend(tail);
            file
        };
        assert_eq!(check(&with_junk_first(7)), Ok(()));
        assert_eq!(
            tags(&with_junk_first(7)),
            ["TITLE=x"],
            "symphonia reads the comment after the dropped packet"
        );
        assert!(check(&with_junk_first(0xFFFF_FFF0)).is_err());
    }

    #[test]
    fn a_vorbis_file_declaring_a_huge_comment_is_refused() {
        let sine = include_bytes!("../../../fuzz/corpus/audio_decode/sine.ogg");
        assert_eq!(check(sine), Ok(()));
        let at = find(sine, 0, b"\x03vorbis").unwrap();
        let vendor = u32::from_le_bytes(sine[at + 7..at + 11].try_into().unwrap()) as usize;
        let first_comment = at + 11 + vendor + 4;
        let mut bomb = sine.to_vec();
        bomb[first_comment..first_comment + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let page_at = sine[..at].windows(4).rposition(|w| w == b"OggS").unwrap();
        set_crc(&mut bomb, page_at);
        assert!(check(&bomb).is_err());
        assert!(matches!(super::super::decode(&bomb, limits(), &|| false), Err(AudioError::Corrupt(_))));
    }

    #[test]
    fn a_flac_picture_longer_than_its_block_is_refused() {
        // sine.flac: STREAMINFO, then its last block, a VORBIS_COMMENT; a PICTURE follows that here.
        let sine = include_bytes!("../../../fuzz/corpus/audio_decode/sine.flac");
        let comment_at = 8 + 34;
        assert_eq!(sine[comment_at], 0x84);
        let comment_len =
            u32::from_be_bytes([0, sine[comment_at + 1], sine[comment_at + 2], sine[comment_at + 3]]);
        let frames_at = comment_at + 4 + comment_len as usize;
        let picture = |data_len: u32| {
            let mut body = 3u32.to_be_bytes().to_vec();
            body.extend_from_slice(&9u32.to_be_bytes());
            body.extend_from_slice(b"image/png");
            body.extend_from_slice(&0u32.to_be_bytes());
            body.extend_from_slice(&[0; 16]);
            body.extend_from_slice(&data_len.to_be_bytes());
            body.extend_from_slice(b"png!");
            let mut file = sine[..frames_at].to_vec();
            file[comment_at] = 0x04;
            file.push(0x86);
            file.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            file.extend_from_slice(&body);
            file.extend_from_slice(&sine[frames_at..]);
            file
        };
        assert_eq!(check(sine), Ok(()));
        assert_eq!(check(&picture(4)), Ok(()));
        assert_eq!(seen(&picture(4)).map(|(_, pictures)| pictures), Some(1), "symphonia reads the picture");
        assert!(check(&picture(0xFFFF_FFF0)).is_err());
        assert!(check(&picture(5)).is_err());
        assert!(matches!(
            super::super::decode(&picture(0xFFFF_FFF0), limits(), &|| false),
            Err(AudioError::Corrupt(_))
        ));
    }

    #[test]
    fn a_wav_info_entry_longer_than_the_file_is_refused() {
        let wav = |riff: u32, list: u32, entry: u32| {
            let mut out = b"RIFF".to_vec();
            out.extend_from_slice(&riff.to_le_bytes());
            out.extend_from_slice(b"WAVEfmt ");
            out.extend_from_slice(&16u32.to_le_bytes());
            out.extend_from_slice(&[1, 0, 1, 0, 0x80, 0x3E, 0, 0, 0, 0x7D, 0, 0, 2, 0, 16, 0]);
            out.extend_from_slice(b"LIST");
            out.extend_from_slice(&list.to_le_bytes());
            out.extend_from_slice(b"INFOINAM");
            out.extend_from_slice(&entry.to_le_bytes());
            out.extend_from_slice(b"hi\0\0");
            out.extend_from_slice(b"data");
            out.extend_from_slice(&8u32.to_le_bytes());
            out.extend_from_slice(&[0, 0, 0x10, 0, 0, 0x20, 0, 0]);
            out
        };
        let fine = wav(4 + 24 + 20 + 16, 16, 4);
        assert_eq!(check(&fine), Ok(()));
        assert_eq!(tags(&fine), ["INAM=hi\0\0"], "symphonia reads the list");
        assert!(check(&wav(u32::MAX - 1, u32::MAX - 64, 0xFFFF_0000)).is_err());
        assert!(super::super::decode(&fine, limits(), &|| false).is_ok());
    }
}
