//! Deleting the veth from inside its namespace at shutdown, over the
//! NETLINK_ROUTE socket opened there. Deleting one end of a veth pair
//! deletes the other, so the host side leaves the bridge at once, not
//! whenever the kernel gets round to destroying the namespace (and not
//! never, if something else still holds the namespace open).

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

const NLMSG_HEADER: usize = 16;
const IFINFOMSG: usize = 16;
const NLMSG_ERROR: u16 = 2;

/// Deletes the interface with `index` in the socket's namespace. An
/// interface that is already gone is not an error.
pub fn delete(netlink: &OwnedFd, index: u32) -> Result<(), String> {
    let seq: u32 = 1;
    let mut msg = Vec::with_capacity(NLMSG_HEADER + IFINFOMSG);
    msg.extend_from_slice(&((NLMSG_HEADER + IFINFOMSG) as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_DELLINK.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg: family, pad, type, index, flags, change.
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    msg.extend_from_slice(&(index as i32).to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    send(netlink.as_raw_fd(), &msg, MsgFlags::empty()).map_err(|e| format!("netlink send: {e}"))?;

    let mut pfd = [PollFd::new(netlink.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut pfd, PollTimeout::from(1000u16)) {
            Ok(0) => return Err("the kernel did not answer RTM_DELLINK within 1 s".into()),
            Ok(_) => break,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
    let mut buf = [0u8; 4096];
    let n = recv(netlink.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(|e| format!("netlink recv: {e}"))?;
    match ack_errno(&buf[..n], seq) {
        Some(0) | Some(libc::ENODEV) => Ok(()),
        Some(errno) => Err(format!(
            "deleting interface {index}: {}",
            std::io::Error::from_raw_os_error(errno)
        )),
        None => Err("unexpected netlink answer to RTM_DELLINK".into()),
    }
}

/// The errno of the NLMSG_ERROR that answers `seq` (0 is an ACK).
fn ack_errno(reply: &[u8], seq: u32) -> Option<i32> {
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    let got_seq = u32::from_ne_bytes(reply.get(8..12)?.try_into().ok()?);
    if kind != NLMSG_ERROR || got_seq != seq {
        return None;
    }
    let error = i32::from_ne_bytes(reply.get(16..20)?.try_into().ok()?);
    Some(-error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_errno_of_an_ack() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[8..12].copy_from_slice(&1u32.to_ne_bytes());
        ack[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(ack_errno(&ack, 1), Some(libc::EPERM));
        assert_eq!(ack_errno(&ack, 2), None);
        assert_eq!(ack_errno(&ack[..10], 1), None);
    }

    #[test]
    fn deleting_a_missing_interface_is_fine() {
        // In our own namespace: index 999999 does not exist.
        let fd = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Netlink,
            nix::sys::socket::SockType::Raw,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            nix::sys::socket::SockProtocol::NetlinkRoute,
        )
        .unwrap();
        // Without CAP_NET_ADMIN the kernel says EPERM before it looks.
        match delete(&fd, 999_999) {
            Ok(()) => {}
            Err(e) => assert!(e.contains("not permitted"), "{e}"),
        }
    }
}
