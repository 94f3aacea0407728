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

use rk_gvtap::tcp_frame::tcp_offsets;
pub use rk_gvtap::tcp_frame::ETHERNET_HEADER;
/// `struct virtio_net_hdr` before every frame when the tap has
/// `IFF_VNET_HDR` (the default size of TUNSETVNETHDRSZ).
pub const VNET_HDR: usize = 10;
/// The largest frame with offloads: an IPv4 packet of 65535 bytes (a TCP
/// super-segment of the guest's TSO) with its ethernet header.
const OFFLOAD_FRAME_MAX: usize = 65535 + ETHERNET_HEADER;

/// The largest IPv6 packet (a 65535-byte payload) with its ethernet header.
const REASSEMBLED_FRAME_MAX: usize = ETHERNET_HEADER + 40 + 65535;

/// The tap as smoltcp's device: one reusable buffer each way.
pub struct TapDevice {
    fd: OwnedFd,
    /// Bytes of virtio-net header before each frame: 0 or [`VNET_HDR`].
    hdr: usize,
    /// The interface's MTU inside (segments the guest's kernel cuts a
    /// super-segment into fit it).
    guest_mtu: usize,
    /// The largest frame the stack sends.
    frame_max: usize,
    rx: Vec<u8>,
    staged: Option<usize>,
    tx: Vec<u8>,
    /// Frames the tap did not take (its queue was full).
    pub tx_dropped: u64,
}

