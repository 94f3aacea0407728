//! What is done inside the child's network namespace, in the helper that
//! `rk_driver::nsexec::run_in_namespaces` forks: give the interface its MAC,
//! bring it up, and open the two sockets the driver keeps (they stay in
//! that namespace wherever their descriptors go):
//! - the DHCP client's UDP socket on port 68, bound to the interface;
//! - a NETLINK_ROUTE socket, to delete the interface at shutdown.

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol,
    SockType, SockaddrIn,
};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};

/// Runs in the namespace helper; returns `[udp, netlink]`.
pub fn prepare(ifname: &str, mac: [u8; 6]) -> Result<Vec<OwnedFd>, String> {
    let ctl = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    set_mac(&ctl, ifname, mac)?;
    set_up(&ctl, ifname)?;
    Ok(vec![dhcp_socket(ifname)?, netlink_socket()?])
}

fn ifreq(ifname: &str) -> Result<libc::ifreq, String> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = ifname.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(format!("interface name {ifname:?} is too long"));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// The DHCP client identifies itself by this MAC, so it must be the
/// interface's before the first DISCOVER.
fn set_mac(ctl: &OwnedFd, ifname: &str, mac: [u8; 6]) -> Result<(), String> {
    let mut req = ifreq(ifname)?;
    req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
    // SAFETY: writing the sockaddr member of the union we just selected.
    let data = unsafe { &mut req.ifr_ifru.ifru_hwaddr.sa_data };
    for (d, s) in data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCSIFHWADDR reads a struct ifreq that we own.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFHWADDR, &req) } < 0 {
        return Err(format!(
            "setting the MAC address of {ifname}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn set_up(ctl: &OwnedFd, ifname: &str) -> Result<(), String> {
    let mut req = ifreq(ifname)?;
    // SAFETY: SIOCGIFFLAGS fills the flags member of a struct ifreq we own.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(format!(
            "reading the flags of {ifname}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the kernel just set the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads a struct ifreq that we own.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(format!(
            "bringing {ifname} up: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
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

fn netlink_socket() -> Result<OwnedFd, String> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| format!("netlink socket: {e}"))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| format!("netlink bind: {e}"))?;
    Ok(fd)
}
