//! Moves ethernet frames between the tap device and the vpnkit stream
//! until either side ends.
//!
//! Two threads, one per direction, each blocking on its own source:
//! - tap → vpnkit: reads packets until the tap is empty (a TCP packet may
//!   be a 64 KiB super-packet, cut into segments by `offload`), lays the
//!   frames with their length prefixes end to end in one buffer, and
//!   writes that batch to the stream with a single `write` whenever it
//!   fills up and when the tap is empty; only then does it wait in `poll`;
//! - vpnkit → tap: reads the stream in large chunks and writes each
//!   complete frame to the tap (the tap takes one frame per `write`, after
//!   a virtio-net header that says "nothing to offload"); a partial frame
//!   waits in the buffer for the next read.
//!
//! Buffers are allocated once. The first thread to stop records why and
//! signals an eventfd, which the driver hands to the SDK as its watch.
//!
//! The threads run under the whole process's confinement, applied before
//! they start (`crate::confinement`).

use crate::coalesce::{Coalescer, TapWriter};
use crate::framing::{FrameBatch, FrameReader};
use crate::offload::{self, VnetHdr, VNET_HDR_LEN};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rk_driver::fdio::EventFd as Event;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes of frames gathered from the tap before one write to the stream.
const BATCH_BUFFER: usize = 256 * 1024;
/// Room for the largest packet the tap hands out: with TCP segmentation
/// offload, up to 64 KiB of IP packet plus its ethernet header.
const MAX_TAP_PACKET: usize = 128 * 1024;

/// Frame counters, for `--debug`.
#[derive(Default)]
pub struct Counters {
    pub to_vpnkit: AtomicU64,
    /// Writes to vpnkit that carried those frames.
    pub batches: AtomicU64,
    /// Frames read from vpnkit.
    pub from_vpnkit: AtomicU64,
    /// Packets written to the tap (joined segments count once).
    pub to_tap: AtomicU64,
    /// Frames the tap refused (e.g. while it was still down).
    pub dropped: AtomicU64,
    /// Packets from the tap that could not be put on the wire.
    pub malformed: AtomicU64,
}

struct Shared {
    reason: Mutex<Option<String>>,
    ended: Event,
    stop: Event,
    stopping: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn finish(&self, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() && !self.stopping.load(Ordering::SeqCst) {
            *r = Some(reason);
        }
        drop(r);
        self.ended.signal();
    }
}

/// The running pump.
pub struct Pump {
    shared: Arc<Shared>,
    stream: UnixStream,
    threads: Vec<JoinHandle<()>>,
}

impl Pump {
    /// Starts both directions. `reader` may already hold frames received
    /// during set-up; they go to the tap first.
    pub fn start(stream: UnixStream, reader: FrameReader, tap: OwnedFd) -> io::Result<Pump> {
        let shared = Arc::new(Shared {
            reason: Mutex::new(None),
            ended: Event::new()?,
            stop: Event::new()?,
            stopping: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let tap = Arc::new(File::from(tap));
        let mut threads = Vec::new();
        {
            let (shared, tap, out) = (Arc::clone(&shared), Arc::clone(&tap), stream.try_clone()?);
            threads.push(spawn("tap-to-vpnkit", move || {
                let reason = tap_to_vpnkit(&tap, out, &shared);
                shared.finish(reason);
            })?);
        }
        {
            let (shared, input) = (Arc::clone(&shared), stream.try_clone()?);
            threads.push(spawn("vpnkit-to-tap", move || {
                let reason = vpnkit_to_tap(input, reader, &tap, &shared.counters);
                shared.finish(reason);
            })?);
        }
        Ok(Pump {
            shared,
            stream,
            threads,
        })
    }

    /// Readable once a direction has stopped.
    pub fn ended_fd(&self) -> BorrowedFd<'_> {
        self.shared.ended.as_fd()
    }

    /// Why the pump stopped (after [`ended_fd`](Self::ended_fd) fired).
    pub fn reason(&self) -> String {
        self.shared
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "the pump stopped".to_owned())
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Stops both directions and waits for them.
    pub fn stop(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(Shutdown::Both);
        self.shared.stop.signal();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// Returns why it stopped.
fn tap_to_vpnkit(tap: &File, mut out: UnixStream, shared: &Shared) -> String {
    let counters = &shared.counters;
    let mut batch = FrameBatch::new(BATCH_BUFFER);
    let mut hdr = [0u8; VNET_HDR_LEN];
    let mut packet = vec![0u8; MAX_TAP_PACKET].into_boxed_slice();
    let mut flush = |b: &mut FrameBatch| -> Result<(), String> {
        if b.is_empty() {
            return Ok(());
        }
        out.write_all(b.bytes()).map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                "vpnkit closed the connection".to_owned()
            }
            _ => format!("writing to vpnkit: {e}"),
        })?;
        counters
            .to_vpnkit
            .fetch_add(b.frames() as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        b.clear();
        Ok(())
    };
    loop {
        // Read until the tap is empty, sending whenever the batch fills and
        // once more at the end; wait only when there was nothing at all, so
        // that a steady flow costs one read per packet (a super-packet of up
        // to 64 KiB with segmentation offload) and no poll.
        loop {
            let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(&mut packet)];
            let n = match (&*tap).read_vectored(&mut iov) {
                Ok(0) => return "the tap device was closed".to_owned(),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return format!("reading from the tap device: {e}"),
            };
            if n <= VNET_HDR_LEN {
                continue;
            }
            let h = VnetHdr::parse(&hdr);
            match offload::to_wire(&h, &mut packet[..n - VNET_HDR_LEN], &mut batch, &mut flush) {
                Ok(Ok(_)) => {}
                // Nothing a network card could send either: drop it.
                Ok(Err(_)) => {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => return reason,
            }
        }
        if let Err(reason) = flush(&mut batch) {
            return reason;
        }
        let mut fds = [
            PollFd::new(tap.as_fd(), PollFlags::POLLIN),
            PollFd::new(shared.stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return format!("waiting for the tap device: {e}"),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return "stopped".to_owned();
        }
    }
}

/// Writes packets to the tap, counting those it refuses.
struct TapSink<'a> {
    tap: &'a File,
    counters: &'a Counters,
    /// An error that ends the pump.
    fatal: Option<String>,
}

impl TapWriter for TapSink<'_> {
    fn write_packet(&mut self, vnet_hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) {
        let iov = [IoSlice::new(vnet_hdr), IoSlice::new(packet)];
        match self.tap.write_vectored(&iov) {
            Ok(_) => {
                self.counters.to_tap.fetch_add(1, Ordering::Relaxed);
            }
            // The tap refuses frames while it is down (EIO), when its queue
            // is full, or a frame it cannot parse: drop the frame, as a
            // network would.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::EAGAIN | libc::ENOBUFS | libc::EINVAL | libc::EINTR)
                ) =>
            {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.fatal
                    .get_or_insert_with(|| format!("writing to the tap device: {e}"));
            }
        }
    }
}