impl TapDevice {
    /// A tap of MTU `mtu`; `vnet`: it was made with `IFF_VNET_HDR`, so
    /// frames carry a virtio-net header both ways and the stack may send
    /// TCP super-segments (the guest's kernel takes them as GSO packets).
    pub fn new(fd: OwnedFd, mtu: u32, vnet: bool) -> TapDevice {
        let hdr = if vnet { VNET_HDR } else { 0 };
        // The stack sends packets up to 64 KiB whatever the MTU: TCP
        // super-segments with offloads (without them, TCP segments follow
        // the guest's MSS), and UDP answers and echo replies larger than
        // the MTU, which `finish_and_write` cuts into fragments that fit
        // (smoltcp fragments IPv4 only, and lost later fragments after a
        // large one).
        let frame_max = OFFLOAD_FRAME_MAX;
        // Room for a whole IPv6 datagram put together from fragments (see
        // `replace_frame`), whatever the MTU.
        let rx_max = REASSEMBLED_FRAME_MAX;
        TapDevice {
            fd,
            hdr,
            guest_mtu: mtu as usize,
            frame_max,
            rx: vec![0; hdr + rx_max],
            staged: None,
            // Room for the frames the NAT builds itself (echo replies as
            // large as the requests), fragmented to the MTU on the way out.
            tx: vec![0; hdr + OFFLOAD_FRAME_MAX],
            tx_dropped: 0,
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether frames carry virtio-net headers (and TCP may go in
    /// super-segments).
    pub fn offloads(&self) -> bool {
        self.hdr > 0
    }

    /// The IP MTU the stack works with: the guest's, or with offloads the
    /// largest IPv4 packet.
    pub fn stack_mtu(&self) -> u32 {
        (self.frame_max - ETHERNET_HEADER) as u32
    }

    /// Reads the next frame into the receive buffer; `None` when the tap has
    /// nothing more for now. The length is the frame's, without the
    /// virtio-net header (whose checksum and segmentation hints the stack
    /// does not need: it verifies no checksums, and takes a super-segment
    /// as one segment).
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
                // A read shorter than the header is no frame: skip it.
                return Ok(Some((n as usize).saturating_sub(self.hdr)));
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
        &self.rx[self.hdr..self.hdr + len]
    }

    /// The frame last read, to change before the stack sees it.
    pub fn frame_mut(&mut self, len: usize) -> &mut [u8] {
        &mut self.rx[self.hdr..self.hdr + len]
    }

    /// Puts `frame` (a datagram put together from the fragments last read)
    /// in place of the frame last read; returns its length, `None` if it
    /// does not fit.
    pub fn replace_frame(&mut self, frame: &[u8]) -> Option<usize> {
        let room = self.rx.get_mut(self.hdr..self.hdr + frame.len())?;
        room.copy_from_slice(frame);
        Some(frame.len())
    }

    /// Hands the frame last read to smoltcp's next ingress poll.
    pub fn stage(&mut self, len: usize) {
        self.staged = Some(len);
    }

    /// Builds a frame of `len` bytes with `fill` and writes it to the tap.
    pub fn send_frame(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        if self.hdr + len > self.tx.len() {
            return;
        }
        fill(&mut self.tx[self.hdr..self.hdr + len]);
        finish_and_write(
            self.fd.as_raw_fd(),
            &mut self.tx[..self.hdr + len],
            self.hdr,
            self.guest_mtu,
            &mut self.tx_dropped,
        );
    }
}

// struct virtio_net_hdr: flags and gso_type.
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;

/// Fills the virtio-net header before a frame the stack built (if there is
/// one) and writes both to the tap.
///
/// A TCP segment gets "checksum needed" (the guest's kernel trusts it when
/// the segment is for itself, and computes it when it forwards the segment)
/// with the pseudo-header sum in its checksum field, as Linux's own
/// CHECKSUM_PARTIAL packets have it: the stack computes no TCP checksum.
/// A segment longer than the guest's MTU allows is marked TCPv4 GSO, with
/// the segment size that fits the MTU.
///
/// Anything else longer than the guest's MTU (the stack's MTU is larger
/// than the guest's here, so it fragments nothing) is cut into IPv4
/// fragments that fit: the guest's kernel drops longer frames that are not
/// GSO packets.
fn finish_and_write(fd: RawFd, buf: &mut [u8], hdr: usize, guest_mtu: usize, dropped: &mut u64) {
    let (head, frame) = buf.split_at_mut(hdr);
    head.fill(0);
    if frame.len() > ETHERNET_HEADER + guest_mtu && tcp_offsets(frame).is_none() {
        write_fragments(fd, buf, hdr, guest_mtu, dropped);
        return;
    }
    if hdr > 0 {
        if let Some(tcp) = tcp_offsets(frame) {
            let sum = pseudo_header_sum(frame, tcp.ip, tcp.tcp_len);
            frame[tcp.l4 + 16..tcp.l4 + 18].copy_from_slice(&sum.to_be_bytes());
            head[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
            let headers = tcp.l4 + tcp.header_len;
            head[6..8].copy_from_slice(&(tcp.l4 as u16).to_ne_bytes());
            head[8..10].copy_from_slice(&16u16.to_ne_bytes());
            let seg = guest_mtu.saturating_sub(tcp.l4 - tcp.ip + tcp.header_len);
            if seg > 0 && frame.len() - headers > seg {
                head[1] = if tcp.v6 {
                    VIRTIO_NET_HDR_GSO_TCPV6
                } else {
                    VIRTIO_NET_HDR_GSO_TCPV4
                };
                head[2..4].copy_from_slice(&(headers as u16).to_ne_bytes());
                head[4..6].copy_from_slice(&(seg as u16).to_ne_bytes());
            }
        }
    }
    write_frame(fd, buf, dropped);
}

/// Writes the IPv4 packet in `buf` (virtio-net header, ethernet frame) as
/// fragments of at most `guest_mtu` bytes. Each fragment's headers are
/// written just before its data, over bytes of the fragment already sent.
fn write_fragments(fd: RawFd, buf: &mut [u8], hdr: usize, guest_mtu: usize, dropped: &mut u64) {
    let ip = hdr + ETHERNET_HEADER;
    if buf.len() >= ip + 40 && buf[ip - 2..ip] == [0x86, 0xdd] {
        write_fragments6(fd, buf, hdr, guest_mtu, dropped);
        return;
    }
    if buf.len() < ip + 20 || buf[ip - 2..ip] != [0x08, 0x00] {
        return;
    }
    let ihl = usize::from(buf[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([buf[ip + 2], buf[ip + 3]]));
    let headers = ip + ihl;
    let chunk = guest_mtu.saturating_sub(ihl) & !7;
    if ihl < 20 || ip + total > buf.len() || total <= ihl || chunk == 0 {
        return;
    }
    let mut saved = [0u8; VNET_HDR + ETHERNET_HEADER + 60];
    saved[..headers].copy_from_slice(&buf[..headers]);
    // The stack leaves the identification 0 on packets it does not
    // fragment itself: give each fragmented packet its own.
    static IDENT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let ident = IDENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    saved[ip + 4..ip + 6].copy_from_slice(&ident.to_be_bytes());
    let flags_offset = u16::from_be_bytes([buf[ip + 6], buf[ip + 7]]);
    let base_offset = usize::from(flags_offset & 0x1fff) * 8;
    let more_after = flags_offset & 0x2000 != 0;
    let data_len = total - ihl;
    let mut done = 0;
    while done < data_len {
        let len = chunk.min(data_len - done);
        let last = done + len == data_len;
        // The fragment's headers end where its data starts.
        let start = done;
        let f = &mut buf[start..headers + done + len];
        f[..headers].copy_from_slice(&saved[..headers]);
        let iph = &mut f[ip..headers];
        iph[2..4].copy_from_slice(&((ihl + len) as u16).to_be_bytes());
        let mf = if last && !more_after { 0 } else { 0x2000 };
        let field = mf | (((base_offset + done) / 8) as u16 & 0x1fff);
        iph[6..8].copy_from_slice(&field.to_be_bytes());
        iph[10..12].copy_from_slice(&[0, 0]);
        let sum = !fold(
            iph.chunks_exact(2)
                .map(|p| u32::from(u16::from_be_bytes([p[0], p[1]])))
                .sum(),
        );
        iph[10..12].copy_from_slice(&sum.to_be_bytes());
        write_frame(fd, f, dropped);
        done += len;
    }
}

/// [`write_fragments`] for an IPv6 packet (no extension headers, as the
/// stack sends them): each fragment is the packet's headers with a
/// fragment header added, then its share of the payload, written with
/// `writev` straight from the packet.
fn write_fragments6(fd: RawFd, buf: &[u8], hdr: usize, guest_mtu: usize, dropped: &mut u64) {
    const FRAGMENT: u8 = 44;
    let ip = hdr + ETHERNET_HEADER;
    let payload_len = usize::from(u16::from_be_bytes([buf[ip + 4], buf[ip + 5]]));
    let next_header = buf[ip + 6];
    let data = ip + 40;
    let chunk = guest_mtu.saturating_sub(40 + 8) & !7;
    if next_header == FRAGMENT || data + payload_len > buf.len() || chunk == 0 {
        return;
    }
    static IDENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let ident = IDENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut head = [0u8; VNET_HDR + ETHERNET_HEADER + 40 + 8];
    let head_len = data + 8;
    head[..data].copy_from_slice(&buf[..data]);
    head[ip + 6] = FRAGMENT;
    head[data] = next_header;
    head[data + 4..data + 8].copy_from_slice(&ident.to_be_bytes());
    let mut done = 0;
    while done < payload_len {
        let len = chunk.min(payload_len - done);
        let more = u16::from(done + len < payload_len);
        head[ip + 4..ip + 6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
        head[data + 2..data + 4].copy_from_slice(&(done as u16 | more).to_be_bytes());
        write_frame_parts(
            fd,
            &head[..head_len],
            &buf[data + done..data + done + len],
            dropped,
        );
        done += len;
    }
}

/// Writes one frame made of `head` and `body` (a `writev`: the tap takes
/// it as one packet).
fn write_frame_parts(fd: RawFd, head: &[u8], body: &[u8], dropped: &mut u64) {
    let iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    loop {
        // SAFETY: both iovecs point into live slices of their lengths,
        // which the kernel only reads.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
        if n >= 0 {
            return;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            *dropped += 1;
            return;
        }
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The folded (not complemented) sum of the TCP pseudo-header (IPv4 or
/// IPv6: the addresses, the protocol and the segment's length).
fn pseudo_header_sum(frame: &[u8], ip: usize, tcp_len: usize) -> u16 {
    let addresses = if frame[ip] >> 4 == 6 {
        ip + 8..ip + 40
    } else {
        ip + 12..ip + 20
    };
    let mut sum: u32 = 6 + (tcp_len as u32 >> 16) + (tcp_len as u32 & 0xffff);
    for pair in frame[addresses].chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    fold(sum)
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
    hdr: usize,
    guest_mtu: usize,
    dropped: &'a mut u64,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len() - self.hdr);
        let r = f(&mut self.buf[self.hdr..self.hdr + len]);
        finish_and_write(
            self.fd,
            &mut self.buf[..self.hdr + len],
            self.hdr,
            self.guest_mtu,
            self.dropped,
        );
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
                frame: &self.rx[self.hdr..self.hdr + len],
            },
            TxToken {
                fd,
                buf: &mut self.tx,
                hdr: self.hdr,
                guest_mtu: self.guest_mtu,
                dropped: &mut self.tx_dropped,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            fd: self.fd.as_raw_fd(),
            buf: &mut self.tx,
            hdr: self.hdr,
            guest_mtu: self.guest_mtu,
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
        // With virtio-net headers, TCP segments leave with "checksum
        // needed" instead (see `finish_and_write`).
        let mut sums = ChecksumCapabilities::default();
        sums.tcp = if self.hdr > 0 {
            Checksum::None
        } else {
            Checksum::Tx
        };
        sums.udp = Checksum::Tx;
        sums.icmpv4 = Checksum::Tx;
        caps.checksum = sums;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rk_gvtap::tcp_frame::raise_syn_mss;
    use std::os::fd::FromRawFd;

    /// An ethernet + IPv4 frame with `proto` and `l4` as its payload.
    fn frame(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ETHERNET_HEADER];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = 20 + l4.len();
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 10, 0, 2, 1, 10, 0, 2, 100,
        ];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }

    fn tcp(flags: u8, options: &[u8], payload: usize) -> Vec<u8> {
        let len = 20 + options.len();
        let mut t = vec![0u8; len];
        t[12] = ((len / 4) as u8) << 4;
        t[13] = flags;
        t[20..].copy_from_slice(options);
        t.extend((0..payload).map(|i| i as u8));
        t
    }

    /// Frames written to a datagram socket pair, one per message.
    fn capture(write: impl FnOnce(RawFd)) -> Vec<Vec<u8>> {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills two descriptors we then own.
        assert_eq!(
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) },
            0
        );
        // SAFETY: fresh descriptors from socketpair.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        write(a.as_raw_fd());
        drop(a);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70000];
        loop {
            // SAFETY: reading into a buffer we own.
            let n = unsafe { libc::read(b.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.push(buf[..n as usize].to_vec());
        }
    }

    fn ones_sum(b: &[u8]) -> u32 {
        b.chunks(2)
            .map(|p| u32::from(u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)])))
            .sum()
    }

    #[test]
    fn the_mss_of_the_guests_syns_is_raised_and_nothing_else() {
        let mss = [2, 4, 0x05, 0xb4, 1, 1, 4, 2];
        let mut syn = frame(6, &tcp(0x02, &mss, 0));
        assert!(raise_syn_mss(&mut syn, 65535));
        assert_eq!(&syn[34 + 22..34 + 24], &65495u16.to_be_bytes());
        let mut synack = frame(6, &tcp(0x12, &mss, 0));
        assert!(raise_syn_mss(&mut synack, 65535));
        let mut ack = frame(6, &tcp(0x10, &mss, 0));
        assert!(!raise_syn_mss(&mut ack, 65535));
        let mut bare = frame(6, &tcp(0x02, &[], 0));
        assert!(!raise_syn_mss(&mut bare, 65535));
        let mut udp = frame(17, &[0u8; 12]);
        assert!(!raise_syn_mss(&mut udp, 65535));
        // Truncated option lists are left alone.
        let mut odd = frame(6, &tcp(0x02, &[2, 9, 0, 0], 0));
        assert!(!raise_syn_mss(&mut odd, 65535));
    }

    #[test]
    fn a_super_segment_leaves_as_gso_with_a_partial_checksum() {
        let seg = tcp(0x10, &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], 10000);
        let f = frame(6, &seg);
        let mut buf = vec![0u8; VNET_HDR];
        buf.extend_from_slice(&f);
        let frames = capture(|fd| {
            let mut dropped = 0;
            finish_and_write(fd, &mut buf, VNET_HDR, 1500, &mut dropped);
        });
        assert_eq!(frames.len(), 1);
        let (h, out) = frames[0].split_at(VNET_HDR);
        assert_eq!(h[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(h[1], VIRTIO_NET_HDR_GSO_TCPV4);
        let ne = |at: usize| u16::from_ne_bytes([h[at], h[at + 1]]);
        assert_eq!(ne(2), 14 + 20 + 32, "headers");
        assert_eq!(ne(4), 1500 - 20 - 32, "segment size fits the MTU");
        assert_eq!((ne(6), ne(8)), (34, 16), "checksum start and offset");
        // What the guest's kernel computes from the partial sum is the
        // real checksum.
        let tcp_bytes = &out[34..];
        let finished = !fold(ones_sum(tcp_bytes));
        let mut zeroed = tcp_bytes.to_vec();
        zeroed[16..18].fill(0);
        let pseudo = ones_sum(&out[26..34]) + 6 + tcp_bytes.len() as u32;
        assert_eq!(finished, !fold(pseudo + ones_sum(&zeroed)));
    }

    #[test]
    fn a_segment_that_fits_is_no_gso_packet_and_udp_gets_no_flags() {
        let f = frame(6, &tcp(0x18, &[], 1000));
        let mut buf = vec![0xffu8; VNET_HDR];
        buf.extend_from_slice(&f);
        let frames = capture(|fd| finish_and_write(fd, &mut buf, VNET_HDR, 1500, &mut 0));
        assert_eq!(frames[0][0..2], [VIRTIO_NET_HDR_F_NEEDS_CSUM, 0]);
        let f = frame(17, &[0u8; 100]);
        let mut buf = vec![0xffu8; VNET_HDR];
        buf.extend_from_slice(&f);
        let frames = capture(|fd| finish_and_write(fd, &mut buf, VNET_HDR, 1500, &mut 0));
        assert_eq!(frames[0][..VNET_HDR], [0; VNET_HDR]);
        assert_eq!(&frames[0][VNET_HDR..], &f[..]);
    }

    #[test]
    fn datagrams_over_the_mtu_leave_in_fragments_that_fit() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let f = frame(17, &payload);
        for hdr in [0, VNET_HDR] {
            let mut buf = vec![0u8; hdr];
            buf.extend_from_slice(&f);
            let frames = capture(|fd| finish_and_write(fd, &mut buf, hdr, 1500, &mut 0));
            assert_eq!(frames.len(), 3, "1480 + 1480 + 40 bytes");
            let mut joined = Vec::new();
            let mut ident = None;
            for (k, fr) in frames.iter().enumerate() {
                let ip = &fr[hdr + ETHERNET_HEADER..];
                assert!(ip.len() <= 1500);
                assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
                assert_eq!(fold(ones_sum(&ip[..20])), 0xffff, "header checksum");
                let field = u16::from_be_bytes([ip[6], ip[7]]);
                assert_eq!(usize::from(field & 0x1fff) * 8, joined.len());
                assert_eq!(field & 0x2000 != 0, k < 2, "more fragments");
                let id = u16::from_be_bytes([ip[4], ip[5]]);
                assert_eq!(*ident.get_or_insert(id), id);
                joined.extend_from_slice(&ip[20..]);
            }
            assert_eq!(joined, payload);
        }
    }
}
