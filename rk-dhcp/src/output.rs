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
    /// No lease after [`crate::ClientConfig::give_up_after`] without a
    /// sign of a server, or after [`crate::ClientConfig::busy_give_up_after`]
    /// in all. `waited` counts from the start of the search (restarts with
    /// a DISCOVER included); `attempt` says what happened. The client keeps
    /// trying, with longer waits; a caller that must not wait stops here
    /// (and sends [`crate::Client::abandon`]'s message).
    NoAnswer { waited: Duration, attempt: Attempt },
}

/// What a search for a lease did: for messages that say what happened
/// rather than only that it failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub discovers: u32,
    /// DHCPREQUESTs for an offer or for a remembered address.
    pub requests: u32,
    /// DHCPOFFERs to this client (a server answers each DISCOVER).
    pub offers: u32,
    /// The last offer: its address and server.
    pub last_offer: Option<(Ipv4Addr, Ipv4Addr)>,
    pub naks: u32,
    /// Server replies to other clients seen on the link.
    pub replies_to_others: u32,
}

impl Attempt {
    /// "sent 9 DHCPDISCOVERs and 5 DHCPREQUESTs over 15.0s; got 2
    /// DHCPOFFERs (the last: 10.0.3.45 from 10.0.3.1) and no DHCPACK; ..."
    pub fn describe(&self, waited: Duration) -> String {
        let mut s = format!(
            "sent {} and {} over {:.1}s; ",
            plural(self.discovers, "DHCPDISCOVER"),
            plural(self.requests, "DHCPREQUEST"),
            waited.as_secs_f64()
        );
        match self.last_offer {
            Some((address, server)) => s.push_str(&format!(
                "got {} (the last: {address} from {server}), {} and no DHCPACK",
                plural(self.offers, "DHCPOFFER"),
                plural(self.naks, "DHCPNAK"),
            )),
            None if self.naks > 0 => s.push_str(&format!(
                "got no DHCPOFFER and {}",
                plural(self.naks, "DHCPNAK")
            )),
            None => s.push_str("got no answer"),
        }
        if self.replies_to_others > 0 {
            s.push_str(&format!(
                "; meanwhile the server sent {} to other clients (it is there, but busy or \
                 refusing this client)",
                plural(self.replies_to_others, "reply")
            ));
        } else if self.offers == 0 && self.naks == 0 {
            s.push_str(" from any DHCP server");
        }
        s
    }
}

fn plural(n: u32, what: &str) -> String {
    match (n, what) {
        (1, _) => format!("1 {what}"),
        (_, "reply") => format!("{n} replies"),
        _ => format!("{n} {what}s"),
    }
}

/// The result of one call into the client.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    pub transmit: Option<Transmit>,
    pub event: Option<Event>,
    /// Why a datagram passed to [`Client::handle_packet`](crate::Client::handle_packet) was ignored (for
    /// debug logs; other clients' traffic is normal on a shared link).
    pub ignored: Option<ReplyError>,
}
