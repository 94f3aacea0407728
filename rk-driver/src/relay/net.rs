//! The socket calls of the relay, non-blocking, on `OwnedFd`s, with
//! addresses read only when the kernel really gave one.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Maps a negative return to the thread's errno.
fn check<T: Copy + Default + PartialOrd>(r: T) -> io::Result<T> {
    if r < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// An integer socket option; failures are the caller's to ignore or not.
fn set_int_option(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `value`.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// TCP_NODELAY: a relay passes segments on as they come.
pub fn set_nodelay(fd: BorrowedFd<'_>) {
    let _ = set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
}

/// Makes the next close send a reset, as a refused connection would.
pub fn reset_on_close(fd: BorrowedFd<'_>) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one `linger` from the pointer.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// The address in `storage`, if `len` covers a whole one of its family.
/// (After shutdown(SHUT_RD) an unconnected UDP socket wakes with 0 bytes
/// and an address length of 0, the family field left as it was.)
pub(crate) fn sockaddr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say it is a sockaddr_in.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family and length say it is a sockaddr_in6.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Room for any address the kernel returns, and its size.
fn empty_sockaddr() -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    (storage, len)
}

/// Runs `call`, a system call that writes an address, with room for one;
/// returns its result and the address, if it wrote a whole one.
fn with_address<R>(
    call: impl FnOnce(*mut libc::sockaddr, *mut libc::socklen_t) -> R,
) -> (R, Option<SocketAddr>) {
    let (mut storage, mut len) = empty_sockaddr();
    let r = call(
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len,
    );
    (r, sockaddr(&storage, len))
}

/// `addr` as a sockaddr for the kernel, and its length.
fn raw_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let (mut storage, _) = empty_sockaddr();
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// accept4(2): the new socket non-blocking and close-on-exec from the
/// start (no `ioctl(FIONBIO)` afterwards, which some of our seccomp
/// policies refuse), and the peer's address when the kernel gave one.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    loop {
        let (r, peer) = with_address(|addr, len| {
            // SAFETY: the address buffer is valid for `len` bytes.
            unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    addr,
                    len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            }
        });
        match check(r) {
            // SAFETY: the descriptor is new and owned by nobody else.
            Ok(fd) => return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, peer)),
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Connects `fd` (non-blocking) to `addr`: `Ok(true)` while the connect
/// is still in progress.
pub fn connect(fd: BorrowedFd<'_>, addr: SocketAddr) -> io::Result<bool> {
    let (storage, len) = raw_sockaddr(addr);
    loop {
        // SAFETY: the address is valid for `len` bytes.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        match check(r) {
            Ok(_) => return Ok(false),
            Err(e) if interrupted(&e) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// recvfrom(2) without waiting: the datagram's length and sender, `None`
/// for the sender when the kernel gave no usable address.
pub fn recv_from(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<SocketAddr>)> {
    let (raw, data, size) = (fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: the buffer and the address are valid for the sizes passed;
    // the kernel writes at most that much.
    let call =
        |addr, len| unsafe { libc::recvfrom(raw, data, size, libc::MSG_DONTWAIT, addr, len) };
    let (n, from) = with_address(call);
    Ok((check(n)? as usize, from))
}

/// sendto(2) without waiting; `to: None` sends on a connected socket.
pub fn send_to(fd: BorrowedFd<'_>, data: &[u8], to: Option<SocketAddr>) -> io::Result<usize> {
    let (storage, len) = match to {
        Some(a) => raw_sockaddr(a),
        None => (empty_sockaddr().0, 0),
    };
    let addr: *const libc::sockaddr = if to.is_some() {
        (&storage as *const libc::sockaddr_storage).cast()
    } else {
        std::ptr::null()
    };
    // SAFETY: the data and the address are valid for the lengths passed.
    let n = check(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            addr,
            len,
        )
    })?;
    Ok(n as usize)
}

/// Whether a non-blocking connect has finished: `Ok(true)` connected,
/// `Ok(false)` still in progress, `Err` it failed.
pub fn connect_finished(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `err`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    // Still connecting: ENOTCONN.
    // SAFETY: the address buffer is valid for `len` bytes.
    let (r, _) = with_address(|addr, len| unsafe { libc::getpeername(fd.as_raw_fd(), addr, len) });
    Ok(r == 0)
}

/// shutdown(SHUT_WR): passes an EOF on (the peer may already be gone).
pub fn shutdown_write(fd: &impl AsFd) {
    // SAFETY: shutdown on a descriptor the caller keeps open.
    unsafe { libc::shutdown(fd.as_fd().as_raw_fd(), libc::SHUT_WR) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    #[test]
    fn a_receive_woken_by_shutdown_has_no_address_and_does_not_panic() {
        // What took rk-pasta down (issue 10): after shutdown(SHUT_RD) an
        // unconnected UDP socket wakes with 0 bytes and address length 0.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        // SAFETY: shutdown on a socket this test holds.
        unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RD) };
        let mut buf = [0u8; 16];
        match recv_from(sock.as_fd(), &mut buf) {
            Ok(got) => assert_eq!(got, (0, None)),
            Err(e) => assert!(would_block(&e), "{e}"),
        }
        // A family left in the address buffer with a length of 0.
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut stale: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        stale.ss_family = libc::AF_INET as libc::sa_family_t;
        assert_eq!(sockaddr(&stale, 0), None);
    }

    #[test]
    fn a_datagram_comes_with_its_sender_and_goes_back_to_it() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"hi", s.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let deadline = Instant::now() + Duration::from_secs(2);
        let (n, from) = loop {
            match recv_from(s.as_fd(), &mut buf) {
                Ok(got) => break got,
                Err(e) if would_block(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(
            (&buf[..n], from),
            (&b"hi"[..], Some(c.local_addr().unwrap()))
        );
        assert_eq!(send_to(s.as_fd(), b"back", from).unwrap(), 4);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
    }

    #[test]
    fn accept_gives_the_peer_and_connect_reports_progress() {
        let l = std::net::TcpListener::bind("[::1]:0")
            .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let to = l.local_addr().unwrap();
        let domain = if to.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: socket(2) with constant arguments; owned right away.
        let fd = unsafe {
            OwnedFd::from_raw_fd(libc::socket(
                domain,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            ))
        };
        connect(fd.as_fd(), to).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !connect_finished(fd.as_fd()).unwrap() {
            assert!(Instant::now() < deadline, "connect did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_, peer) = accept(l.as_fd()).unwrap();
        assert_eq!(peer.map(|p| p.ip()), Some(to.ip()));
    }
}
