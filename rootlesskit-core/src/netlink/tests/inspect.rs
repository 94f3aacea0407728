//! Reads back interface state without netlink (ioctls and /proc/net), so
//! the tests check the kernel's view, not our own message building.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;

/// `IFA_F_NODAD` and `IFA_F_TENTATIVE` as shown in /proc/net/if_inet6.
pub(super) const IFA_F_NODAD: u32 = 0x02;
pub(super) const IFA_F_TENTATIVE: u32 = 0x40;

/// A zeroed `struct ifreq` naming interface `name`.
pub(super) fn interface_request(name: &str) -> libc::ifreq {
    assert!(
        name.len() < libc::IFNAMSIZ,
        "interface name {name:?} too long"
    );
    // SAFETY: ifreq is plain old data (a char array and a union of integers,
    // sockaddrs and a pointer), for which all zero bytes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request
}

/// Runs an SIOCGIF* ioctl for `name` in the calling thread's network
/// namespace (where the socket is created).
fn interface_ioctl(name: &str, request_code: libc::Ioctl) -> io::Result<libc::ifreq> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    let mut request = interface_request(name);
    // SAFETY: SIOCGIF* ioctls fill in the `struct ifreq` they are given;
    // `request` is a valid one that outlives the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), request_code, &mut request) };
    if result == 0 {
        Ok(request)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LinkState {
    pub(super) mtu: u32,
    pub(super) up: bool,
}

/// MTU and UP flag of `name`, or None if there is no such interface.
pub(super) fn link_state(name: &str) -> Option<LinkState> {
    let flags = match interface_ioctl(name, libc::SIOCGIFFLAGS) {
        Ok(request) => request,
        Err(error) if error.raw_os_error() == Some(libc::ENODEV) => return None,
        Err(error) => panic!("SIOCGIFFLAGS {name}: {error}"),
    };
    let mtu = interface_ioctl(name, libc::SIOCGIFMTU)
        .unwrap_or_else(|error| panic!("SIOCGIFMTU {name}: {error}"));
    // SAFETY: SIOCGIFFLAGS and SIOCGIFMTU filled in these union members.
    let (flags, mtu) = unsafe { (flags.ifr_ifru.ifru_flags, mtu.ifr_ifru.ifru_mtu) };
    Some(LinkState {
        mtu: u32::try_from(mtu).expect("non-negative MTU"),
        up: flags & libc::IFF_UP as libc::c_short != 0,
    })
}

/// The primary IPv4 address of `name` with its prefix length, if any.
pub(super) fn ipv4_address(name: &str) -> Option<(Ipv4Addr, u8)> {
    let address = match interface_ioctl(name, libc::SIOCGIFADDR) {
        Ok(request) => request,
        Err(error) if error.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return None,
        Err(error) => panic!("SIOCGIFADDR {name}: {error}"),
    };
    let netmask = interface_ioctl(name, libc::SIOCGIFNETMASK)
        .unwrap_or_else(|error| panic!("SIOCGIFNETMASK {name}: {error}"));
    let address = sockaddr_ipv4(&address);
    let prefix_len = u32::from(sockaddr_ipv4(&netmask)).count_ones();
    Some((address, prefix_len as u8))
}

fn sockaddr_ipv4(request: &libc::ifreq) -> Ipv4Addr {
    // SAFETY: the ioctl filled in ifru_addr (ifru_netmask shares it) with an
    // AF_INET address, which sockaddr_in describes and which fits the union.
    let address = unsafe {
        let generic = request.ifr_ifru.ifru_addr;
        assert_eq!(generic.sa_family, libc::AF_INET as libc::sa_family_t);
        std::ptr::read_unaligned(std::ptr::addr_of!(generic).cast::<libc::sockaddr_in>())
    };
    Ipv4Addr::from(address.sin_addr.s_addr.to_ne_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ipv6Entry {
    pub(super) address: Ipv6Addr,
    pub(super) prefix_len: u8,
    pub(super) flags: u32,
}

/// IPv6 addresses of `name` from /proc/net/if_inet6
/// (`address ifindex prefix_len scope flags name`, all hex).
pub(super) fn ipv6_addresses(name: &str) -> Vec<Ipv6Entry> {
    proc_net_rows("if_inet6")
        .filter(|fields| fields.len() == 6 && fields[5] == name)
        .map(|fields| Ipv6Entry {
            address: Ipv6Addr::from(hex_u128(&fields[0])),
            prefix_len: hex_u32(&fields[2]) as u8,
            flags: hex_u32(&fields[4]),
        })
        .collect()
}

/// The gateway of the IPv4 default route out of `name`, from /proc/net/route
/// (`Iface Destination Gateway …`, addresses as native-endian hex).
pub(super) fn ipv4_default_gateway(name: &str) -> Option<Ipv4Addr> {
    proc_net_rows("route")
        .skip(1)
        .find(|fields| {
            fields.len() > 7
                && fields[0] == name
                && hex_u32(&fields[1]) == 0
                && hex_u32(&fields[7]) == 0
        })
        .map(|fields| Ipv4Addr::from(hex_u32(&fields[2]).to_ne_bytes()))
}

/// The gateway of the IPv6 default route out of `name`, from
/// /proc/net/ipv6_route (`dst dst_len src src_len next_hop metric refcnt
/// use flags device`).
pub(super) fn ipv6_default_gateway(name: &str) -> Option<Ipv6Addr> {
    proc_net_rows("ipv6_route")
        .find(|fields| {
            fields.len() == 10
                && fields[9] == name
                && hex_u128(&fields[0]) == 0
                && hex_u32(&fields[1]) == 0
        })
        .map(|fields| Ipv6Addr::from(hex_u128(&fields[4])))
}

/// The whitespace-separated rows of /proc/net/`file`, which shows the
/// network namespace of the reading process.
fn proc_net_rows(file: &str) -> impl Iterator<Item = Vec<String>> {
    let path = format!("/proc/net/{file}");
    let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect();
    rows.into_iter()
}

fn hex_u32(field: &str) -> u32 {
    u32::from_str_radix(field, 16).unwrap_or_else(|_| panic!("not hex: {field:?}"))
}

fn hex_u128(field: &str) -> u128 {
    u128::from_str_radix(field, 16).unwrap_or_else(|_| panic!("not hex: {field:?}"))
}
