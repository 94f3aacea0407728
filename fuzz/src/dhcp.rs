//! rk-dhcp: what DHCP servers on the link send (the lxc-user-nic driver
//! reads them from a UDP socket, the vpnkit driver from raw frames).
//!
//! - `dhcp_reply`: [`rk_dhcp::message::parse_reply`] on arbitrary bytes;
//! - `dhcp_client`: the [`rk_dhcp::Client`] state machine fed arbitrary
//!   datagrams and timer events;
//! - `dhcp_frame`: [`rk_dhcp::frame::udp_in_frame`] / `decapsulate` on
//!   arbitrary ethernet frames.

use rk_dhcp::frame::{self, Addresses, Datagram};
use rk_dhcp::message::parse_reply;
use rk_dhcp::{Client, ClientConfig, Event, Lease, Reply, ReplyError, State, CLIENT_PORT};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const XID: u32 = 0x1234_5678;

/// Offsets in a BOOTP message.
const OP: usize = 0;
const HLEN: usize = 2;
const XID_AT: usize = 4;
const CHADDR_AT: usize = 28;

/// Makes `msg` look like a reply to transaction `xid` of [`MAC`] so that the
/// fuzzer reaches the option parsing without guessing those: bit 0 of
/// `how` writes the xid and chaddr, bit 1 the BOOTREPLY opcode.
fn address_to_us(msg: &mut [u8], how: u8, xid: u32) {
    if how & 1 != 0 && msg.len() >= CHADDR_AT + 6 {
        msg[XID_AT..XID_AT + 4].copy_from_slice(&xid.to_be_bytes());
        msg[CHADDR_AT..CHADDR_AT + 6].copy_from_slice(&MAC);
    }
    if how & 2 != 0 && !msg.is_empty() {
        msg[OP] = 2;
    }
}

