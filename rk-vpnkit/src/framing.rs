//! Ethernet frames on the vpnkit stream: each is a little-endian `u16`
//! length followed by that many bytes.
//!
//! Both directions work in place in one preallocated buffer, so the pump
//! allocates nothing per frame: [`FrameReader`] takes large reads from the
//! stream and hands out the complete frames it holds, keeping a partial
//! frame for the next read; [`FrameBatch`] lays several frames read from the
//! tap device end to end with their length prefixes, ready for one write.

use crate::wire::FRAME_HEADER_LEN;
use std::io::{self, Read};

/// The largest frame the length prefix can describe.
pub const MAX_FRAME: usize = u16::MAX as usize;
/// Room for one frame of any length and its prefix.
const MAX_RECORD: usize = FRAME_HEADER_LEN + MAX_FRAME;

/// Splits the byte stream from vpnkit into frames.
pub struct FrameReader {
    buf: Box<[u8]>,
    /// Start of the first byte not yet handed out.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
}

impl FrameReader {
    /// `capacity` is rounded up so that any frame fits.
    pub fn new(capacity: usize) -> Self {
        FrameReader {
            buf: vec![0u8; capacity.max(2 * MAX_RECORD)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// One `read` from `from` into the free space. `Ok(0)` means EOF.
    pub fn fill(&mut self, from: &mut impl Read) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < MAX_RECORD {
            // What is left is less than one record: moving it to the front
            // leaves room for at least one whole record more.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match from.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete frame, if one is buffered. Empty frames are
    /// skipped: they are not ethernet frames and the tap would reject them.
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        loop {
            let avail = self.end - self.start;
            if avail < FRAME_HEADER_LEN {
                return None;
            }
            let len = usize::from(u16::from_le_bytes([
                self.buf[self.start],
                self.buf[self.start + 1],
            ]));
            if avail < FRAME_HEADER_LEN + len {
                return None;
            }
            let from = self.start + FRAME_HEADER_LEN;
            self.start = from + len;
            if len > 0 {
                return Some(&self.buf[from..from + len]);
            }
        }
    }

    /// Bytes of an incomplete frame held back (non-zero at EOF means the
    /// peer stopped in the middle of a frame).
    pub fn pending(&self) -> usize {
        self.end - self.start
    }
}

/// Frames laid end to end with their length prefixes.
pub struct FrameBatch {
    buf: Box<[u8]>,
    len: usize,
    frames: usize,
}

impl FrameBatch {
    /// `capacity` is rounded up so that at least one frame of any length fits.
    pub fn new(capacity: usize) -> Self {
        FrameBatch {
            buf: vec![0u8; capacity.max(MAX_RECORD)].into_boxed_slice(),
            len: 0,
            frames: 0,
        }
    }

    /// The longest frame that still fits.
    pub fn room(&self) -> usize {
        self.buf
            .len()
            .saturating_sub(self.len + FRAME_HEADER_LEN)
            .min(MAX_FRAME)
    }

    /// Appends a frame of `n` bytes and returns it to be filled in, or
    /// `None` if it does not fit (see [`room`](Self::room)).
    pub fn frame_mut(&mut self, n: usize) -> Option<&mut [u8]> {
        // Not only `n > room()`: with less than a prefix's two bytes left,
        // room() is 0 and an empty frame would not fit either.
        if n > MAX_FRAME || self.len + FRAME_HEADER_LEN + n > self.buf.len() {
            return None;
        }
        self.buf[self.len..self.len + FRAME_HEADER_LEN].copy_from_slice(&(n as u16).to_le_bytes());
        let from = self.len + FRAME_HEADER_LEN;
        self.len = from + n;
        self.frames += 1;
        Some(&mut self.buf[from..from + n])
    }

    /// Appends a copy of `frame`; `false` if it does not fit.
    #[cfg(test)]
    pub fn push(&mut self, frame: &[u8]) -> bool {
        match self.frame_mut(frame.len()) {
            Some(out) => {
                out.copy_from_slice(frame);
                true
            }
            None => false,
        }
    }

    /// The prefixed frames, ready to write to the stream.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.frames = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out the given chunks, one per `read`, then EOF.
    struct Chunks(Vec<Vec<u8>>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let mut chunk = self.0.remove(0);
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.insert(0, chunk.split_off(n));
            }
            Ok(n)
        }
    }

    fn record(frame: &[u8]) -> Vec<u8> {
        let mut r = (frame.len() as u16).to_le_bytes().to_vec();
        r.extend_from_slice(frame);
        r
    }

    fn frame(n: usize, fill: u8) -> Vec<u8> {
        vec![fill; n]
    }

    fn read_all(reader: &mut FrameReader, src: &mut impl Read) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while reader.fill(src).unwrap() > 0 {
            while let Some(f) = reader.next_frame() {
                out.push(f.to_vec());
            }
        }
        out
    }