/// Returns why it stopped.
fn vpnkit_to_tap(
    mut input: UnixStream,
    mut reader: FrameReader,
    tap: &File,
    counters: &Counters,
) -> String {
    let mut coalescer = Coalescer::default();
    let mut sink = TapSink {
        tap,
        counters,
        fatal: None,
    };
    loop {
        while let Some(frame) = reader.next_frame() {
            counters.from_vpnkit.fetch_add(1, Ordering::Relaxed);
            coalescer.push(frame, &mut sink);
        }
        // Nothing more in hand: what is pending goes out before waiting.
        coalescer.flush(&mut sink);
        if let Some(reason) = sink.fatal.take() {
            return reason;
        }
        match reader.fill(&mut input) {
            Ok(0) if reader.pending() > 0 => {
                return format!(
                    "vpnkit closed the connection in the middle of a frame ({} bytes held)",
                    reader.pending()
                )
            }
            Ok(0) => return "vpnkit closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return "vpnkit reset the connection".to_owned()
            }
            Err(e) => return format!("reading from vpnkit: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::PLAIN_VNET_HDR;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A socketpair of datagrams stands in for the tap: one frame per
    /// read and write, readable with poll, like a tap descriptor.
    fn fake_tap() -> (OwnedFd, UnixDatagramEnd) {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (OwnedFd::from(a), UnixDatagramEnd(b))
    }

    struct UnixDatagramEnd(std::os::unix::net::UnixDatagram);

    fn wait_readable(fd: BorrowedFd<'_>) -> bool {
        let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut p, PollTimeout::from(5000u16)).unwrap() > 0
    }

    #[test]
    fn frames_cross_both_ways_and_eof_is_reported() {
        let (tap, kernel) = fake_tap();
        let (ours, mut vpnkit) = UnixStream::pair().unwrap();
        let pump = Pump::start(ours, FrameReader::new(0), tap).unwrap();

        // Kernel → vpnkit: three frames sent at once arrive prefixed.
        for f in [&[1u8; 60][..], &[2u8; 1514][..], &[3u8; 42][..]] {
            let mut packet = PLAIN_VNET_HDR.to_vec();
            packet.extend_from_slice(f);
            kernel.0.send(&packet).unwrap();
        }
        let mut got = vec![0u8; 3 * 2 + 60 + 1514 + 42];
        vpnkit.read_exact(&mut got).unwrap();
        assert_eq!(&got[..2], &60u16.to_le_bytes());
        assert_eq!(&got[62..64], &1514u16.to_le_bytes());
        assert_eq!(got[got.len() - 1], 3);

        // vpnkit → kernel: a frame split across writes arrives whole.
        let mut rec = 100u16.to_le_bytes().to_vec();
        rec.extend_from_slice(&[7u8; 100]);
        vpnkit.write_all(&rec[..30]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        vpnkit.write_all(&rec[30..]).unwrap();
        let mut buf = [0u8; 2000];
        kernel
            .0
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = kernel.0.recv(&mut buf).unwrap();
        assert_eq!(&buf[..VNET_HDR_LEN], &PLAIN_VNET_HDR[..]);
        assert_eq!(&buf[VNET_HDR_LEN..n], &[7u8; 100][..]);

        // vpnkit goes away: the pump says so through its eventfd.
        drop(vpnkit);
        assert!(wait_readable(pump.ended_fd()));
        assert_eq!(pump.reason(), "vpnkit closed the connection");
        assert_eq!(pump.counters().to_tap.load(Ordering::Relaxed), 1);
        pump.stop();
    }

    #[test]
    fn stop_ends_both_threads_without_a_reason() {
        let (tap, _kernel) = fake_tap();
        let (ours, _vpnkit) = UnixStream::pair().unwrap();
        let pump = Pump::start(ours, FrameReader::new(0), tap).unwrap();
        let fd = pump.shared.ended.as_fd().as_raw_fd();
        assert!(fd >= 0);
        pump.stop();
    }
}
