//! The smoltcp side: the interface (the gateway, answering for every
//! address), its sockets and the tap device.

use crate::device::TapDevice;
use crate::plan::{NetPlan, GATEWAY_MAC};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use std::os::fd::OwnedFd;

pub struct Net {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub dev: TapDevice,
    pub plan: NetPlan,
    /// The guest's MAC, learned from its frames, for frames the NAT writes
    /// itself.
    pub guest_mac: Option<[u8; 6]>,
}

impl Net {
    pub fn new(plan: NetPlan, tap: OwnedFd, vnet: bool) -> Net {
        let mut dev = TapDevice::new(tap, plan.mtu, vnet);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
        config.random_seed = crate::sys::random_u64();
        let mut iface = Interface::new(config, &mut dev, Instant::now());
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(plan.gateway), plan.prefix))
                .expect("room for one address");
            if let Some(p6) = &plan.ipv6 {
                addrs
                    .push(IpCidr::new(
                        IpAddress::Ipv6(p6.gateway),
                        p6.network.prefix_len(),
                    ))
                    .expect("room for two addresses");
            }
        });
        // With "any IP", smoltcp accepts packets to every destination routed
        // through one of its own addresses: the default route via the
        // gateway makes it answer for the whole internet, which is what a
        // NAT terminating the guest's connections needs.
        iface
            .routes_mut()
            .add_default_ipv4_route(plan.gateway)
            .expect("room for one route");
        if let Some(p6) = &plan.ipv6 {
            // The same for IPv6; neighbour solicitations for the gateway
            // are answered by the stack.
            iface
                .routes_mut()
                .add_default_ipv6_route(p6.gateway)
                .expect("room for two routes");
        }
        iface.set_any_ip(true);
        Net {
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            plan,
            guest_mac: None,
        }
    }
}
