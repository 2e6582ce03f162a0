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

use std::collections::{HashMap, HashSet};

use symphonia::core::checksum::Crc32;
use symphonia::core::io::Monitor;

/// `Err` (why) when a declared metadata length runs past what holds it;
/// any other input passes (symphonia judges it).
pub(super) fn check(bytes: &[u8]) -> Result<(), &'static str> {
    flac(bytes)?;
    ogg(bytes)?;
    wav(bytes)?;
    mp4(bytes)?;
    mkv(bytes)
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

/// MP4 boxes that hold boxes (`meta` after its version and flags).
const MP4_CONTAINERS: [&[u8; 4]; 12] = [
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex", b"moof", b"traf",
    b"ilst",
];

/// MP4 (M4A, ISO base media): symphonia's isomp4 reader allocates a table
/// from each count it reads (`Vec::with_capacity`, up to 4 G entries of 4
/// to 12 bytes) and a buffer from each box and sample length, before it
/// reads them. Every box must fit in the one holding it (the file for the
/// top level), every sample table's entries in its box, and every sample in
/// the file. Files that do not start with `ftyp` are not MP4 to symphonia.
fn mp4(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.get(4..8) != Some(b"ftyp") {
        return Ok(());
    }
    mp4_boxes(bytes, bytes.len(), 0)
}

/// The boxes in `body`, recursively (depth-bounded, as symphonia's reader is
/// by the stack); `file` is the file's length.
fn mp4_boxes(mut body: &[u8], file: usize, depth: usize) -> Result<(), &'static str> {
    const TOO_LONG: &str = "an MP4 box is longer than the box or file that holds it";
    if depth > 16 {
        return Err("MP4 boxes are nested too deeply");
    }
    while let Some((size, tail)) = body.split_first_chunk::<4>() {
        let Some((kind, _)) = tail.split_first_chunk::<4>() else { break };
        let (header, len) = match u32::from_be_bytes(*size) {
            // To the end of what holds it.
            0 => (8, body.len()),
            1 => {
                let Some(large) = body.get(8..16) else { return Err(TOO_LONG) };
                let large = u64::from_be_bytes(large.try_into().unwrap_or_default());
                (16, usize::try_from(large).unwrap_or(usize::MAX))
            }
            n => (8, n as usize),
        };
        if len < header || len > body.len() {
            return Err(TOO_LONG);
        }
        let data = &body[header..len];
        if MP4_CONTAINERS.contains(&kind) {
            mp4_boxes(data, file, depth + 1)?;
        } else if let Some(skip) = mp4_children_at(kind, data) {
            mp4_boxes(data.get(skip..).unwrap_or_default(), file, depth + 1)?;
        } else if !mp4_table_fits(kind, data, file) {
            return Err("an MP4 sample table declares more than its box holds");
        }
        body = &body[len..];
    }
    Ok(())
}

/// Where the boxes inside a box with fields of its own start: `meta` after
/// its version and flags, `stsd` after them and its entry count, a sound
/// sample entry after its fields (28 bytes; 16 or 36 more in QuickTime's
/// versions 1 and 2).
fn mp4_children_at(kind: &[u8; 4], data: &[u8]) -> Option<usize> {
    match kind {
        b"meta" => Some(4),
        b"stsd" => Some(8),
        b"mp4a" | b"Opus" | b"fLaC" | b"alac" | b"enca" | b"lpcm" => {
            let version = u16::from_be_bytes(data.get(8..10)?.try_into().ok()?);
            Some(28 + [0, 16, 36].get(usize::from(version)).copied().unwrap_or(0))
        }
        _ => None,
    }
}

