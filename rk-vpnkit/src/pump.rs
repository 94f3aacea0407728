//! Moves ethernet frames between the tap device and the vpnkit stream
//! until either side ends.
//!
//! Two threads, one per direction, each blocking on its own source:
//! - tap → vpnkit: waits for the tap to turn readable, then reads frames
//!   until the tap is empty or the batch is full, and writes the whole
//!   batch (length prefixes and frames laid end to end in one buffer) to
//!   the stream with a single `write`;
//! - vpnkit → tap: reads the stream in large chunks and writes each
//!   complete frame to the tap (the tap takes one frame per `write`); a
//!   partial frame waits in the buffer for the next read.
//!
//! Buffers are allocated once. The first thread to stop records why and
//! signals an eventfd, which the driver hands to the SDK as its watch.

use crate::event::Event;
use crate::framing::{FrameBatch, FrameReader};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes of frames gathered from the tap before one write to the stream.
const BATCH_BUFFER: usize = 256 * 1024;

/// Frame counters, for `--debug`.
#[derive(Default)]
pub struct Counters {
    pub to_vpnkit: AtomicU64,
    /// Writes to vpnkit that carried those frames.
    pub batches: AtomicU64,
    pub to_tap: AtomicU64,
    /// Frames the tap refused (e.g. while it was still down).
    pub dropped: AtomicU64,
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
                confine();
                let reason = tap_to_vpnkit(&tap, out, &shared);
                shared.finish(reason);
            })?);
        }
        {
            let (shared, input) = (Arc::clone(&shared), stream.try_clone()?);
            threads.push(spawn("vpnkit-to-tap", move || {
                confine();
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

/// The seccomp filter of a pump thread; without it (an old kernel) the
/// pump still works, and says so with `--debug`.
fn confine() {
    if let Err(e) = crate::sandbox::confine_pump_thread() {
        if rk_driver::debug_enabled() {
            eprintln!("rk-vpnkit: pump thread runs without its seccomp filter: {e}");
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// Returns why it stopped.
fn tap_to_vpnkit(tap: &File, mut out: UnixStream, shared: &Shared) -> String {
    let mut batch = FrameBatch::new(BATCH_BUFFER);
    loop {
        // Read until the tap is empty (or the batch full) and send what came;
        // wait only when there was nothing at all, so that a steady flow
        // costs one read per frame and one write per batch, and no poll.
        let empty = match fill_from_tap(tap, &mut batch) {
            Ok(empty) => empty,
            Err(reason) => return reason,
        };
        if !batch.is_empty() {
            if let Err(e) = out.write_all(batch.bytes()) {
                return match e.kind() {
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                        "vpnkit closed the connection".to_owned()
                    }
                    _ => format!("writing to vpnkit: {e}"),
                };
            }
            let c = &shared.counters;
            c.to_vpnkit
                .fetch_add(batch.frames() as u64, Ordering::Relaxed);
            c.batches.fetch_add(1, Ordering::Relaxed);
            batch.clear();
        }
        if !empty {
            continue;
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

/// Reads frames into `batch` until the tap has none left (`Ok(true)`) or
/// the batch is full (`Ok(false)`).
fn fill_from_tap(tap: &File, batch: &mut FrameBatch) -> Result<bool, String> {
    while let Some(slot) = batch.slot() {
        match (&*tap).read(slot) {
            Ok(0) => return Err("the tap device was closed".to_owned()),
            Ok(n) => batch.commit(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from the tap device: {e}")),
        }
    }
    Ok(false)
}

/// Returns why it stopped.
fn vpnkit_to_tap(
    mut input: UnixStream,
    mut reader: FrameReader,
    tap: &File,
    counters: &Counters,
) -> String {
    loop {
        while let Some(frame) = reader.next_frame() {
            match (&*tap).write(frame) {
                Ok(_) => counters.to_tap.fetch_add(1, Ordering::Relaxed),
                // The tap refuses frames while it is down (EIO), when its
                // queue is full, or a frame it cannot parse: drop the frame,
                // as a network would.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EAGAIN | libc::ENOBUFS | libc::EINVAL | libc::EINTR)
                    ) =>
                {
                    counters.dropped.fetch_add(1, Ordering::Relaxed)
                }
                Err(e) => return format!("writing to the tap device: {e}"),
            };
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
            kernel.0.send(f).unwrap();
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
        assert_eq!(&buf[..n], &[7u8; 100][..]);

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
