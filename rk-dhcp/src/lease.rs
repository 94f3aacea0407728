//! What a server granted: the parsed OFFER or ACK.

use crate::message::ReplyError;
use dhcproto::v4::{DhcpOption, Message, OptionCode};
use std::net::Ipv4Addr;
use std::time::Duration;

/// An address offered or acknowledged by a DHCP server, with the
/// configuration that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `yiaddr`: the client's address.
    pub address: Ipv4Addr,
    /// From the subnet mask (option 1); the classful default if absent.
    pub prefix_len: u8,
    /// The first router (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6), in the server's order.
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain_name: Option<String>,
    /// Interface MTU (option 26).
    pub mtu: Option<u16>,
    /// The server identifier (option 54; `siaddr` if a server omits it):
    /// where renewals and the release go.
    pub server: Ipv4Addr,
    /// Lease time (option 51); `None` means infinite.
    pub lease_time: Option<Duration>,
    /// T1, when renewing starts (option 58; half the lease by default).
    pub renew_after: Option<Duration>,
    /// T2, when rebinding starts (option 59; 7/8 of the lease by default).
    pub rebind_after: Option<Duration>,
}

/// Lease time that RFC 2131 spells as all ones.
const INFINITE: u32 = u32::MAX;

impl Lease {
    /// `a.b.c.d/nn`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix_len)
    }

    /// The subnet mask as an address.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }

    /// Reads a lease from an OFFER or ACK.
    pub fn from_message(msg: &Message) -> Result<Lease, ReplyError> {
        let address = msg.yiaddr();
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(ReplyError::Invalid(format!(
                "the server offered the unusable address {address}"
            )));
        }
        let opts = msg.opts();
        let prefix_len = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask).ok_or_else(|| {
                ReplyError::Invalid(format!("subnet mask {mask} is not contiguous"))
            })?,
            _ => classful_prefix(address),
        };
        let router = match opts.get(OptionCode::Router) {
            Some(DhcpOption::Router(list)) => list.iter().copied().find(|r| !r.is_unspecified()),
            _ => None,
        };
        let dns = match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(list)) => list
                .iter()
                .copied()
                .filter(|a| !a.is_unspecified())
                .collect(),
            _ => Vec::new(),
        };
        let domain_name = match opts.get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) if !d.is_empty() => Some(d.clone()),
            _ => None,
        };
        let mtu = match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) if *m >= 68 => Some(*m),
            _ => None,
        };
        let server = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ if !msg.siaddr().is_unspecified() => msg.siaddr(),
            _ => {
                return Err(ReplyError::Invalid(
                    "the reply names no server (no option 54, no siaddr)".into(),
                ))
            }
        };
        let seconds = |code| match opts.get(code) {
            Some(DhcpOption::AddressLeaseTime(s))
            | Some(DhcpOption::Renewal(s))
            | Some(DhcpOption::Rebinding(s)) => Some(*s),
            _ => None,
        };
        let (lease_time, renew_after, rebind_after) = timers(
            seconds(OptionCode::AddressLeaseTime),
            seconds(OptionCode::Renewal),
            seconds(OptionCode::Rebinding),
        );
        Ok(Lease {
            address,
            prefix_len,
            router,
            dns,
            domain_name,
            mtu,
            server,
            lease_time,
            renew_after,
            rebind_after,
        })
    }
}

/// Lease time, T1 and T2 from the options as sent. A missing lease time is
/// taken as infinite (BOOTP-like servers); T1 and T2 default to 1/2 and 7/8
/// of the lease and are clamped so that T1 <= T2 <= lease.
fn timers(
    lease: Option<u32>,
    t1: Option<u32>,
    t2: Option<u32>,
) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    let lease = match lease {
        None | Some(INFINITE) => return (None, None, None),
        Some(s) => u64::from(s),
    };
    let t2 = t2
        .map(u64::from)
        .filter(|&t| t <= lease)
        .unwrap_or(lease * 7 / 8);
    let t1 = t1
        .map(u64::from)
        .filter(|&t| t <= t2)
        .unwrap_or((lease / 2).min(t2));
    (
        Some(Duration::from_secs(lease)),
        Some(Duration::from_secs(t1)),
        Some(Duration::from_secs(t2)),
    )
}

/// Prefix length of a contiguous mask.
fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_turn_into_prefixes() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(classful_prefix(Ipv4Addr::new(10, 0, 3, 5)), 8);
    }

    #[test]
    fn timers_default_and_clamp() {
        let s = Duration::from_secs;
        assert_eq!(
            timers(Some(3600), None, None),
            (Some(s(3600)), Some(s(1800)), Some(s(3150)))
        );
        assert_eq!(
            timers(Some(120), Some(5), Some(10)),
            (Some(s(120)), Some(s(5)), Some(s(10)))
        );
        // T2 beyond the lease and T1 beyond T2 fall back to the defaults.
        assert_eq!(
            timers(Some(100), Some(90), Some(200)),
            (Some(s(100)), Some(s(50)), Some(s(87)))
        );
        assert_eq!(timers(Some(u32::MAX), Some(5), None), (None, None, None));
        assert_eq!(timers(None, None, None), (None, None, None));
    }

    #[test]
    fn netmask_round_trips() {
        let mut l = Lease {
            address: Ipv4Addr::new(10, 0, 3, 7),
            prefix_len: 24,
            router: None,
            dns: vec![],
            domain_name: None,
            mtu: None,
            server: Ipv4Addr::new(10, 0, 3, 1),
            lease_time: None,
            renew_after: None,
            rebind_after: None,
        };
        assert_eq!(l.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(l.cidr(), "10.0.3.7/24");
        l.prefix_len = 0;
        assert_eq!(l.netmask(), Ipv4Addr::UNSPECIFIED);
    }
}
