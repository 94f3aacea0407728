//! What the client hands back to its caller: messages to send and events
//! to act on.

use crate::lease::Lease;
use crate::message::{Outgoing, ReplyError};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Where a message goes. Either way to UDP port [`crate::SERVER_PORT`] from
/// [`crate::CLIENT_PORT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255 (ethernet ff:ff:ff:ff:ff:ff).
    Broadcast,
    /// The lease's server, by unicast.
    Server(Ipv4Addr),
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub message: Outgoing,
    /// The encoded DHCP message (the UDP payload).
    pub payload: Vec<u8>,
    pub destination: Destination,
}

/// Why a lease ended before it was released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// The server refused to extend it (with its message, if any).
    Nak(Option<String>),
    /// It expired without any server extending it.
    Expired,
}

/// What the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new lease: configure its address (replacing the one of a lease
    /// that was lost, which may differ).
    Bound(Lease),
    /// The current lease was extended; the address is unchanged, other
    /// fields may have changed.
    Renewed(Lease),
    /// The lease ended: stop using its address. The client is already
    /// looking for a new one.
    Lost { lease: Lease, reason: LossReason },
    /// No lease after [`ClientConfig::give_up_after`]. The client keeps
    /// trying, with longer waits; a caller that must not wait stops here.
    NoAnswer { waited: Duration },
}

/// The result of one call into the client.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    pub transmit: Option<Transmit>,
    pub event: Option<Event>,
    /// Why a datagram passed to [`Client::handle_packet`] was ignored (for
    /// debug logs; other clients' traffic is normal on a shared link).
    pub ignored: Option<ReplyError>,
}