/// Whether a sample table box's declared entries fit in it (after its
/// version and flags), and each sample size in the file.
fn mp4_table_fits(kind: &[u8; 4], data: &[u8], file: usize) -> bool {
    let word = |at: usize| data.get(at..at + 4).map(|w| u32::from_be_bytes(w.try_into().unwrap_or_default()));
    let entries_fit = |count_at: usize, entry: usize| match word(count_at) {
        Some(count) => (count as usize).saturating_mul(entry) <= data.len() - (count_at + 4),
        None => true,
    };
    match kind {
        b"stco" => entries_fit(4, 4),
        b"co64" | b"stts" => entries_fit(4, 8),
        b"stsc" => entries_fit(4, 12),
        b"stsz" => match (word(4), word(8)) {
            // One size for every sample.
            (Some(size), Some(_)) if size != 0 => size as usize <= file,
            (Some(_), Some(_)) => {
                entries_fit(8, 4)
                    && data[12..]
                        .chunks_exact(4)
                        .all(|w| u32::from_be_bytes(w.try_into().unwrap_or_default()) as usize <= file)
            }
            _ => true,
        },
        _ => true,
    }
}

/// The Matroska master elements symphonia reads into (their children are
/// walked as if in line: the checks below need no nesting).
const MKV_MASTERS: [u32; 24] = [
    0x1A45_DFA3,
    0x1853_8067,
    0x114D_9B74,
    0x4DBB,
    0x1549_A966,
    0x1F43_B675,
    0xA0,
    0x75A1,
    0xA6,
    0x1654_AE6B,
    0xAE,
    0xE0,
    0xE1,
    0x6D80,
    0x6240,
    0x5035,
    0x1C53_BB6B,
    0xBB,
    0xB7,
    0x1254_C367,
    0x7373,
    0x63C0,
    0x67C8,
    0x1043_A770,
];
const MKV_CLUSTER: u32 = 0x1F43_B675;
const MKV_SEGMENT: u32 = 0x1853_8067;
const MKV_SEEK_POSITION: u32 = 0x53AC;
const MKV_CUE_CLUSTER_POSITION: u32 = 0xF1;
/// What symphonia reads where a SeekHead points: Tracks, Info, Tags, Cues.
const MKV_SEEK_TARGETS: [u32; 4] = [0x1654_AE6B, 0x1549_A966, 0x1254_C367, 0x1C53_BB6B];
const MKV_CLUSTER_TIMESTAMP: u32 = 0xE7;
const MKV_SIMPLE_BLOCK: u32 = 0xA3;
const MKV_BLOCK: u32 = 0xA1;
const MKV_TRACK_ENTRY: u32 = 0xAE;
const MKV_CODEC_ID: u32 = 0x86;
const MKV_CODEC_PRIVATE: u32 = 0x63A2;
const MKV_TIMESTAMP_SCALE: u32 = 0x2A_D7B1;

