//! The client state machine of RFC 2131 (section 4.4), without I/O.
//!
//! The caller feeds it the time and the datagrams that arrive, and sends
//! what it returns:
//! - [`Client::handle_timeout`] whenever [`Client::next_deadline`] has come
//!   (and once right after [`Client::new`]: the first DISCOVER is due at once);
//! - [`Client::handle_packet`] for each datagram received on the client port;
//! - [`Client::release`] before the interface goes away.
//!
//! Each returns an [`Output`]: at most one message to send and at most one
//! [`Event`] for the caller (a lease to configure, a renewal, a loss).

use crate::backoff::{halfway_retry, Backoff};
use crate::lease::Lease;
use crate::message::{build, parse_reply, Identity, Outgoing, Reply, ReplyError};
pub use crate::output::{Attempt, Destination, Event, LossReason, Output, Transmit};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How the client behaves; [`ClientConfig::new`] gives sensible defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub identity: Identity,
    /// The first retransmission of a DISCOVER or REQUEST comes this long
    /// after the first send; each later one waits twice as long. Default 250 ms.
    pub first_retransmit: Duration,
    /// The longest wait between retransmissions while acquiring. Default 4 s.
    pub max_retransmit: Duration,
    /// After this long without a lease and without hearing from any DHCP
    /// server the client reports [`Event::NoAnswer`] (and keeps trying,
    /// more slowly). Default 15 s.
    pub give_up_after: Duration,
    /// While a server is heard (replies to this client, or on a shared
    /// link the broadcast replies to other clients), it is there but busy:
    /// dnsmasq pings each new address for 3 s before offering it, one
    /// address at a time, so a burst of new clients waits in its queue.
    /// The client then keeps waiting, and keeps a pending offer's REQUEST
    /// going instead of starting over, until this long in all (or
    /// `give_up_after` of silence). Default 60 s.
    pub busy_give_up_after: Duration,
    /// An address to ask for in the DISCOVER (option 50). After a lease was
    /// lost the client asks for that lease's address instead.
    pub requested_address: Option<Ipv4Addr>,
    /// The address of an earlier lease, to ask for directly (INIT-REBOOT,
    /// RFC 2131 3.2) before any DISCOVER. An authoritative server that
    /// allows it acknowledges at once, which skips the OFFER round trip and
    /// the server's check that a new address is unused (dnsmasq pings it
    /// for 3 s). A NAK falls back to DISCOVER at once, silence after
    /// `reboot_attempts` REQUESTs. Default `None`.
    pub reboot_address: Option<Ipv4Addr>,
    /// INIT-REBOOT REQUESTs sent before falling back to DISCOVER. Default 2
    /// (with the default back-off: a fall-back after 0.75 s).
    pub reboot_attempts: u32,
    /// Offer rapid commit (RFC 4039): a server that supports it answers the
    /// DISCOVER with an ACK, saving a round trip. Default `true`.
    pub rapid_commit: bool,
    /// REQUESTs sent for one OFFER before starting over with a DISCOVER.
    /// Default 4.
    pub max_requests: u32,
}

impl ClientConfig {
    pub fn new(mac: [u8; 6]) -> Self {
        ClientConfig {
            identity: Identity::new(mac),
            first_retransmit: Duration::from_millis(250),
            max_retransmit: Duration::from_secs(4),
            give_up_after: Duration::from_secs(15),
            busy_give_up_after: Duration::from_secs(60),
            requested_address: None,
            reboot_address: None,
            reboot_attempts: 2,
            rapid_commit: true,
            max_requests: 4,
        }
    }
}

