//! A DHCPv4 client that does no I/O.
//!
//! `rk-dhcp` knows the protocol (RFC 2131, plus rapid commit from RFC 4039)
//! and nothing about sockets, so the same code runs over a UDP socket inside
//! a network namespace (the lxc-user-nic driver) and over a raw ethernet link
//! (the vpnkit driver). The caller owns the transport and the clock:
//!
//! ```no_run
//! use rk_dhcp::{Client, ClientConfig, Destination, Event};
//! use std::time::Instant;
//! # fn send(_: &[u8], _: Destination) {}
//! # fn receive_until(_: Option<Instant>) -> Option<Vec<u8>> { None }
//! let mut client = Client::new(ClientConfig::new([0x02, 0, 0, 0, 0, 1]), 0x1234, Instant::now());
//! let mut output = client.handle_timeout(Instant::now()); // the DISCOVER is due at once
//! loop {
//!     if let Some(t) = output.transmit.take() {
//!         send(&t.payload, t.destination); // UDP to port 67, or wrapped by `frame::encapsulate`
//!     }
//!     match output.event.take() {
//!         Some(Event::Bound(lease)) => println!("got {}", lease.cidr()),
//!         Some(Event::NoAnswer { waited, attempt }) => panic!("no lease: {}", attempt.describe(waited)),
//!         _ => {}
//!     }
//!     output = match receive_until(client.next_deadline()) {
//!         Some(bytes) => client.handle_packet(&bytes, Instant::now()),
//!         None => client.handle_timeout(Instant::now()),
//!     };
//! }
//! ```
//!
//! Layers, each usable on its own:
//! - [`message`]: build DISCOVER / REQUEST (selecting, renewing, rebinding) /
//!   RELEASE / DECLINE for a given MAC and transaction id, and parse the
//!   server's OFFER / ACK / NAK into a [`Reply`];
//! - [`Lease`]: address, prefix, router, DNS, lease time, T1, T2, server id;
//! - [`Client`]: the state machine with retransmission back-off, the T1
//!   renewal, T2 rebinding and expiry timers, and [`Client::release`];
//! - [`frame`]: ethernet + IPv4 + UDP framing for transports that carry raw
//!   frames instead of UDP datagrams.

pub mod backoff;
pub mod client;
pub mod frame;
mod guard;
pub mod lease;
pub mod message;
pub mod output;

pub use backoff::Backoff;
pub use client::{
    Attempt, Client, ClientConfig, Destination, Event, LossReason, Output, State, Transmit,
};
pub use lease::Lease;
pub use message::{Identity, Nak, Outgoing, Reply, ReplyError, CLIENT_PORT, SERVER_PORT};

/// A transaction id that differs between processes and calls, for seeding
/// [`Client::new`]. DHCP needs ids that are unlikely to collide with other
/// clients on the link, not secret ones; std's per-process random hash keys
/// plus the time give that without another dependency.
pub fn random_xid() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}
