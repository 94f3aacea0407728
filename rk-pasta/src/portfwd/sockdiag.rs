//! Listening TCP sockets of the namespace from the kernel's socket
//! diagnostics (NETLINK_SOCK_DIAG, what `ss -lt` uses), through
//! `rk_driver::netlink`.
//!
//! `/proc/net/tcp` walks the whole connection hash table of the machine
//! (milliseconds per read on a host with much memory, twice a second); a
//! dump filtered to the LISTEN state reads only the listening sockets.

use super::procnet::Bound;
use rk_driver::netlink::NetlinkSocket;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

/// The listening TCP sockets (IPv4 and IPv6) that `diag`, a
/// NETLINK_SOCK_DIAG socket made in the namespace, sees; `seq` is the last
/// sequence number used on it. IPv4-mapped IPv6 addresses count as IPv4.
pub fn listening_tcp(diag: &OwnedFd, seq: &mut u32) -> io::Result<Vec<Bound>> {
    let mut socket = NetlinkSocket::on(diag.as_fd(), *seq);
    let found = socket.listening_tcp();
    *seq = socket.sequence();
    let found = found.map_err(|e| match e.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(e),
    })?;
    Ok(found
        .into_iter()
        .filter(|a| a.port() != 0)
        .map(|a| Bound {
            addr: match a.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            },
            port: a.port(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v4_and_mapped_listeners_of_this_process() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // An IPv6 socket bound to an IPv4-mapped address.
        let mapped = std::net::TcpListener::bind("[::ffff:127.0.0.1]:0").unwrap();
        let diag = NetlinkSocket::sock_diag().unwrap().into_fd();
        let mut seq = 0;
        let found = listening_tcp(&diag, &mut seq).unwrap();
        for l in [v4, mapped] {
            let want = Bound {
                addr: "127.0.0.1".parse().unwrap(),
                port: l.local_addr().unwrap().port(),
            };
            assert!(found.contains(&want), "{want:?} not in {found:?}");
        }
        assert_eq!(seq, 2, "one dump per family");
    }
}
