//! The DHCP client over the UDP socket made inside the namespace: the first
//! lease (before `configured`), then a thread that renews it for as long as
//! the driver runs and releases it at shutdown.

use crate::mac::AddressMemory;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{pipe2, write};
use rk_dhcp::{
    Attempt, Client, Destination, Event, Lease, LossReason, Output, ReplyError, Transmit,
    SERVER_PORT,
};
use rk_driver::DriverError;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `true` if the datagram went out.
fn send(socket: &UdpSocket, t: &Transmit) -> bool {
    let to = match t.destination {
        Destination::Broadcast => Ipv4Addr::BROADCAST,
        Destination::Server(ip) => ip,
    };
    log::debug!("DHCP: sending {} to {to}", t.message.name());
    // A failed send is retried by the client's own retransmission.
    match socket.send_to(&t.payload, (to, SERVER_PORT)) {
        Ok(_) => true,
        Err(e) => {
            log::warn!("DHCP: sending {} to {to}: {e}", t.message.name());
            false
        }
    }
}

/// Waits for a datagram, the client's next deadline, or `stop`, and lets
/// the client act on whichever came; `None` when `stop` became readable.
fn step(socket: &UdpSocket, client: &mut Client, stop: Option<BorrowedFd<'_>>) -> Option<Output> {
    let timeout = client
        .next_deadline()
        .map(|d| d.saturating_duration_since(Instant::now()));
    let ms = timeout.map_or(-1, |t| {
        // Round up, so that the deadline has passed when poll returns.
        (t.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
    });
    let mut fds = vec![PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    if let Some(s) = stop {
        fds.push(PollFd::new(s, PollFlags::POLLIN));
    }
    let ready = match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::NONE),
    ) {
        Ok(n) => n > 0,
        Err(_) => false,
    };
    if fds
        .get(1)
        .and_then(|f| f.revents())
        .is_some_and(|r| !r.is_empty())
    {
        return None;
    }
    let readable = ready && fds[0].revents().is_some_and(|r| !r.is_empty());
    if readable {
        let mut buf = [0u8; 4096];
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let out = client.handle_packet(&buf[..n], Instant::now());
            match &out.ignored {
                // Normal on a shared bridge, and many under load.
                Some(ReplyError::OtherClient) | None => {}
                Some(why) => log::debug!("DHCP: ignored a datagram from {from}: {why}"),
            }
            return Some(out);
        }
    }
    Some(client.handle_timeout(Instant::now()))
}

/// Runs the client until it has a lease, or fails once it reports that it
/// got none: after 15 s without a sign of a DHCP server, or after 60 s in
/// all while the server is heard but busy (a burst of new clients: dnsmasq
/// pings each new address for 3 s, one at a time, before offering it).
pub fn acquire(
    socket: &UdpSocket,
    client: &mut Client,
    bridge: &str,
) -> Result<Lease, DriverError> {
    let mut out = client.handle_timeout(Instant::now());
    loop {
        if let Some(t) = out.transmit.take() {
            send(socket, &t);
        }
        match out.event.take() {
            Some(Event::Bound(lease)) => return Ok(lease),
            Some(Event::NoAnswer { waited, attempt }) => {
                // A REQUEST still in the server's queue would make a lease
                // nobody releases.
                if let Some(t) = client.abandon(Instant::now()) {
                    send(socket, &t);
                }
                return Err(DriverError::new(no_lease_message(bridge, waited, &attempt)));
            }
            _ => {}
        }
        if let Some(o) = step(socket, client, None) {
            out = o;
        }
    }
}

fn no_lease_message(bridge: &str, waited: Duration, attempt: &Attempt) -> String {
    let what = attempt.describe(waited);
    let fix = if attempt.offers == 0 && attempt.naks == 0 && attempt.replies_to_others == 0 {
        format!(
            "the bridge needs a DHCP server (lxc-net runs dnsmasq on lxcbr0: check that dnsmasq \
             runs for {bridge}, e.g. `systemctl restart lxc-net` as root)"
        )
    } else {
        format!(
            "the DHCP server on {bridge} is there but gave this client no lease: its address \
             pool may be full (dnsmasq's --dhcp-range and --dhcp-lease-max; lxc-net's \
             LXC_DHCP_RANGE and LXC_DHCP_MAX), or it is overloaded (dnsmasq pings each new \
             address for 3 s before offering it; lxc-net's LXC_DHCP_PING=false turns that off)"
        )
    };
    format!("no DHCP lease on bridge {bridge}: {what}. {fix}")
}
/// Keeps the lease for as long as it runs; releases it when stopped.
#[derive(Debug)]
pub struct Renewer {
    stop: OwnedFd,
    thread: Option<JoinHandle<bool>>,
}

impl Renewer {
    /// `configured`: the address the interface was given; `memory`: where
    /// a new address is kept for the next run.
    pub fn start(
        socket: UdpSocket,
        client: Client,
        configured: Ipv4Addr,
        memory: Option<AddressMemory>,
    ) -> std::io::Result<Self> {
        let (stop_r, stop_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name("dhcp".into())
            .spawn(move || keep_lease(socket, client, configured, memory, stop_r))?;
        Ok(Renewer {
            stop: stop_w,
            thread: Some(thread),
        })
    }

    /// Releases the lease and waits for the thread to finish; `true` if
    /// the release went out.
    pub fn stop(mut self) -> bool {
        let _ = write(&self.stop, &[1]);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(false)
    }
}

fn keep_lease(
    socket: UdpSocket,
    mut client: Client,
    configured: Ipv4Addr,
    memory: Option<AddressMemory>,
    stop: OwnedFd,
) -> bool {
    while let Some(mut out) = step(&socket, &mut client, Some(stop.as_fd())) {
        if let Some(t) = out.transmit.take() {
            send(&socket, &t);
        }
        if let Some(e) = out.event.take() {
            report(&e, configured);
            if let (Event::Bound(l), Some(m)) = (&e, &memory) {
                m.store(l.address);
            }
        }
    }
    match client.release(Instant::now()) {
        Some(t) => send(&socket, &t),
        None => false,
    }
}

fn report(event: &Event, configured: Ipv4Addr) {
    match event {
        Event::Renewed(l) => log::debug!(
            "DHCP: renewed {} for {}",
            l.cidr(),
            l.lease_time.map_or("ever".into(), |t| format!("{}s", t.as_secs()))
        ),
        Event::Bound(l) if l.address == configured => {
            log::info!("DHCP: got the lease of {} back", l.address)
        }
        Event::Bound(l) => log::warn!(
            "DHCP: the server now gives {} instead of {configured}; the interface \
             keeps {configured}, which the server may hand to someone else: restart to use the new address",
            l.cidr()
        ),
        Event::Lost { lease, reason } => log::warn!(
            "DHCP: the lease of {} ended ({}); asking for a new one",
            lease.address,
            match reason {
                LossReason::Nak(Some(m)) => format!("the server refused to extend it: {m}"),
                LossReason::Nak(None) => "the server refused to extend it".into(),
                LossReason::Expired => "no server extended it".into(),
            }
        ),
        Event::NoAnswer { waited, attempt } => log::warn!(
            "DHCP: no new lease yet ({}); still trying",
            attempt.describe(*waited)
        ),
    }
}

/// Only for the type's sake: a lease duration printable in `info`.
pub fn seconds(d: Option<Duration>) -> String {
    d.map_or("infinite".into(), |d| d.as_secs().to_string())
}
