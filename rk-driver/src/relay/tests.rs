//! The relay on the host's loopback: an [`Inside`] that makes ordinary
//! sockets stands in for a namespace.

use super::*;
use crate::fdio::EventFd;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
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

type Command = Box<dyn FnOnce(&mut Relay<Loopback>) + Send>;

/// A relay on its own thread until the returned guard drops.
struct Running {
    stop: EventFd,
    /// Work to run on the relay's thread, and its wake-up.
    commands: mpsc::Sender<Command>,
    wake: EventFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Runs `f` on the relay's thread, between two turns.
    fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Relay<Loopback>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = mpsc::channel();
        let command: Command = Box::new(move |relay| {
            let _ = tx.send(f(relay));
        });
        self.commands.send(command).unwrap();
        self.wake.signal();
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    }
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
    let limits = Limits {
        capacity,
        flow_idle: Duration::from_secs(60),
        shared_listeners: false,
    };
    start_with(limits, refuse_when_full, tcp, udp)
}

fn start_with(
    limits: Limits,
    refuse_when_full: bool,
    tcp: Vec<(TcpListener, SocketAddr)>,
    udp: Vec<(UdpSocket, SocketAddr)>,
) -> (Running, mpsc::Receiver<SocketAddr>) {
    let (tx, rx) = mpsc::channel();
    let stop = EventFd::new().unwrap();
    let stop_fd = stop.as_fd().try_clone_to_owned().unwrap();
    let wake = EventFd::new().unwrap();
    // The relay's thread watches a duplicate of the wake-up.
    let wake_theirs = wake.as_fd().try_clone_to_owned().unwrap();
    let (commands, incoming) = mpsc::channel::<Command>();
    let mut relay = Relay::new(Loopback { clients: tx }, limits).unwrap();
    relay.watch(stop_fd.as_fd(), 3).unwrap();
    relay.watch(wake_theirs.as_fd(), 4).unwrap();
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
        let _keep = (stop_fd, &wake_theirs);
        loop {
            let ready = relay.turn(Some(Duration::from_secs(5))).unwrap();
            if ready.contains(3) {
                return;
            }
            if ready.contains(4) {
                let mut count = [0u8; 8];
                // SAFETY: reads 8 bytes into a buffer we own (drains the eventfd).
                unsafe { libc::read(wake_theirs.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
                for command in incoming.try_iter() {
                    command(&mut relay);
                }
            }
        }
    });
    (
        Running {
            stop,
            commands,
            wake,
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

#[test]
fn a_stopped_port_keeps_or_closes_its_open_connections_as_asked() {
    let target = echo_server();
    let (a, b) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (at_a, at_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let (relay, _) = start(16, false, vec![(a, target), (b, target)], vec![]);
    let mut kept = TcpStream::connect(at_a).unwrap();
    let mut closed = TcpStream::connect(at_b).unwrap();
    for c in [&kept, &closed] {
        timeout(c);
    }
    kept.write_all(b"k").unwrap();
    closed.write_all(b"c").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while relay.with(|r| r.active()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "connections not relayed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Tags follow the listeners' order in `start`.
    relay.with(|r| r.stop(0, true));
    relay.with(|r| r.stop(1, false));
    assert_eq!(relay.with(|r| r.active()), 1);
    // The kept connection still works; the listener is gone.
    kept.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    kept.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"k");
    assert!(TcpStream::connect(at_a).is_err(), "port 0 still listens");
    let mut buf = [0u8; 4];
    let after_stop = closed.read(&mut buf);
    let ended = match &after_stop {
        Ok(0) => true,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(ended, "the closed port's connection: {after_stop:?}");
}

#[test]
fn an_idle_udp_flow_is_forgotten() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap();
    let port = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = port.local_addr().unwrap();
    let limits = Limits {
        capacity: 16,
        flow_idle: Duration::from_millis(200),
        shared_listeners: false,
    };
    let (relay, _) = start_with(limits, false, vec![], vec![(port, target)]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"x", at).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4];
    server.recv_from(&mut buf).unwrap();
    assert_eq!(relay.with(|r| r.active()), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while relay.with(|r| r.active()) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flow was never forgotten"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
