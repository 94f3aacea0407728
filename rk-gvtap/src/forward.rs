//! `--port-driver=gvisor-tap-vsock`: host ports forwarded into the guest
//! through the stack. The driver's main thread opens the host socket (so
//! that "address in use" is answered at once) and hands it to the network
//! thread through a [`Control`] queue. There, a TCP listener's connections
//! become stack connections into the guest (`TcpNat::open_inbound`), and a
//! UDP socket's datagrams become UDP flows into the guest
//! (`UdpNat::relay_forwarded`).

use crate::epoll::{self, Epoll, Token};
use crate::ports::HostSocket;
use crate::slab::Slab;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::Mutex;

pub const KIND_LISTENER: u8 = 6;
pub const KIND_CONTROL: u8 = 7;

pub enum Command {
    Add {
        id: i64,
        socket: HostSocket,
        target: SocketAddrV4,
    },
    Remove {
        id: i64,
    },
}

/// Commands from the main thread to the network thread, and the eventfd
/// that wakes it.
pub struct Control {
    queue: Mutex<Vec<Command>>,
    wake: OwnedFd,
}

impl Control {
    pub fn new() -> io::Result<Control> {
        Ok(Control {
            queue: Mutex::new(Vec::new()),
            wake: crate::sys::eventfd()?,
        })
    }

    pub fn send(&self, c: Command) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push(c);
        crate::sys::signal(&self.wake);
    }

    pub fn wake_fd(&self) -> &OwnedFd {
        &self.wake
    }

    fn take(&self) -> Vec<Command> {
        let mut counter = [0u8; 8];
        // SAFETY: reading the 8-byte counter of our own non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

enum Socket {
    Tcp(TcpListener),
    /// Shared with the UDP flows that answer through it.
    Udp(Arc<UdpSocket>),
}

struct Forward {
    id: i64,
    socket: Socket,
    target: SocketAddrV4,
}

/// What a forwarded port's host socket has for the network thread.
pub enum Ready {
    /// New connections: (stream, client, target inside).
    Tcp(Vec<(TcpStream, SocketAddr, SocketAddrV4)>),
    /// Datagrams wait on the socket of port `id`.
    Udp {
        id: i64,
        socket: Arc<UdpSocket>,
        target: SocketAddrV4,
    },
    Nothing,
}

#[derive(Default)]
pub struct Forwards {
    listeners: Slab<Forward>,
    by_id: HashMap<i64, u32>,
}

impl Forwards {
    /// Applies the commands waiting in `control`; returns the ids of the
    /// ports removed (their UDP flows must end too).
    pub fn apply(&mut self, control: &Control, epoll: &Epoll) -> Vec<i64> {
        let mut removed = Vec::new();
        for c in control.take() {
            match c {
                Command::Add { id, socket, target } => {
                    let (index, generation) = self.listeners.vacant();
                    let token = Token::new(KIND_LISTENER, index, generation);
                    let (fd, socket) = match socket {
                        HostSocket::Tcp(l) => (l.as_raw_fd(), Socket::Tcp(l)),
                        HostSocket::Udp(u) => (u.as_raw_fd(), Socket::Udp(Arc::new(u))),
                    };
                    if let Err(e) = epoll.add(fd, epoll::IN | epoll::ET, token) {
                        log::warn!("port {id}: epoll: {e}");
                        continue;
                    }
                    self.listeners.insert(Forward { id, socket, target });
                    self.by_id.insert(id, index);
                }
                Command::Remove { id } => {
                    if let Some(i) = self.by_id.remove(&id) {
                        // Closing the socket removes it from epoll; TCP
                        // connections already made go on.
                        self.listeners.remove(i);
                        removed.push(id);
                    }
                }
            }
        }
        removed
    }

    /// What the host socket of `token` has.
    pub fn ready(&mut self, token: Token) -> Ready {
        let Some(f) = self.listeners.get_mut(token.index, token.generation) else {
            return Ready::Nothing;
        };
        match &f.socket {
            Socket::Tcp(l) => Ready::Tcp(accept_all(f.id, l, f.target)),
            Socket::Udp(u) => Ready::Udp {
                id: f.id,
                socket: u.clone(),
                target: f.target,
            },
        }
    }
}

/// Connections waiting on `listener`, with the client and the address in
/// the guest each must reach.
fn accept_all(
    id: i64,
    listener: &TcpListener,
    target: SocketAddrV4,
) -> Vec<(TcpStream, SocketAddr, SocketAddrV4)> {
    let mut out = Vec::new();
    loop {
        match listener.accept() {
            Ok((s, peer)) => {
                if s.set_nonblocking(true).is_ok() {
                    let _ = s.set_nodelay(true);
                    out.push((s, peer, target));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // EMFILE and the like: the connection waits in the backlog;
                // try again on the next event.
                log::warn!("port {id}: accept: {e}");
                break;
            }
        }
    }
    out
}