/// Matroska and WebM: symphonia 0.5's reader allocates each element's
/// declared length (up to 2^56) before it reads it, splits laced blocks by
/// sizes it does not check against the block (an overflowing subtraction,
/// then an allocation of what it wrapped to), subtracts a block's negative
/// offset from its cluster's timestamp unchecked, divides by the
/// TimestampScale, and reads Vorbis' CodecPrivate by Xiph lengths of up to
/// 255 bytes per byte. So: every element that is not a container must be no
/// longer than the file; a laced block's frames must fit in it and a
/// block's time must not fall before zero; TimestampScale must not be 0;
/// Vorbis' packed headers must fit in their CodecPrivate. A length that
/// starts with a zero byte (an overflowing shift in symphonia) is refused;
/// where an id cannot start, the walk resynchronises on the next top-level
/// id, as symphonia does. symphonia also seeks to what the SeekHead names
/// (Tracks, Info, Tags, Cues): those positions must be elements the walk
/// has seen, and no seek or cue position may overflow.
fn mkv(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.get(..4) != Some(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Ok(());
    }
    const BAD_VINT: &str = "a Matroska length starts with a zero byte";
    let mut rest = bytes;
    let (mut cluster_time, mut track) = (None, Track::default());
    // Where the Segment's data starts (seek positions count from there),
    // where the elements symphonia seeks to start, and the seek positions.
    let (mut segment, mut targets, mut seeks) = (None, HashSet::new(), Vec::new());
    while !rest.is_empty() {
        let Some((id, id_len)) = ebml_id(rest) else {
            // Not an id: symphonia skips to the next top-level element.
            match mkv_resync(&rest[1..]) {
                Some(at) => {
                    rest = &rest[1 + at..];
                    continue;
                }
                None => break,
            }
        };
        let Some(after_id) = rest.get(id_len..) else { break };
        if after_id.first() == Some(&0) {
            return Err(BAD_VINT);
        }
        let Some((size, size_len)) = ebml_size(after_id) else { break };
        let body = &after_id[size_len..];
        let at = bytes.len() - rest.len();
        if MKV_SEEK_TARGETS.contains(&id) {
            targets.insert(at);
        }
        if id == MKV_SEGMENT && segment.is_none() {
            segment = Some(bytes.len() - body.len());
        }
        if MKV_MASTERS.contains(&id) {
            if id == MKV_CLUSTER {
                cluster_time = None;
            } else if id == MKV_TRACK_ENTRY {
                std::mem::take(&mut track).check()?;
            }
            rest = body;
            continue;
        }
        let Some(size) = size.filter(|&size| size <= bytes.len() as u64) else {
            return Err("a Matroska element is longer than the file");
        };
        // A truncated element: symphonia stops there (having allocated no
        // more than the file's length).
        let Some(data) = body.get(..size as usize) else { break };
        match id {
            MKV_CLUSTER_TIMESTAMP => cluster_time = Some(ebml_uint(data)),
            MKV_SIMPLE_BLOCK | MKV_BLOCK => mkv_block(data, cluster_time)?,
            MKV_TIMESTAMP_SCALE if ebml_uint(data) == 0 => return Err("the Matroska TimestampScale is 0"),
            MKV_CODEC_ID => track.codec = data,
            MKV_CODEC_PRIVATE => track.private = data,
            MKV_SEEK_POSITION | MKV_CUE_CLUSTER_POSITION => seeks.push((id, ebml_uint(data))),
            _ => {}
        }
        rest = &body[size as usize..];
    }
    // symphonia adds each position to the Segment's unchecked, and reads
    // the element at a SeekHead's: it must be one walked above.
    let segment = segment.unwrap_or_default() as u64;
    for (id, position) in seeks {
        let Some(target) = segment.checked_add(position) else {
            return Err("a Matroska seek position is past any file");
        };
        let inside = usize::try_from(target).ok().and_then(|t| bytes.get(t..).map(|b| (t, b)));
        if let Some((target, at)) = inside.filter(|_| id == MKV_SEEK_POSITION) {
            let lands_on_one = ebml_id(at).is_some_and(|(id, _)| MKV_SEEK_TARGETS.contains(&id));
            if lands_on_one && !targets.contains(&target) {
                return Err("a Matroska seek position points inside another element");
            }
        }
    }
    track.check()
}

/// The ids symphonia resynchronises on after a byte that starts no id:
/// SeekHead, Info, Tracks, Cluster, Cues, Tags.
const MKV_TOP_LEVEL: [[u8; 4]; 6] = [
    [0x11, 0x4D, 0x9B, 0x74],
    [0x15, 0x49, 0xA9, 0x66],
    [0x16, 0x54, 0xAE, 0x6B],
    [0x1F, 0x43, 0xB6, 0x75],
    [0x1C, 0x53, 0xBB, 0x6B],
    [0x12, 0x54, 0xC3, 0x67],
];

/// Where the first top-level id in `bytes` starts.
fn mkv_resync(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| MKV_TOP_LEVEL.iter().any(|id| id == w))
}

/// A TrackEntry's codec and its private data, as far as they are seen.
#[derive(Default)]
struct Track<'a> {
    codec: &'a [u8],
    private: &'a [u8],
}

impl Track<'_> {
    /// Vorbis' CodecPrivate: a packet count, then Xiph-laced lengths that
    /// must fit in what follows them.
    fn check(self) -> Result<(), &'static str> {
        if !self.codec.starts_with(b"A_VORBIS") || self.private.is_empty() {
            return Ok(());
        }
        match xiph_sizes(&self.private[1..], usize::from(self.private[0])) {
            Some((total, header)) if total <= (self.private.len() - 1 - header) as u64 => Ok(()),
            Some(_) => Err("Matroska's Vorbis headers are longer than their CodecPrivate"),
            None => Ok(()),
        }
    }
}