/// Where the client is in RFC 2131's state diagram (INIT is folded into
/// SELECTING: a DISCOVER is always due or on its way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Asking for [`ClientConfig::reboot_address`] (INIT-REBOOT).
    Rebooting,
    /// Sending DISCOVERs, waiting for an OFFER.
    Selecting,
    /// Sending REQUESTs for an OFFER, waiting for the ACK.
    Requesting,
    /// Holding a lease; nothing to send until T1.
    Bound,
    /// Past T1: unicast REQUESTs to the lease's server.
    Renewing,
    /// Past T2: broadcast REQUESTs to any server.
    Rebinding,
    /// The lease was released; the client does nothing more.
    Released,
}

/// The longest wait between DISCOVERs once the client has reported
/// [`Event::NoAnswer`].
const SLOW_RETRANSMIT: Duration = Duration::from_secs(64);

/// A DHCPv4 client for one interface.
#[derive(Debug, Clone)]
pub struct Client {
    config: ClientConfig,
    state: State,
    xid: u32,
    rng: u64,
    backoff: Backoff,
    /// Start of the current exchange: the `secs` field counts from here.
    exchange_started: Instant,
    /// When the first REQUEST of the current INIT-REBOOT or offer went out.
    requesting_since: Instant,
    /// When the client started looking for the lease it does not have yet
    /// (restarts with a DISCOVER do not move it).
    acquire_started: Instant,
    /// What this search for a lease did so far.
    attempt: Attempt,
    /// The last time a DHCP server was heard, to this client or another.
    last_heard: Option<Instant>,
    /// Whether [`Event::NoAnswer`] is still to be reported: `false` once
    /// reported or bound.
    watching: bool,
    next_send: Option<Instant>,
    last_sent: Instant,
    offer: Option<Lease>,
    requests_sent: u32,
    lease: Option<Lease>,
    /// The lease's times count from the REQUEST that got it acknowledged.
    lease_start: Instant,
}

