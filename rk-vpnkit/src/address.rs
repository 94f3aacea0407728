//! The interface's address, by DHCP over the vpnkit link before the pump
//! starts (vpnkit hands out addresses only that way; RootlessKit does the
//! same with a bare DISCOVER).
//!
//! `rk-dhcp` builds and parses the DHCP messages and runs the exchange;
//! this module carries them in ethernet frames on the link, since nothing
//! below it has an IP stack yet.

use crate::link::{Link, LinkError};
use rk_dhcp::frame::{decapsulate, encapsulate, Addresses, BROADCAST_MAC};
use rk_dhcp::{Client, ClientConfig, Destination, Event, Lease};
use std::net::Ipv4Addr;
use std::time::Instant;

/// What the child's interface gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `192.168.65.3/24`.
    pub cidr: String,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(
        "no DHCP lease from vpnkit: {0}; vpnkit hands out the address by DHCP on its \
         ethernet link: is the program behind --vpnkit-binary really vpnkit?"
    )]
    NoAnswer(String),
    #[error("during the DHCP exchange with vpnkit: {0}")]
    Link(#[from] LinkError),
    #[error("sending a DHCP message to vpnkit: {0}")]
    Send(#[from] std::io::Error),
}

impl From<&Lease> for Address {
    fn from(lease: &Lease) -> Self {
        let gateway = lease.router.map(|r| r.to_string());
        let mut dns: Vec<String> = lease.dns.iter().map(|d| d.to_string()).collect();
        // vpnkit's resolver is its gateway; say so if the lease did not.
        if dns.is_empty() {
            dns.extend(gateway.clone());
        }
        Address {
            cidr: lease.cidr(),
            gateway,
            dns,
        }
    }
}

/// Runs DHCP on `link` until bound or until `deadline`.
pub fn obtain(link: &mut Link, deadline: Instant) -> Result<Address, AddressError> {
    let mac = link.vif.mac;
    let started = Instant::now();
    let mut config = ClientConfig::new(mac);
    config.give_up_after = deadline.saturating_duration_since(started);
    // vpnkit's link has one client: no one else to wait behind.
    config.busy_give_up_after = config.give_up_after;
    let mut client = Client::new(config, rk_dhcp::random_xid(), started);
    // The server's MAC, once a reply showed it, for unicast messages.
    let mut server_mac: Option<[u8; 6]> = None;
    let mut output = client.handle_timeout(started);
    loop {
        if let Some(t) = output.transmit.take() {
            let to = match (t.destination, server_mac) {
                (Destination::Server(ip), Some(m)) => Some((m, ip)),
                _ => None,
            };
            let frame = encapsulate(
                &Addresses::from_client(mac, Ipv4Addr::UNSPECIFIED, to),
                &t.payload,
            );
            link.send(&frame)?;
        }
        match output.event.take() {
            Some(Event::Bound(lease)) => return Ok(Address::from(&lease)),
            Some(Event::NoAnswer { waited, attempt }) => {
                return Err(AddressError::NoAnswer(attempt.describe(waited)))
            }
            _ => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(AddressError::NoAnswer(
                client.attempt().describe(now - started),
            ));
        }
        let wake = client.next_deadline().map_or(deadline, |d| d.min(deadline));
        let reply = link.receive(wake, |frame| {
            let d = decapsulate(frame)?;
            let ours = d.addresses.dst_mac == mac || d.addresses.dst_mac == BROADCAST_MAC;
            ours.then(|| (d.addresses.src_mac, d.payload.to_vec()))
        })?;
        output = match reply {
            Some((from, bytes)) => {
                let out = client.handle_packet(&bytes, Instant::now());
                if out.ignored.is_none() {
                    server_mac = Some(from);
                }
                out
            }
            None => client.handle_timeout(Instant::now()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(dns: Vec<Ipv4Addr>) -> Lease {
        Lease {
            address: Ipv4Addr::new(192, 168, 65, 3),
            prefix_len: 24,
            router: Some(Ipv4Addr::new(192, 168, 65, 1)),
            dns,
            domain_name: None,
            mtu: None,
            server: Ipv4Addr::new(192, 168, 65, 1),
            lease_time: None,
            renew_after: None,
            rebind_after: None,
        }
    }

    #[test]
    fn lease_becomes_the_answer() {
        let a = Address::from(&lease(vec![Ipv4Addr::new(192, 168, 65, 7)]));
        assert_eq!(a.cidr, "192.168.65.3/24");
        assert_eq!(a.gateway.as_deref(), Some("192.168.65.1"));
        assert_eq!(a.dns, ["192.168.65.7"]);
    }

    #[test]
    fn missing_dns_falls_back_to_the_gateway() {
        assert_eq!(Address::from(&lease(vec![])).dns, ["192.168.65.1"]);
    }
}