/// `frames` Xiph-laced sizes at the start of `bytes`: their sum and the
/// bytes they took (`None` when cut short: symphonia fails on it unallocated).
fn xiph_sizes(bytes: &[u8], frames: usize) -> Option<(u64, usize)> {
    let (mut total, mut at) = (0u64, 0);
    for _ in 0..frames {
        loop {
            let byte = *bytes.get(at)?;
            at += 1;
            total += u64::from(byte);
            if byte != 255 {
                break;
            }
        }
    }
    Some((total, at))
}

/// A SimpleBlock or Block: track number, 16-bit relative time, flags,
/// then its frames (laced or not).
fn mkv_block(block: &[u8], cluster_time: Option<u64>) -> Result<(), &'static str> {
    const LACED_TOO_LONG: &str = "a Matroska block's laced frames are longer than the block";
    const BAD_VINT: &str = "a Matroska block's number starts with a zero byte";
    if block.first() == Some(&0) {
        return Err(BAD_VINT);
    }
    let Some((_, track_len)) = ebml_size(block) else { return Ok(()) };
    let Some(&[hi, lo, flags]) = block.get(track_len..track_len + 3) else { return Ok(()) };
    let relative = i16::from_be_bytes([hi, lo]);
    if let Some(time) = cluster_time {
        if relative < 0 && u64::from(relative.unsigned_abs()) > time {
            return Err("a Matroska block starts before time zero");
        }
    }
    let laced = &block[track_len + 3..];
    let Some((&count, sizes)) = laced.split_first() else { return Ok(()) };
    let frames = usize::from(count);
    let (total, header) = match (flags >> 1) & 0b11 {
        0b01 => match xiph_sizes(sizes, frames) {
            Some(found) => found,
            None => return Ok(()),
        },
        0b11 => {
            // EBML lacing: the first size, then signed differences.
            let (mut at, mut size, mut total) = (0, 0i128, 0i128);
            for i in 0..frames {
                if sizes.get(at) == Some(&0) {
                    return Err(BAD_VINT);
                }
                let Some((value, len)) = ebml_vint(&sizes[at..]) else { return Ok(()) };
                at += len;
                size = if i == 0 {
                    i128::from(value)
                } else {
                    size + i128::from(value) - ((1i128 << (7 * len - 1)) - 1)
                };
                if size < 0 {
                    return Err(LACED_TOO_LONG);
                }
                total += size;
            }
            (u64::try_from(total).unwrap_or(u64::MAX), at)
        }
        _ => return Ok(()),
    };
    if total > (sizes.len() - header) as u64 {
        return Err(LACED_TOO_LONG);
    }
    Ok(())
}

/// An EBML element id (1–4 bytes, its length marker kept) and its length.
fn ebml_id(bytes: &[u8]) -> Option<(u32, usize)> {
    let len = bytes.first()?.leading_zeros() as usize + 1;
    let raw = bytes.get(..len).filter(|_| len <= 4)?;
    Some((raw.iter().fold(0u32, |id, b| id << 8 | u32::from(*b)), len))
}

/// An EBML variable-length integer's value (marker removed) and length.
fn ebml_vint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    let raw = bytes.get(..len).filter(|_| len <= 8)?;
    let first = u64::from(first) & (0xFF >> len);
    Some((raw[1..].iter().fold(first, |v, b| v << 8 | u64::from(*b)), len))
}

/// An element's size (`None` inside: unknown, all ones) and its length.
fn ebml_size(bytes: &[u8]) -> Option<(Option<u64>, usize)> {
    let (value, len) = ebml_vint(bytes)?;
    let unknown = value == (1u64 << (7 * len)) - 1;
    Some(((!unknown).then_some(value), len))
}