/// `dhcp_reply`: the first byte says how to address the rest to the client
/// (see `address_to_us`); the rest is the UDP payload.
pub fn reply(data: &[u8]) {
    let Some((&how, msg)) = data.split_first() else {
        return;
    };
    let mut msg = msg.to_vec();
    address_to_us(&mut msg, how, XID);
    match parse_reply(&msg, &MAC, XID) {
        Ok(Reply::Offer(lease)) | Ok(Reply::Ack { lease, .. }) => check_lease(&lease),
        Ok(Reply::Nak(_)) => {}
        Err(ReplyError::NotForUs) => {
            assert!(
                msg.get(XID_AT..XID_AT + 4) != Some(&XID.to_be_bytes()[..])
                    || msg.get(CHADDR_AT..CHADDR_AT + 6) != Some(&MAC[..])
                    || msg.get(HLEN).is_none_or(|n| !(6..=16).contains(n))
                    || msg.first() != Some(&2),
                "a reply to this client was taken as someone else's"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// What every lease the client accepts must satisfy: the caller configures
/// an interface from it without further checks.
pub fn check_lease(l: &Lease) {
    assert!(l.prefix_len <= 32, "prefix /{} in {l:?}", l.prefix_len);
    let mask = u32::from(l.netmask());
    assert_eq!(mask.leading_ones(), u32::from(l.prefix_len), "{l:?}");
    assert_eq!(mask.count_ones(), u32::from(l.prefix_len), "{l:?}");
    assert_eq!(l.cidr(), format!("{}/{}", l.address, l.prefix_len));
    assert!(
        !(l.address.is_unspecified() || l.address.is_broadcast() || l.address.is_multicast()),
        "unusable address in {l:?}"
    );
    assert!(l.router.is_none_or(|r| !r.is_unspecified()), "{l:?}");
    assert!(l.dns.iter().all(|a| !a.is_unspecified()), "{l:?}");
    assert!(l.domain_name.as_ref().is_none_or(|d| !d.is_empty()));
    assert!(l.mtu.is_none_or(|m| m >= 68), "{l:?}");
    match (l.lease_time, l.renew_after, l.rebind_after) {
        (None, None, None) => {}
        (Some(lease), Some(t1), Some(t2)) => {
            assert!(t1 <= t2 && t2 <= lease, "timers out of order in {l:?}");
            assert!(lease < Duration::from_secs(u64::from(u32::MAX)));
        }
        _ => panic!("timers partly set in {l:?}"),
    }
}

/// `dhcp_client`: a conversation between a client and a server that sends
/// the fuzzer's bytes. The input is a list of steps, each starting with an
/// operation byte (taken modulo 5):
/// - 0: the clock advances by the next byte × 100 ms, then a timeout;
/// - 1: the clock jumps to the client's next deadline, then a timeout;
/// - 2, 3: a datagram: a little-endian `u16` length, then that many bytes
///   (fewer at the end of the input); with 3 it is first addressed to the
///   client's current transaction (see `address_to_us`, both bits);
/// - 4: the client releases its lease.
pub fn client(data: &[u8]) {
    let start = Instant::now();
    let mut now = start;
    let mut c = Client::new(ClientConfig::new(MAC), 7, now);
    let mut out = c.handle_timeout(now);
    check_client(&c, &out, now, true);
    let mut rest = data;
    while let Some((&op, after)) = rest.split_first() {
        rest = after;
        let timeout = match op % 5 {
            0 => {
                let (&n, after) = rest.split_first().unwrap_or((&0, &[]));
                rest = after;
                now += Duration::from_millis(100) * u32::from(n);
                out = c.handle_timeout(now);
                true
            }
            1 => {
                if let Some(d) = c.next_deadline() {
                    now = now.max(d);
                }
                out = c.handle_timeout(now);
                true
            }
            2 | 3 => {
                let len = match rest {
                    [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
                    _ => rest.len(),
                };
                rest = rest.get(2..).unwrap_or(&[]);
                let (msg, after) = rest.split_at(len.min(rest.len()));
                rest = after;
                let mut msg = msg.to_vec();
                if op % 5 == 3 {
                    address_to_us(&mut msg, 3, c.xid());
                }
                out = c.handle_packet(&msg, now);
                false
            }
            _ => {
                let held = c.lease().cloned();
                let sent = c.release(now);
                assert_eq!(c.state(), State::Released);
                assert_eq!(sent.is_some(), held.is_some(), "release of {held:?}");
                if let Some(t) = sent {
                    assert_not_a_reply(&t.payload, c.xid());
                }
                out = rk_dhcp::Output::default();
                false
            }
        };
        check_client(&c, &out, now, timeout);
        // Far beyond any lease time the fuzzer can ask for: stop.
        if now.duration_since(start) > Duration::from_secs(1 << 40) {
            return;
        }
    }
}

fn check_client(c: &Client, out: &rk_dhcp::Output, now: Instant, after_timeout: bool) {
    let holds = matches!(c.state(), State::Bound | State::Renewing | State::Rebinding);
    assert_eq!(
        c.lease().is_some(),
        holds,
        "lease {:?} in state {:?}",
        c.lease(),
        c.state()
    );
    if let Some(l) = c.lease() {
        check_lease(l);
    }
    match &out.event {
        Some(Event::Bound(l)) | Some(Event::Renewed(l)) => {
            check_lease(l);
            assert_eq!(c.lease(), Some(l));
        }
        Some(Event::Lost { lease, .. }) => {
            check_lease(lease);
            assert!(c.lease().is_none());
        }
        Some(Event::NoAnswer { .. }) | None => {}
    }
    if let Some(t) = &out.transmit {
        assert_ne!(c.state(), State::Released);
        assert_not_a_reply(&t.payload, c.xid());
    }
    if c.state() == State::Released {
        assert_eq!(c.next_deadline(), None);
        assert!(out.transmit.is_none() && out.event.is_none());
    }
    if after_timeout {
        // Whatever was due is done: a caller that sleeps until the next
        // deadline must not spin.
        if let Some(d) = c.next_deadline() {
            assert!(d > now, "deadline {d:?} not after {now:?} in {c:?}");
        }
    }
}

/// The client's own messages are requests: never taken as a reply by
/// itself, but well-formed DHCP.
fn assert_not_a_reply(payload: &[u8], xid: u32) {
    assert_eq!(
        parse_reply(payload, &MAC, xid),
        Err(ReplyError::NotForUs),
        "the client sent something that is not a request to {xid:#x}"
    );
}

/// `dhcp_frame`: the input is an ethernet frame.
pub fn frame(data: &[u8]) {
    if let Some(d) = frame::udp_in_frame(data) {
        check_datagram(data, &d);
    }
    match frame::decapsulate(data) {
        Some(d) => {
            assert_eq!(
                (d.src_port, d.dst_port),
                (rk_dhcp::SERVER_PORT, CLIENT_PORT)
            );
            assert_eq!(Some(d), frame::udp_in_frame(data));
        }
        None => {
            if let Some(d) = frame::udp_in_frame(data) {
                assert_ne!(
                    (d.src_port, d.dst_port),
                    (rk_dhcp::SERVER_PORT, CLIENT_PORT)
                );
            }
        }
    }
    // Any payload that fits wraps into a frame that unwraps to itself.
    if data.len() <= usize::from(u16::MAX) - 28 {
        let a = Addresses::from_client(MAC, Ipv4Addr::new(10, 0, 2, 100), None);
        let f = frame::encapsulate_ports(&a, 67, 68, data);
        let d = frame::decapsulate(&f).expect("an encapsulated reply unwraps");
        assert_eq!((d.addresses, d.payload), (a, data));
    }
}

fn check_datagram(data: &[u8], d: &Datagram<'_>) {
    // The payload is a part of the frame, after the three headers.
    let start = d.payload.as_ptr() as usize - data.as_ptr() as usize;
    assert!(start >= 14 + 20 + 8 && start + d.payload.len() <= data.len());
    assert_eq!(&data[0..6], &d.addresses.dst_mac);
    assert_eq!(&data[6..12], &d.addresses.src_mac);
    // Wrapped again (without IP options, with a fresh checksum), it reads
    // back the same.
    let again = frame::encapsulate_ports(&d.addresses, d.src_port, d.dst_port, d.payload);
    assert_eq!(frame::udp_in_frame(&again).as_ref(), Some(d));
}
