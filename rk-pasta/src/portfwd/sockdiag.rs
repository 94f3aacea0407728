//! Listening TCP sockets of the namespace from the kernel's socket
//! diagnostics (NETLINK_SOCK_DIAG, what `ss -lt` uses).
//!
//! `/proc/net/tcp` walks the whole connection hash table of the machine
//! (milliseconds per read on a host with much memory, twice a second); a
//! dump filtered to the LISTEN state reads only the listening sockets.

use super::procnet::Bound;
use nix::sys::socket::{recv, send, MsgFlags};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
/// struct inet_diag_req_v2.
const REQ_LEN: usize = 56;
/// struct inet_diag_msg up to and including its socket id.
const MSG_ID_END: usize = 4 + 48;
const TCP_LISTEN: u32 = 10;

/// The dump request for listening TCP sockets of `family`.
fn request(family: u8, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    m.extend_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(libc::IPPROTO_TCP as u8);
    m.push(0); // no extensions
    m.push(0);
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m.resize(NLMSG_HDRLEN + REQ_LEN, 0); // any socket id
    m
}

/// What one datagram of the answer holds: sockets, and whether it ended
/// the dump.
fn parse(buf: &[u8], seq: u32, found: &mut Vec<Bound>) -> io::Result<bool> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let u32_at = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().unwrap());
        let len = u32_at(at) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "truncated sock_diag answer",
            ));
        }
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        if u32_at(at + 8) == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = body
                        .get(..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                        .unwrap_or(-libc::EIO);
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                SOCK_DIAG_BY_FAMILY if body.len() >= MSG_ID_END => {
                    let port = u16::from_be_bytes([body[4], body[5]]);
                    let src = &body[8..24];
                    let addr = match body[0] as i32 {
                        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
                        _ => {
                            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(src).unwrap());
                            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                        }
                    };
                    if port != 0 {
                        found.push(Bound { addr, port });
                    }
                }
                _ => {}
            }
        }
        // Messages are aligned to 4 bytes.
        at += (len + 3) & !3;
    }
    Ok(false)
}

/// The listening TCP sockets (IPv4 and IPv6) that `diag`, a
/// NETLINK_SOCK_DIAG socket made in the namespace, sees.
pub fn listening_tcp(diag: &OwnedFd, seq: &mut u32) -> io::Result<Vec<Bound>> {
    let mut found = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        *seq = seq.wrapping_add(1);
        send(diag.as_raw_fd(), &request(family, *seq), MsgFlags::empty())?;
        loop {
            let n = match recv(diag.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if parse(&buf[..n], *seq, &mut found)? {
                break;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};

    #[test]
    fn request_is_a_dump_of_listening_tcp_sockets() {
        let r = request(libc::AF_INET6 as u8, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
        assert_eq!(r[16], libc::AF_INET6 as u8);
        assert_eq!(r[17], 6);
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 1 << 10);
    }

    #[test]
    fn error_answers_are_errors() {
        let mut msg = Vec::new();
        msg.extend_from_slice(&20u32.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&5u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let e = parse(&msg, 5, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // An answer to another request is not ours.
        assert!(!parse(&msg, 6, &mut Vec::new()).unwrap());
    }

    #[test]
    fn finds_a_listener_of_this_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let diag = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .unwrap();
        let mut seq = 0;
        let found = listening_tcp(&diag, &mut seq).unwrap();
        assert!(
            found.contains(&Bound {
                addr: "127.0.0.1".parse().unwrap(),
                port
            }),
            "{found:?}"
        );
    }
}
