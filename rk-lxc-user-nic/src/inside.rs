//! What is done inside the child's network namespace, in the helper that
//! `rk_driver::nsexec::run_in_namespaces` forks: give the interface its MAC,
//! bring it up, and open the two sockets the driver keeps (they stay in
//! that namespace wherever their descriptors go):
//! - the DHCP client's UDP socket on port 68, bound to the interface;
//! - a NETLINK_ROUTE socket, to delete the interface at shutdown.

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use rk_driver::netlink::{LinkChange, NetlinkSocket};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};

/// Runs in the namespace helper; returns `[udp, netlink]`. The DHCP
/// client identifies itself by the MAC, so the interface has it before
/// the first DISCOVER.
pub fn prepare(ifname: &str, mac: [u8; 6]) -> Result<Vec<OwnedFd>, String> {
    let mut netlink =
        NetlinkSocket::route().map_err(|e| format!("opening a netlink socket: {e}"))?;
    let link = netlink.link(ifname).map_err(|e| e.to_string())?;
    let change = LinkChange {
        up: Some(true),
        mac: Some(mac),
        ..LinkChange::default()
    };
    netlink.set_link(&link, change).map_err(|e| e.to_string())?;
    Ok(vec![dhcp_socket(ifname)?, netlink.into_fd()])
}

/// Bound to the interface, so that it sends there although the namespace
/// has no route yet, and receives the server's broadcasts although the
/// interface has no address yet.
fn dhcp_socket(ifname: &str) -> Result<OwnedFd, String> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(|e| format!("SO_BROADCAST: {e}"))?;
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(ifname))
        .map_err(|e| format!("SO_BINDTODEVICE {ifname}: {e}"))?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::new(0, 0, 0, 0, rk_dhcp::CLIENT_PORT),
    )
    .map_err(|e| format!("binding UDP port {}: {e}", rk_dhcp::CLIENT_PORT))?;
    Ok(fd)
}
