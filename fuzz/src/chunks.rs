//! A byte stream cut into pieces whose sizes the fuzzer picks, as a stream
//! socket may deliver it: parsers of streams must not care where the cuts
//! fall.

use std::io::{self, Read};

/// Splits `input` into piece sizes and the rest. The low four bits of the
/// first byte say how many sizes follow (little-endian `u16`s, 0 read as 1),
/// used in turn and then again from the first; no sizes: the stream comes
/// in one piece.
pub fn sizes_and_rest(input: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&first, rest)) = input.split_first() else {
        return (Vec::new(), input);
    };
    let n = usize::from(first & 0x0f).min(rest.len() / 2);
    let sizes = rest[..2 * n]
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])).max(1))
        .collect();
    (sizes, &rest[2 * n..])
}

/// `data` in pieces of `sizes` (cycled).
pub fn pieces<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(rest.len());
        let (piece, after) = rest.split_at(n.min(rest.len()));
        out.push(piece);
        rest = after;
        i += 1;
    }
    out
}

/// A reader that returns `data` in pieces of `sizes` (cycled), each at most
/// as long as the caller's buffer, then EOF.
pub struct ChunkedReader<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl<'a> ChunkedReader<'a> {
    pub fn new(data: &'a [u8], sizes: Vec<usize>) -> Self {
        ChunkedReader {
            data,
            sizes,
            next: 0,
        }
    }
}

impl Read for ChunkedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = match self.sizes.len() {
            0 => self.data.len(),
            n => self.sizes[self.next % n],
        };
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