    /// gvproxy 0.8.1's ARP reply for its gateway 192.168.127.1, as it came
    /// off the vpnkit socket: length 42 (0x002a, little-endian), then the
    /// frame.
    const RECORDED_ARP_REPLY: &str = "2a005a94efe40cee5a94efe40cdd08060001080006040002\
                                      5a94efe40cddc0a87f015a94efe40ceec0a87f02";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn recorded_arp_reply_from_gvproxy() {
        let bytes = hex(RECORDED_ARP_REPLY);
        assert_eq!(bytes.len(), 2 + 42);
        // Whole, then split after the first length byte and mid-frame.
        for chunks in [
            vec![bytes.clone()],
            vec![
                bytes[..1].to_vec(),
                bytes[1..20].to_vec(),
                bytes[20..].to_vec(),
            ],
        ] {
            let mut r = FrameReader::new(0);
            let frames = read_all(&mut r, &mut Chunks(chunks));
            assert_eq!(frames, vec![bytes[2..].to_vec()]);
            assert_eq!(&frames[0][12..14], &[0x08, 0x06], "an ARP frame");
        }
        // And the batch writes it back the same way.
        let mut b = FrameBatch::new(0);
        assert!(b.push(&bytes[2..]));
        assert_eq!(b.bytes(), &bytes[..]);
    }

    #[test]
    fn frames_split_at_every_byte_boundary_come_out_whole() {
        let frames = vec![frame(60, 1), frame(1514, 2), frame(42, 3), frame(65535, 4)];
        let stream: Vec<u8> = frames.iter().flat_map(|f| record(f)).collect();
        for cut in [1usize, 2, 3, 61, 62, 63, 1000, 1577, 70000] {
            let chunks: Vec<Vec<u8>> = stream.chunks(cut).map(|c| c.to_vec()).collect();
            let mut r = FrameReader::new(0);
            assert_eq!(read_all(&mut r, &mut Chunks(chunks)), frames, "cut {cut}");
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn odd_sized_reads_of_a_long_stream_keep_order_across_compaction() {
        // Enough data to wrap the buffer several times.
        let frames: Vec<Vec<u8>> = (0..400).map(|i| frame(1000 + i, i as u8)).collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| record(f)).collect();
        let chunks: Vec<Vec<u8>> = stream.chunks(4093).map(|c| c.to_vec()).collect();
        let mut r = FrameReader::new(0);
        assert_eq!(read_all(&mut r, &mut Chunks(chunks)), frames);
    }

    #[test]
    fn partial_frame_at_eof_is_reported_not_returned() {
        let mut stream = record(&frame(100, 7));
        stream.extend_from_slice(&record(&frame(100, 8))[..50]);
        let mut r = FrameReader::new(0);
        let frames = read_all(&mut r, &mut Chunks(vec![stream]));
        assert_eq!(frames, vec![frame(100, 7)]);
        assert_eq!(r.pending(), 50);
    }

    #[test]
    fn a_lone_length_byte_is_not_a_frame() {
        let mut r = FrameReader::new(0);
        let frames = read_all(&mut r, &mut Chunks(vec![vec![0x10]]));
        assert!(frames.is_empty());
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn empty_frames_are_skipped() {
        let mut stream = record(&[]);
        stream.extend(record(&frame(14, 9)));
        let mut r = FrameReader::new(0);
        assert_eq!(
            read_all(&mut r, &mut Chunks(vec![stream])),
            vec![frame(14, 9)]
        );
    }

    #[test]
    fn batch_lays_out_prefixed_frames() {
        let mut b = FrameBatch::new(4 * MAX_RECORD);
        assert!(b.push(&[1, 2, 3]));
        b.frame_mut(2).unwrap().copy_from_slice(&[9, 9]);
        assert_eq!(b.bytes(), &[3, 0, 1, 2, 3, 2, 0, 9, 9]);
        assert_eq!(b.frames(), 2);
        b.clear();
        assert!(b.is_empty() && b.bytes().is_empty());
    }

    #[test]
    fn batch_room_shrinks_and_refuses_what_does_not_fit() {
        let mut b = FrameBatch::new(0);
        assert_eq!(b.room(), MAX_FRAME);
        assert!(b.push(&[1; 100]));
        assert_eq!(b.room(), MAX_FRAME - 102);
        assert!(b.frame_mut(MAX_FRAME - 101).is_none());
        assert!(b.frame_mut(MAX_FRAME - 102).is_some());
        assert_eq!(b.room(), 0);
        assert!(!b.push(&[2]));
        b.clear();
        assert_eq!(b.room(), MAX_FRAME);
    }

    #[test]
    fn batch_with_one_byte_left_takes_no_frame() {
        // Found by fuzzing: an empty frame wrote its prefix past the end.
        let mut b = FrameBatch::new(0);
        assert!(b.push(&vec![7; MAX_RECORD - FRAME_HEADER_LEN - 1]));
        assert_eq!(b.room(), 0);
        assert!(b.frame_mut(0).is_none());
        assert!(b.frame_mut(1).is_none());
        assert_eq!(b.bytes().len(), MAX_RECORD - 1);
    }

    #[test]
    fn batch_output_reads_back_through_the_reader() {
        let mut b = FrameBatch::new(512 * 1024);
        let frames: Vec<Vec<u8>> = (0..100).map(|i| frame(60 + i * 13, i as u8)).collect();
        for f in &frames {
            assert!(b.push(f));
        }
        let mut r = FrameReader::new(0);
        let chunks = vec![b.bytes().to_vec()];
        assert_eq!(read_all(&mut r, &mut Chunks(chunks)), frames);
    }
}
