//! rk-vpnkit: what the vpnkit peer (vpnkit, or gvproxy serving its
//! protocol) sends.
//!
//! - `vpnkit_handshake`: its init message and its answer to the ethernet
//!   command ([`wire::parse_server_init`], [`wire::parse_response`]);
//! - `vpnkit_frames`: the stream of `u16`-length-prefixed frames after the
//!   handshake, split by [`FrameReader`] however the reads cut it, and the
//!   frames [`FrameBatch`] lays out for the other direction.

use crate::chunks::{sizes_and_rest, ChunkedReader};
use rk_vpnkit::framing::{FrameBatch, FrameReader, MAX_FRAME};
use rk_vpnkit::wire::{self, HandshakeError, INIT_LEN, MAGIC, RESPONSE_LEN, VERSION};

/// The first [`INIT_LEN`] bytes (zero-padded) are the server's init
/// message, the next [`RESPONSE_LEN`] its response.
pub fn handshake(data: &[u8]) {
    let mut init = [0u8; INIT_LEN];
    let n = data.len().min(INIT_LEN);
    init[..n].copy_from_slice(&data[..n]);
    let data = &data[n..];
    let mut resp = [0u8; RESPONSE_LEN];
    let n = data.len().min(RESPONSE_LEN);
    resp[..n].copy_from_slice(&data[..n]);

    match wire::parse_server_init(&init) {
        Ok(s) => {
            assert_eq!(init[..5], MAGIC);
            assert_eq!(s.version, VERSION);
            assert!(!s.commit.ends_with('\0'));
            assert!(s.commit.chars().count() <= 40, "{s:?}");
        }
        Err(e) => {
            match &e {
                HandshakeError::BadMagic(_) => assert_ne!(init[..5], MAGIC),
                HandshakeError::Version(v) => {
                    assert_eq!(init[..5], MAGIC);
                    assert_ne!(*v, VERSION);
                }
                other => panic!("{other:?} from the init message"),
            }
            let _ = e.to_string();
        }
    }

    match wire::parse_response(&resp) {
        Ok(vif) => {
            assert_eq!(resp[0], 1);
            assert_eq!(&resp[5..11], &vif.mac);
            assert!(vif.mac != [0; 6] && vif.mac[0] & 1 == 0, "{vif:?}");
            assert_eq!(wire::format_mac(&vif.mac).len(), 17);
        }
        Err(e) => {
            match &e {
                HandshakeError::Disconnected(reason) => {
                    assert_eq!(resp[0], 2);
                    assert!(reason.chars().count() <= usize::from(resp[1]));
                }
                HandshakeError::UnknownResponse(t) => {
                    assert_eq!(*t, resp[0]);
                    assert!(*t != 1 && *t != 2);
                }
                HandshakeError::BadMac(_) => assert_eq!(resp[0], 1),
                other => panic!("{other:?} from the response"),
            }
            let _ = e.to_string();
        }
    }
}

/// Frames in a stream, the way the reference splits it: each is a
/// little-endian `u16` length and that many bytes; empty ones are dropped.
/// Also returns the bytes of an incomplete last record.
fn split_stream(mut s: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut frames = Vec::new();
    while s.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([s[0], s[1]]));
        if s.len() < 2 + len {
            break;
        }
        if len > 0 {
            frames.push(&s[2..2 + len]);
        }
        s = &s[2 + len..];
    }
    (frames, s.len())
}

/// Reads `stream` through a [`FrameReader`] of `capacity` in pieces of
/// `sizes`, as the pump does: fill, then take every complete frame.
fn read_frames(stream: &[u8], sizes: Vec<usize>, capacity: usize) -> (Vec<Vec<u8>>, usize) {
    let mut reader = FrameReader::new(capacity);
    let mut src = ChunkedReader::new(stream, sizes);
    let mut frames = Vec::new();
    let mut total_read = 0;
    loop {
        let n = reader.fill(&mut src).expect("reading from memory");
        total_read += n;
        while let Some(f) = reader.next_frame() {
            assert!(!f.is_empty() && f.len() <= MAX_FRAME);
            frames.push(f.to_vec());
        }
        if n == 0 {
            break;
        }
    }
    assert_eq!(total_read, stream.len(), "the reader stopped early");
    (frames, reader.pending())
}

/// Most bytes of frames made up from one input: the reader's buffer holds
/// two records of the largest size, this wraps it twice (more only slows
/// the fuzzer down).
const MAX_MADE_UP: usize = 1 << 18;

/// The input: piece sizes (see `chunks::sizes_and_rest`), one byte choosing the
/// buffer sizes, then the rest, used twice:
/// 1. as a raw stream from vpnkit: the reader must give the frames the
///    reference split gives, and hold back exactly the incomplete tail;
/// 2. as a list of frames to send (3 bytes each: `u16` length, fill byte):
///    laid out by a [`FrameBatch`] (flushed when full, as the pump does)
///    and read back in the same pieces, they must come out unchanged.
pub fn frames(data: &[u8]) {
    let (sizes, rest) = sizes_and_rest(data);
    let (&cap, stream) = rest.split_first().unwrap_or((&0, &[]));
    let reader_capacity = usize::from(cap & 0x0f) * 40_000;
    let batch_capacity = usize::from(cap >> 4) * 20_000;

    let (expected, tail) = split_stream(stream);
    let (got, pending) = read_frames(stream, sizes.clone(), reader_capacity);
    assert_eq!(got, expected, "frames split differently");
    assert_eq!(pending, tail, "incomplete tail");

    let mut made_up = Vec::new();
    let mut total = 0;
    for rec in stream.chunks_exact(3) {
        let len = usize::from(u16::from_le_bytes([rec[0], rec[1]]));
        if total + len > MAX_MADE_UP {
            break;
        }
        total += len;
        made_up.push(vec![rec[2]; len]);
    }
    let mut batch = FrameBatch::new(batch_capacity);
    let mut sent = Vec::new();
    for f in &made_up {
        if batch.room() < f.len() {
            sent.extend_from_slice(batch.bytes());
            batch.clear();
        }
        assert!(batch.room() <= MAX_FRAME);
        let before = (batch.bytes().len(), batch.frames());
        let Some(out) = batch.frame_mut(f.len()) else {
            // With less than a prefix left, room() is 0 and only an empty
            // frame (which the reader skips anyway) gets here.
            assert!(f.is_empty(), "room() said a {}-byte frame fits", f.len());
            assert_eq!((batch.bytes().len(), batch.frames()), before);
            continue;
        };
        out.copy_from_slice(f);
        assert_eq!(batch.bytes().len(), before.0 + 2 + f.len());
        assert_eq!(batch.frames(), before.1 + 1);
    }
    sent.extend_from_slice(batch.bytes());
    let (got, pending) = read_frames(&sent, sizes, reader_capacity);
    let non_empty: Vec<Vec<u8>> = made_up.into_iter().filter(|f| !f.is_empty()).collect();
    assert_eq!(got, non_empty, "frames changed on the way");
    assert_eq!(pending, 0);
}
