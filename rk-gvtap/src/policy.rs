//! Where a guest's packet to a destination goes: the host (through the NAT),
//! the DNS forwarder, or nowhere.

use crate::plan::NetPlan;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Open a host socket to this address.
    Host(SocketAddr),
    /// The gateway's DNS port: forward to the host's nameservers.
    Dns,
    /// Refuse: TCP RST or ICMP port unreachable (the stack's default for a
    /// port nobody listens on).
    Refuse,
    /// Drop silently (not from the guest's subnet, broadcast, multicast).
    Drop,
}

/// Route for TCP or UDP from `src` to `dst`.
pub fn route(plan: &NetPlan, src: Ipv4Addr, dst: SocketAddrV4) -> Route {
    let ip = *dst.ip();
    if !plan.contains(src) || src == plan.gateway || src == plan.broadcast() {
        return Route::Drop;
    }
    if ip.is_broadcast() || ip.is_multicast() || ip == plan.broadcast() || ip.is_unspecified() {
        return Route::Drop;
    }
    if ip == plan.gateway {
        if dst.port() == 53 {
            return Route::Dns;
        }
        if plan.host_loopback {
            return Route::Host(SocketAddr::from((Ipv4Addr::LOCALHOST, dst.port())));
        }
        return Route::Refuse;
    }
    // Other addresses of the virtual subnet have nobody behind them, and the
    // guest's own loopback never leaves it; neither must reach the host's.
    if plan.contains(ip) || ip.is_loopback() || dst.port() == 0 {
        return Route::Refuse;
    }
    Route::Host(SocketAddr::V4(dst))
}

/// Where an ICMP echo to `dst` goes: `Some(host address)` through a host ping
/// socket, `None` to answer it locally (the gateway without host loopback)
/// or ignore it.
pub fn ping_target(plan: &NetPlan, src: Ipv4Addr, dst: Ipv4Addr) -> Option<Ipv4Addr> {
    match route(plan, src, SocketAddrV4::new(dst, 1)) {
        Route::Host(SocketAddr::V4(a)) => Some(*a.ip()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rk_driver::ConfigureRequest;

    fn plan(disable_host_loopback: bool) -> NetPlan {
        NetPlan::from_request(&ConfigureRequest {
            disable_host_loopback,
            ..Default::default()
        })
        .unwrap()
    }

    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

    fn to(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    #[test]
    fn gateway_is_host_loopback_unless_disabled() {
        assert_eq!(
            route(&plan(false), GUEST, to([10, 0, 2, 1], 8080)),
            Route::Host("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            route(&plan(true), GUEST, to([10, 0, 2, 1], 8080)),
            Route::Refuse
        );
        assert_eq!(
            ping_target(&plan(false), GUEST, Ipv4Addr::new(10, 0, 2, 1)),
            Some(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            ping_target(&plan(true), GUEST, Ipv4Addr::new(10, 0, 2, 1)),
            None
        );
    }

    #[test]
    fn dns_port_of_gateway_goes_to_the_forwarder_either_way() {
        assert_eq!(
            route(&plan(false), GUEST, to([10, 0, 2, 1], 53)),
            Route::Dns
        );
        assert_eq!(route(&plan(true), GUEST, to([10, 0, 2, 1], 53)), Route::Dns);
    }

    #[test]
    fn other_addresses_leave_through_the_host_unchanged() {
        // Addresses are only compared here: nothing is sent anywhere.
        assert_eq!(
            route(&plan(true), GUEST, to([192, 0, 2, 7], 443)),
            Route::Host("192.0.2.7:443".parse().unwrap())
        );
        assert_eq!(
            route(&plan(true), GUEST, to([169, 254, 169, 254], 80)),
            Route::Host("169.254.169.254:80".parse().unwrap())
        );
        assert_eq!(
            ping_target(&plan(true), GUEST, Ipv4Addr::new(192, 0, 2, 7)),
            Some(Ipv4Addr::new(192, 0, 2, 7))
        );
    }

    #[test]
    fn subnet_loopback_broadcast_and_strangers_are_kept_in() {
        let p = plan(false);
        assert_eq!(route(&p, GUEST, to([10, 0, 2, 50], 80)), Route::Refuse);
        assert_eq!(route(&p, GUEST, to([127, 0, 0, 1], 80)), Route::Refuse);
        assert_eq!(route(&p, GUEST, to([10, 0, 2, 255], 80)), Route::Drop);
        assert_eq!(route(&p, GUEST, to([255, 255, 255, 255], 67)), Route::Drop);
        assert_eq!(route(&p, GUEST, to([224, 0, 0, 251], 5353)), Route::Drop);
        assert_eq!(
            route(&p, Ipv4Addr::new(192, 168, 1, 5), to([192, 0, 2, 7], 80)),
            Route::Drop
        );
    }
}
