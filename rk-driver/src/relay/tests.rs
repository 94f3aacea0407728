//! The relay on the host's loopback: an [`Inside`] that makes ordinary
//! sockets stands in for a namespace.

use super::*;
use crate::fdio::EventFd;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::FromRawFd;
use std::sync::mpsc;

/// Makes loopback sockets and reports the client addresses it was asked
/// to keep.
struct Loopback {
    clients: mpsc::Sender<SocketAddr>,
}

impl Inside for Loopback {
    fn socket(&mut self, target: SocketAddr, stream: bool) -> io::Result<OwnedFd> {
        let domain = if target.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let ty = if stream {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_DGRAM
        };
        // SAFETY: socket(2) with integer arguments; owned right away if valid.
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn bind_client(&mut self, _: BorrowedFd, _: SocketAddr, client: SocketAddr) -> Option<IpAddr> {
        let _ = self.clients.send(client);
        None
    }
}

/// A relay on its own thread until the returned guard drops.
struct Running {
    stop: EventFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.signal();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Starts a relay with `capacity` for the given ports (TCP listeners and
/// UDP sockets, with their targets); the channel gets the client
/// addresses [`Inside`] was asked to keep.
fn start(
    capacity: usize,
    refuse_when_full: bool,
    tcp: Vec<(TcpListener, SocketAddr)>,
    udp: Vec<(UdpSocket, SocketAddr)>,
) -> (Running, mpsc::Receiver<SocketAddr>) {
    let (tx, rx) = mpsc::channel();
    let stop = EventFd::new().unwrap();
    let stop_fd = stop.as_fd().try_clone_to_owned().unwrap();
    let limits = Limits {
        capacity,
        flow_idle: Duration::from_secs(60),
        shared_listeners: false,
    };
    let mut relay = Relay::new(Loopback { clients: tx }, limits).unwrap();
    relay.watch(stop_fd.as_fd(), 3).unwrap();
    relay.set_refuse_when_full(refuse_when_full);
    for (i, (l, target)) in tcp.into_iter().enumerate() {
        let fwd = Forward {
            tag: i as u64,
            target,
            keep_client_address: true,
        };
        relay.listen(OwnedFd::from(l), fwd).unwrap();
    }
    for (i, (s, target)) in udp.into_iter().enumerate() {
        let fwd = Forward {
            tag: 100 + i as u64,
            target,
            keep_client_address: false,
        };
        relay.receive(OwnedFd::from(s), fwd).unwrap();
    }
    let thread = std::thread::spawn(move || {
        let _keep = stop_fd;
        while !relay
            .turn(Some(Duration::from_secs(5)))
            .unwrap()
            .contains(3)
        {}
    });
    (
        Running {
            stop,
            thread: Some(thread),
        },
        rx,
    )
}

fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                let _ = s.write_all(&buf);
            });
        }
    });
    at
}

fn timeout(s: &TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
}

#[test]
fn tcp_is_relayed_both_ways_with_the_half_close_and_the_client_address() {
    let target = echo_server();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = host.local_addr().unwrap();
    let (_relay, clients) = start(16, false, vec![(host, target)], vec![]);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = TcpStream::connect(at).unwrap();
    timeout(&c);
    let writer = {
        let mut c = c.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || {
            c.write_all(&payload).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == payload, "{} bytes came back", back.len());
    let asked = clients.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(asked, c.local_addr().unwrap());
}

#[test]
fn udp_answers_go_back_to_each_client_from_the_port() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let mut answer = b"re:".to_vec();
            answer.extend_from_slice(&buf[..n]);
            server.send_to(&answer, from).unwrap();
        }
    });
    let port = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = port.local_addr().unwrap();
    let (_relay, clients) = start(16, false, vec![], vec![(port, target)]);
    for word in [&b"one"[..], b"two"] {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(word, at).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(from, at);
        assert_eq!(&buf[..3], b"re:");
        assert_eq!(&buf[3..n], word);
    }
    // Not asked to keep the client's address.
    assert!(clients.try_recv().is_err());
}

#[test]
fn at_capacity_a_refusing_relay_resets_and_keeps_the_open_connection() {
    let target = echo_server();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = host.local_addr().unwrap();
    let (_relay, _) = start(1, true, vec![(host, target)], vec![]);
    let mut first = TcpStream::connect(at).unwrap();
    timeout(&first);
    first.write_all(b"x").unwrap();
    // Wait until the relay holds the first connection.
    std::thread::sleep(Duration::from_millis(200));
    let mut second = TcpStream::connect(at).unwrap();
    timeout(&second);
    let mut buf = [0u8; 1];
    let refused = second.read(&mut buf);
    assert!(
        matches!(&refused, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "{refused:?}"
    );
    first.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    first.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"x");
}

#[test]
fn caller_tokens_are_below_the_relays() {
    let limits = Limits {
        capacity: 1,
        flow_idle: Duration::from_secs(1),
        shared_listeners: true,
    };
    let (tx, _rx) = mpsc::channel();
    let relay = Relay::new(Loopback { clients: tx }, limits).unwrap();
    let e = EventFd::new().unwrap();
    assert!(relay.watch(e.as_fd(), FIRST_TOKEN).is_err());
    assert!(Ready(1 << 2).contains(2) && !Ready(1 << 2).contains(FIRST_TOKEN));
}