/// A big-endian unsigned element (0 when longer than 8 bytes: symphonia
/// refuses those).
fn ebml_uint(data: &[u8]) -> u64 {
    if data.len() > 8 {
        return 0;
    }
    data.iter().fold(0, |v, b| v << 8 | u64::from(*b))
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

    /// An MP4 box: size, type, body.
    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    /// A real M4A with its `stco` entry count replaced (the first `stco`).
    fn m4a_with_stco_count(count: u32) -> Vec<u8> {
        let mut file = super::super::decode::tests::fixture("english-aac.m4a");
        let at = find(&file, 0, b"stco").unwrap() + 8;
        file[at..at + 4].copy_from_slice(&count.to_be_bytes());
        file
    }

    #[test]
    fn mp4_tables_and_boxes_longer_than_what_holds_them_are_refused() {
        for name in ["english-aac.m4a", "english-aac-fragmented.m4a", "english-video.mp4"] {
            assert_eq!(check(&super::super::decode::tests::fixture(name)), Ok(()), "{name}");
        }
        // symphonia would reserve 4 G chunk offsets (16 GiB) for this.
        let huge = m4a_with_stco_count(u32::MAX);
        assert!(check(&huge).is_err());
        assert!(matches!(super::super::decode(&huge, limits(), &|| false), Err(AudioError::Corrupt(_))));
        let ftyp = mp4_box(b"ftyp", b"M4A \0\0\0\0");
        // A box declaring more than the file, and one with a 64-bit size.
        let mut long = ftyp.clone();
        long.extend_from_slice(&mp4_box(b"moov", &[]));
        long[ftyp.len()..ftyp.len() + 4].copy_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
        assert!(check(&long).is_err());
        let mut large = ftyp.clone();
        large.extend_from_slice(&1u32.to_be_bytes());
        large.extend_from_slice(b"free");
        large.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(check(&large).is_err());
        // Inside a container: a child longer than its parent, an stsz
        // sample longer than the file, and an stsd entry's child too long.
        let nested = |inner: Vec<u8>| {
            let mut out = ftyp.clone();
            out.extend_from_slice(&mp4_box(b"moov", &mp4_box(b"trak", &inner)));
            out
        };
        let mut child = mp4_box(b"udta", &[0; 8]);
        child[..4].copy_from_slice(&100u32.to_be_bytes());
        assert!(check(&nested(child)).is_err());
        let stsz = |size: u32| {
            mp4_box(
                b"stsz",
                &[&[0u8; 4][..], &0u32.to_be_bytes(), &1u32.to_be_bytes(), &size.to_be_bytes()].concat(),
            )
        };
        assert_eq!(check(&nested(stsz(10))), Ok(()));
        assert!(check(&nested(stsz(0xFFFF_FF00))).is_err());
        let mut esds = mp4_box(b"esds", &[0; 4]);
        esds[..4].copy_from_slice(&1000u32.to_be_bytes());
        let entry = mp4_box(b"mp4a", &[&[0u8; 28][..], &esds].concat());
        let stsd = mp4_box(b"stsd", &[&[0u8; 4][..], &1u32.to_be_bytes(), &entry].concat());
        assert!(check(&nested(stsd)).is_err());
        // Deeply nested boxes stop at a bound, not the stack.
        let mut deep = mp4_box(b"udta", &[]);
        for _ in 0..40 {
            deep = mp4_box(b"udta", &deep);
        }
        assert!(check(&nested(deep)).is_err());
    }

    /// An EBML element with a one-byte id and an 8-byte size.
    fn ebml(id: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = id.to_vec();
        out.push(0x01);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }

    /// A real WebM with `extra` appended inside its (unknown-size) Segment.
    fn webm_with(extra: &[u8]) -> Vec<u8> {
        let mut file = super::super::decode::tests::fixture("english-opus-live.webm");
        file.extend_from_slice(extra);
        file
    }

    #[test]
    fn matroska_lengths_laces_and_times_that_symphonia_trusts_are_checked() {
        for name in ["english-opus.webm", "english-opus-live.webm"] {
            assert_eq!(check(&super::super::decode::tests::fixture(name)), Ok(()), "{name}");
        }
        // An element declaring 2^55 bytes (symphonia would allocate them),
        // and one of unknown size that is not a container.
        let mut huge = vec![0xEC, 0x01, 0x80, 0, 0, 0, 0, 0, 0];
        assert!(check(&webm_with(&huge)).is_err());
        huge[2..].copy_from_slice(&[0xFF; 7]);
        assert!(check(&webm_with(&huge)).is_err());
        // A cluster at time 5 whose block starts 10 before it.
        let block = |rel: i16, lacing: &[u8]| {
            let mut data = vec![0x81];
            data.extend_from_slice(&rel.to_be_bytes());
            data.extend_from_slice(lacing);
            data
        };
        let cluster = |time: u8, block: Vec<u8>| {
            [ebml(&[0x1F, 0x43, 0xB6, 0x75], &[]), ebml(&[0xE7], &[time]), ebml(&[0xA3], &block)].concat()
        };
        assert_eq!(check(&webm_with(&cluster(5, block(-5, &[0x80, 1, 2])))), Ok(()));
        assert!(check(&webm_with(&cluster(5, block(-10, &[0x80, 1, 2])))).is_err());
        // Xiph lacing (flags 0x02): 2 frames listed, sizes 255+10 and 3, in 20 bytes.
        let xiph = |payload: usize| [&[0x02u8, 2, 255, 10, 3][..], &vec![0; payload]].concat();
        assert_eq!(check(&webm_with(&cluster(0, block(0, &xiph(300))))), Ok(()));
        assert!(check(&webm_with(&cluster(0, block(0, &xiph(20))))).is_err());
        // EBML lacing (flags 0x06): a first size of 16 MiB, and a difference below zero.
        let mut first = vec![0x06, 1, 0x08, 0x01, 0, 0, 0, 0];
        first.extend_from_slice(&[0; 16]);
        assert!(check(&webm_with(&cluster(0, block(0, &first)))).is_err());
        // First size 4, then a difference of -63 (the 1-byte signed vint 0x80); 0xBF is 0.
        let negative = [&[0x06u8, 2, 0x84, 0x80][..], &[0; 16]].concat();
        assert!(check(&webm_with(&cluster(0, block(0, &negative)))).is_err());
        let fine = [&[0x06u8, 2, 0x84, 0xBF][..], &[0; 16]].concat();
        assert_eq!(check(&webm_with(&cluster(0, block(0, &fine)))), Ok(()));
        // A size starting with a zero byte (symphonia shifts by 7 - 8).
        assert!(check(&webm_with(&[0xEC, 0x00, 0x81, 0x00])).is_err());
        assert!(check(&webm_with(&cluster(0, vec![0x00, 0x81, 0, 0, 0x80]))).is_err());
        // Seek positions: one that overflows when added to the Segment's,
        // and one inside a block whose payload spells a Tracks element.
        let seek = |position: u64| ebml(&[0x4D, 0xBB], &ebml(&[0x53, 0xAC], &position.to_be_bytes()));
        assert!(check(&webm_with(&seek(u64::MAX - 4))).is_err());
        let fixture = super::super::decode::tests::fixture("english-opus-live.webm");
        let segment_data = find(&fixture, 0, &[0x18, 0x53, 0x80, 0x67]).unwrap() + 4 + 8;
        let payload_at = fixture.len() + 9 + 4; // past the SimpleBlock header and its own 4
        let spoof = [
            ebml(&[0xA3], &[&[0x81u8, 0, 0, 0x80][..], &[0x16, 0x54, 0xAE, 0x6B, 0x80]].concat()),
            seek((payload_at - segment_data) as u64),
        ]
        .concat();
        assert!(check(&webm_with(&spoof)).is_err());
        assert_eq!(check(&webm_with(&seek((fixture.len() + 1000 - segment_data) as u64))), Ok(()));
        // TimestampScale 0 (symphonia divides by it).
        assert!(check(&webm_with(&ebml(&[0x2A, 0xD7, 0xB1], &[0]))).is_err());
        // Vorbis headers longer than their CodecPrivate.
        let track = |private: &[u8]| {
            let entry = [ebml(&[0x86], b"A_VORBIS"), ebml(&[0x63, 0xA2], private)].concat();
            ebml(&[0xAE], &entry)
        };
        assert_eq!(check(&webm_with(&track(&[2, 3, 2, 1, 1, 1, 2, 2, 9]))), Ok(()));
        assert!(check(&webm_with(&track(&[2, 255, 255, 255, 1, 0]))).is_err());
        assert!(matches!(
            super::super::decode(&webm_with(&huge), limits(), &|| false),
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
