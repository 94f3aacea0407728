//! `--port-driver=gvisor-tap-vsock`: host ports forwarded into the guest
//! through the stack. The driver's main thread binds the host listener (so
//! that "address in use" is answered at once) and hands it to the network
//! thread through a [`Control`] queue; the network thread accepts
//! connections and opens a stack connection from the gateway to the guest
//! for each (see `TcpNat::open_inbound`).

use crate::epoll::{self, Epoll, Token};
use crate::slab::Slab;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

pub const KIND_LISTENER: u8 = 6;
pub const KIND_CONTROL: u8 = 7;

pub enum Command {
    Add {
        id: i64,
        listener: TcpListener,
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

struct Forward {
    id: i64,
    listener: TcpListener,
    target: SocketAddrV4,
}

#[derive(Default)]
pub struct Forwards {
    listeners: Slab<Forward>,
    by_id: HashMap<i64, u32>,
}

impl Forwards {
    /// Applies the commands waiting in `control`.
    pub fn apply(&mut self, control: &Control, epoll: &Epoll) {
        for c in control.take() {
            match c {
                Command::Add {
                    id,
                    listener,
                    target,
                } => {
                    let (index, generation) = self.listeners.vacant();
                    let token = Token::new(KIND_LISTENER, index, generation);
                    if let Err(e) = epoll.add(listener.as_raw_fd(), epoll::IN | epoll::ET, token) {
                        eprintln!("rk-gvtap: port {id}: epoll: {e}");
                        continue;
                    }
                    self.listeners.insert(Forward {
                        id,
                        listener,
                        target,
                    });
                    self.by_id.insert(id, index);
                }
                Command::Remove { id } => {
                    if let Some(i) = self.by_id.remove(&id) {
                        // Closing the listener removes it from epoll;
                        // connections already made go on.
                        self.listeners.remove(i);
                    }
                }
            }
        }
    }

    /// Connections waiting on the listener of `token`, with the address in
    /// the guest each must reach.
    pub fn accept(&mut self, token: Token) -> Vec<(TcpStream, SocketAddrV4)> {
        let mut out = Vec::new();
        let Some(f) = self.listeners.get_mut(token.index, token.generation) else {
            return out;
        };
        loop {
            match f.listener.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_ok() {
                        let _ = s.set_nodelay(true);
                        out.push((s, f.target));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // EMFILE and the like: the connection waits in the
                    // backlog; try again on the next event.
                    eprintln!("rk-gvtap: port {}: accept: {e}", f.id);
                    break;
                }
            }
        }
        out
    }
}