impl Client {
    /// A client about to send its first DISCOVER (due at `now`). `seed`
    /// makes the transaction ids (e.g. [`crate::random_xid`]).
    pub fn new(config: ClientConfig, seed: u32, now: Instant) -> Self {
        let backoff = Backoff::new(config.first_retransmit, config.max_retransmit);
        let state = match config.reboot_address {
            Some(_) => State::Rebooting,
            None => State::Selecting,
        };
        let mut c = Client {
            state,
            xid: 0,
            rng: u64::from(seed) ^ 0x5DEE_CE66_D1CE_4E5B,
            backoff,
            exchange_started: now,
            requesting_since: now,
            acquire_started: now,
            attempt: Attempt::default(),
            last_heard: None,
            watching: true,
            next_send: Some(now),
            last_sent: now,
            offer: None,
            requests_sent: 0,
            lease: None,
            lease_start: now,
            config,
        };
        c.xid = c.next_xid();
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The lease in force (bound, renewing or rebinding).
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The transaction id of the current exchange.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    pub fn identity(&self) -> &Identity {
        &self.config.identity
    }

    /// What the search for the current (or last) lease did.
    pub fn attempt(&self) -> &Attempt {
        &self.attempt
    }

    /// When [`Event::NoAnswer`] is due: `give_up_after` after the last
    /// sign of a server (or the start), but no later than
    /// `busy_give_up_after` after the start.
    fn give_up_at(&self) -> Option<Instant> {
        if !self.watching {
            return None;
        }
        let quiet_since = self
            .last_heard
            .map_or(self.acquire_started, |t| t.max(self.acquire_started));
        let longest = self
            .config
            .busy_give_up_after
            .max(self.config.give_up_after);
        Some((quiet_since + self.config.give_up_after).min(self.acquire_started + longest))
    }

    /// A server was heard since the REQUEST went out, and not too long
    /// ago: it is working through a queue that holds the REQUEST, so an
    /// unanswered REQUEST is waited for rather than dropped.
    fn server_busy(&self, now: Instant) -> bool {
        self.last_heard.is_some_and(|t| t > self.requesting_since)
            && now < self.requesting_since + self.config.give_up_after
    }

    /// When [`Client::handle_timeout`] must be called next; `None`: only
    /// when a packet arrives (an infinite lease) or never (released).
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Rebooting | State::Selecting | State::Requesting => {
                earliest(self.next_send, self.give_up_at())
            }
            State::Bound => self.lease_time_point(|l| l.renew_after),
            State::Renewing => earliest(self.next_send, self.lease_time_point(|l| l.rebind_after)),
            State::Rebinding => earliest(self.next_send, self.lease_time_point(|l| l.lease_time)),
            State::Released => None,
        }
    }

    /// Acts on the timers that have come by `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Output {
        let mut out = Output::default();
        match self.state {
            State::Rebooting | State::Selecting | State::Requesting => {
                if self.give_up_at().is_some_and(|t| now >= t) {
                    self.watching = false;
                    self.backoff.raise_cap(SLOW_RETRANSMIT);
                    out.event = Some(Event::NoAnswer {
                        waited: now.saturating_duration_since(self.acquire_started),
                        attempt: self.attempt.clone(),
                    });
                }
                if self.next_send.is_some_and(|t| now >= t) {
                    let limit = match self.state {
                        State::Rebooting => Some(self.config.reboot_attempts),
                        State::Requesting => Some(self.config.max_requests),
                        _ => None,
                    };
                    if limit.is_some_and(|n| self.requests_sent >= n) && !self.server_busy(now) {
                        self.start_discovery(now);
                    }
                    out.transmit = Some(self.send(now));
                }
            }
            State::Bound | State::Renewing | State::Rebinding => {
                out = self.advance_lease_phase(now);
            }
            State::Released => {}
        }
        out
    }

    /// Takes a datagram received on the client port.
    pub fn handle_packet(&mut self, bytes: &[u8], now: Instant) -> Output {
        if self.state == State::Released {
            return Output::default();
        }
        let reply = match parse_reply(bytes, &self.config.identity.mac, self.xid) {
            Ok(r) => r,
            Err(e) => {
                match e {
                    ReplyError::OtherClient => {
                        self.last_heard = Some(now);
                        self.attempt.replies_to_others += 1;
                    }
                    ReplyError::Stale => self.last_heard = Some(now),
                    _ => {}
                }
                return Output {
                    ignored: Some(e),
                    ..Output::default()
                };
            }
        };
        self.last_heard = Some(now);
        match &reply {
            Reply::Offer(o) => {
                self.attempt.offers += 1;
                self.attempt.last_offer = Some((o.address, o.server));
            }
            Reply::Nak(_) => self.attempt.naks += 1,
            Reply::Ack { .. } => {}
        }
        let mut out = Output::default();
        match (self.state, reply) {
            (State::Selecting, Reply::Offer(offer)) => {
                self.offer = Some(offer);
                self.state = State::Requesting;
                self.requests_sent = 0;
                self.requesting_since = now;
                self.backoff.reset();
                out.transmit = Some(self.send(now));
            }
            (
                State::Selecting,
                Reply::Ack {
                    lease,
                    rapid_commit,
                },
            ) if rapid_commit => {
                out.event = Some(self.bind(lease));
            }
            (State::Requesting, Reply::Ack { lease, .. })
                if self.sent_by_offerer(Some(lease.server)) =>
            {
                out.event = Some(self.bind(lease));
            }
            (State::Requesting, Reply::Nak(nak)) if self.sent_by_offerer(nak.server) => {
                // Try again, but not at once: a server that keeps refusing
                // must not turn this into a flood.
                self.start_discovery(now);
                self.next_send = Some(now + self.backoff.next_delay());
            }
            (State::Rebooting, Reply::Ack { lease, .. }) => {
                out.event = Some(self.bind(lease));
            }
            (State::Rebooting, Reply::Nak(_)) => {
                // The old address is not to be had: the ordinary way, now.
                self.start_discovery(now);
                out.transmit = Some(self.send(now));
            }
            (State::Renewing | State::Rebinding, Reply::Ack { lease, .. }) => {
                out.event = Some(self.bind(lease));
            }
            (State::Renewing | State::Rebinding, Reply::Nak(nak)) => {
                out = self.lose(now, LossReason::Nak(nak.message));
            }
            (_, other) => {
                out.ignored = Some(ReplyError::Unexpected(format!(
                    "{} while {:?}",
                    reply_name(&other),
                    self.state
                )));
            }
        }
        out
    }

    /// Gives the lease back (DHCPRELEASE, unicast to its server) and stops.
    /// `None` if there is no lease to release.
    pub fn release(&mut self, now: Instant) -> Option<Transmit> {
        let had = self.lease.take().filter(|_| {
            matches!(
                self.state,
                State::Bound | State::Renewing | State::Rebinding
            )
        });
        self.state = State::Released;
        self.next_send = None;
        self.watching = false;
        let lease = had?;
        let message = Outgoing::Release {
            address: lease.address,
            server: lease.server,
        };
        self.xid = self.next_xid();
        Some(Transmit {
            payload: build(&self.config.identity, self.xid, self.secs(now), message),
            message,
            destination: Destination::Server(lease.server),
        })
    }

    /// Stops looking for a lease. If a REQUEST for an offer went out, the
    /// server may still acknowledge it after the client has gone (it
    /// answers in the order it received, and may be seconds behind): a
    /// DHCPRELEASE of the offered address, queued behind that REQUEST,
    /// undoes that lease. `None` if there is nothing to undo (or the
    /// client holds a lease: use [`Client::release`]).
    pub fn abandon(&mut self, now: Instant) -> Option<Transmit> {
        if self.lease.is_some() {
            return None;
        }
        let offer = self
            .offer
            .take()
            .filter(|_| self.state == State::Requesting);
        self.state = State::Released;
        self.next_send = None;
        self.watching = false;
        let offer = offer?;
        let message = Outgoing::Release {
            address: offer.address,
            server: offer.server,
        };
        self.xid = self.next_xid();
        Some(Transmit {
            payload: build(&self.config.identity, self.xid, self.secs(now), message),
            message,
            destination: Destination::Server(offer.server),
        })
    }

    /// Moves through T1, T2 and expiry as far as `now` reaches, sending the
    /// REQUEST of the phase it ends up in when one is due.
    fn advance_lease_phase(&mut self, now: Instant) -> Output {
        let t1 = self.lease_time_point(|l| l.renew_after);
        let t2 = self.lease_time_point(|l| l.rebind_after);
        let expiry = self.lease_time_point(|l| l.lease_time);
        let reached = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        if reached(expiry) {
            return self.lose(now, LossReason::Expired);
        }
        let phase = if reached(t2) {
            State::Rebinding
        } else if reached(t1) {
            State::Renewing
        } else {
            State::Bound
        };
        let mut out = Output::default();
        if phase != self.state {
            self.state = phase;
            self.xid = self.next_xid();
            self.exchange_started = now;
            out.transmit = Some(self.send(now));
        } else if phase != State::Bound && self.next_send.is_some_and(|t| now >= t) {
            out.transmit = Some(self.send(now));
        }
        out
    }

    /// Builds the message of the current state and schedules its
    /// retransmission.
    fn send(&mut self, now: Instant) -> Transmit {
        let lease_address = self.lease.as_ref().map(|l| l.address);
        let (message, destination, retry) = match self.state {
            State::Rebooting => {
                if self.requests_sent == 0 {
                    self.requesting_since = now;
                }
                self.requests_sent += 1;
                self.attempt.requests += 1;
                (
                    Outgoing::Reboot {
                        address: self.config.reboot_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    },
                    Destination::Broadcast,
                    self.backoff.next_delay(),
                )
            }
            State::Selecting => {
                self.attempt.discovers += 1;
                (
                    Outgoing::Discover {
                        requested: self.config.requested_address,
                        rapid_commit: self.config.rapid_commit,
                    },
                    Destination::Broadcast,
                    self.backoff.next_delay(),
                )
            }
            State::Requesting => {
                let offer = self.offer.as_ref().expect("requesting has an offer");
                self.requests_sent += 1;
                self.attempt.requests += 1;
                (
                    Outgoing::Select {
                        offered: offer.address,
                        server: offer.server,
                    },
                    Destination::Broadcast,
                    self.backoff.next_delay(),
                )
            }
            State::Renewing => {
                let lease = self.lease.as_ref().expect("renewing has a lease");
                let t2 = self.lease_time_point(|l| l.rebind_after);
                (
                    Outgoing::Renew {
                        address: lease.address,
                    },
                    Destination::Server(lease.server),
                    halfway_retry(remaining(now, t2)),
                )
            }
            State::Rebinding | State::Bound | State::Released => {
                let expiry = self.lease_time_point(|l| l.lease_time);
                (
                    Outgoing::Rebind {
                        address: lease_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    },
                    Destination::Broadcast,
                    halfway_retry(remaining(now, expiry)),
                )
            }
        };
        self.last_sent = now;
        self.next_send = Some(now + retry);
        Transmit {
            payload: build(&self.config.identity, self.xid, self.secs(now), message),
            message,
            destination,
        }
    }

    fn bind(&mut self, lease: Lease) -> Event {
        let same_address = self
            .lease
            .as_ref()
            .is_some_and(|old| old.address == lease.address);
        self.config.requested_address = Some(lease.address);
        self.state = State::Bound;
        self.lease_start = self.last_sent;
        self.lease = Some(lease.clone());
        self.offer = None;
        self.next_send = None;
        self.watching = false;
        self.backoff.reset();
        if same_address {
            Event::Renewed(lease)
        } else {
            Event::Bound(lease)
        }
    }

    /// The lease ended: report it and start looking for a new one at once.
    fn lose(&mut self, now: Instant, reason: LossReason) -> Output {
        let lease = self.lease.take().expect("only a held lease is lost");
        self.start_discovery(now);
        self.acquire_started = now;
        self.attempt = Attempt::default();
        self.last_heard = None;
        self.watching = true;
        self.backoff.reset();
        Output {
            transmit: Some(self.send(now)),
            event: Some(Event::Lost { lease, reason }),
            ignored: None,
        }
    }

    fn start_discovery(&mut self, now: Instant) {
        if self.state == State::Rebooting {
            // Still worth asking for, in the DISCOVER.
            self.config.requested_address =
                self.config.requested_address.or(self.config.reboot_address);
        }
        self.state = State::Selecting;
        self.offer = None;
        self.requests_sent = 0;
        self.xid = self.next_xid();
        self.exchange_started = now;
        self.next_send = Some(now);
    }

    fn sent_by_offerer(&self, server: Option<Ipv4Addr>) -> bool {
        match (server, &self.offer) {
            (Some(s), Some(offer)) => s == offer.server,
            _ => true,
        }
    }

    fn lease_time_point(&self, pick: impl Fn(&Lease) -> Option<Duration>) -> Option<Instant> {
        let lease = self.lease.as_ref()?;
        pick(lease).map(|d| self.lease_start + d)
    }

    fn secs(&self, now: Instant) -> u16 {
        now.saturating_duration_since(self.exchange_started)
            .as_secs()
            .min(u64::from(u16::MAX)) as u16
    }

    /// splitmix64: distinct, unpredictable-enough transaction ids.
    fn next_xid(&mut self) -> u32 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn remaining(now: Instant, until: Option<Instant>) -> Duration {
    until.map_or(Duration::from_secs(60), |t| {
        t.saturating_duration_since(now)
    })
}

fn reply_name(r: &Reply) -> &'static str {
    match r {
        Reply::Offer(_) => "DHCPOFFER",
        Reply::Ack { .. } => "DHCPACK",
        Reply::Nak(_) => "DHCPNAK",
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
