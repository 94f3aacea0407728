//! The tap descriptor as a smoltcp ethernet device.
//!
//! Frames are read one at a time into a single reusable buffer, looked at by
//! the NAT (which may keep them from the stack), and only then staged for
//! smoltcp's `poll_ingress_single`. Frames smoltcp sends are built in a
//! second reusable buffer and written straight to the tap: no allocation per
//! packet in either direction.

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub const ETHERNET_HEADER: usize = 14;

pub struct TapDevice {
    fd: OwnedFd,
    frame_max: usize,
    rx: Vec<u8>,
    staged: Option<usize>,
    tx: Vec<u8>,
    /// Frames the tap did not take (its queue was full).
    pub tx_dropped: u64,
}

impl TapDevice {
    pub fn new(fd: OwnedFd, mtu: u32) -> TapDevice {
        let frame_max = mtu as usize + ETHERNET_HEADER;
        TapDevice {
            fd,
            frame_max,
            rx: vec![0; frame_max],
            staged: None,
            tx: vec![0; frame_max],
            tx_dropped: 0,
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads the next frame into the receive buffer; `None` when the tap has
    /// nothing more for now.
    pub fn read_frame(&mut self) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: reading into a buffer we own, at most its length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.rx.as_mut_ptr().cast(),
                    self.rx.len(),
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// The frame last read.
    pub fn frame(&self, len: usize) -> &[u8] {
        &self.rx[..len]
    }

    /// Hands the frame last read to smoltcp's next ingress poll.
    pub fn stage(&mut self, len: usize) {
        self.staged = Some(len);
    }

    /// Builds a frame of `len` bytes with `fill` and writes it to the tap.
    pub fn send_frame(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        if len > self.frame_max {
            return;
        }
        fill(&mut self.tx[..len]);
        write_frame(self.fd.as_raw_fd(), &self.tx[..len], &mut self.tx_dropped);
    }
}

fn write_frame(fd: RawFd, frame: &[u8], dropped: &mut u64) {
    loop {
        // SAFETY: writing from a buffer we own.
        let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
        if n >= 0 {
            return;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // The tap's queue is full or the device went down: the frame is
            // lost, as on a wire; TCP retransmits.
            *dropped += 1;
            return;
        }
    }
}

pub struct RxToken<'a> {
    frame: &'a [u8],
}

pub struct TxToken<'a> {
    fd: RawFd,
    buf: &'a mut [u8],
    dropped: &'a mut u64,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let r = f(&mut self.buf[..len]);
        write_frame(self.fd, &self.buf[..len], self.dropped);
        r
    }
}

impl phy::Device for TapDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let len = self.staged.take()?;
        let fd = self.fd.as_raw_fd();
        Some((
            RxToken {
                frame: &self.rx[..len],
            },
            TxToken {
                fd,
                buf: &mut self.tx,
                dropped: &mut self.tx_dropped,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            fd: self.fd.as_raw_fd(),
            buf: &mut self.tx,
            dropped: &mut self.tx_dropped,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.frame_max;
        // The tap is a link inside this machine: the guest's kernel always
        // fills in checksums and nothing corrupts frames on the way, so
        // verifying them again (64 KiB per segment) only costs time.
        let mut sums = ChecksumCapabilities::default();
        sums.tcp = Checksum::Tx;
        sums.udp = Checksum::Tx;
        sums.icmpv4 = Checksum::Tx;
        caps.checksum = sums;
        caps
    }
}
