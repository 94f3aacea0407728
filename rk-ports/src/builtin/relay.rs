//! A worker's event loop: the shared relay ([`rk_driver::relay`]) over the
//! host sockets the parent hands over, with the control channel in the
//! same epoll, and the worker's load reported to the parent.

use super::source::Inside;
use super::wire::{FromWorker, ToWorker};
use rk_driver::relay::{Forward, Limits, Relay};
use rk_driver::{Channel, ChannelError};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

const CONTROL: u64 = 0;
/// A UDP flow idle this long is closed (RootlessKit's UDP proxy: 90 s).
const FLOW_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Worker {
    relay: Relay<Inside>,
    control: Channel,
    busy: bool,
    full: bool,
}

impl Worker {
    /// Every worker accepts on the same listeners: one wakes per
    /// connection.
    pub fn new(control: Channel, capacity: usize, inside: Inside) -> std::io::Result<Worker> {
        let limits = Limits {
            capacity,
            flow_idle: FLOW_TIMEOUT,
            shared_listeners: true,
        };
        let relay = Relay::new(inside, limits)?;
        relay.watch(control.as_fd(), CONTROL)?;
        Ok(Worker {
            relay,
            control,
            busy: false,
            full: false,
        })
    }

    /// Tells the parent the worker is ready; `false` if it is gone.
    pub fn ready(&self) -> bool {
        let capacity = self.relay.capacity();
        self.control
            .send(&FromWorker::Ready { capacity }, &[])
            .is_ok()
    }

    /// Serves until the parent goes away.
    pub fn run(&mut self) {
        loop {
            let ready = match self.relay.turn(None) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("[rootlesskit:port-worker] error: epoll: {e}");
                    return;
                }
            };
            if ready.contains(CONTROL) && !self.on_control() {
                return;
            }
            self.update_load();
        }
    }

    /// Tells the parent when the worker gets busy (so that it can start
    /// another) or full, or is no longer.
    fn update_load(&mut self) {
        let (active, capacity) = (self.relay.active(), self.relay.capacity());
        let busy = if self.busy {
            active * 10 >= capacity * 6
        } else {
            active * 10 >= capacity * 8
        };
        let full = active >= capacity;
        if busy != self.busy || full != self.full {
            self.busy = busy;
            self.full = full;
            let load = FromWorker::Load { active, busy, full };
            let _ = self.control.send(&load, &[]);
        }
    }

    /// One message from the parent; `false` when the parent is gone.
    fn on_control(&mut self) -> bool {
        let (msg, mut fds): (ToWorker, Vec<OwnedFd>) = match self.control.recv(None) {
            Ok(m) => m,
            Err(ChannelError::Decode(e)) => {
                eprintln!("[rootlesskit:port-worker] error: bad message from the parent: {e}");
                return true;
            }
            Err(_) => return false,
        };
        let reply = match msg {
            ToWorker::Add {
                id,
                udp,
                target,
                preserve_source,
            } => match fds.pop() {
                Some(fd) => match self.add(id, udp, target, preserve_source, fd) {
                    Ok(()) => FromWorker::Added { id },
                    Err(e) => FromWorker::Failed {
                        id,
                        message: e.to_string(),
                    },
                },
                None => FromWorker::Failed {
                    id,
                    message: "add without a socket".into(),
                },
            },
            ToWorker::Remove { id } => {
                self.relay.stop(id as u64, false);
                FromWorker::Removed { id }
            }
            ToWorker::Limit { refuse_when_full } => {
                self.relay.set_refuse_when_full(refuse_when_full);
                return true;
            }
            ToWorker::Start { .. } => FromWorker::Failed {
                id: 0,
                message: "start again: the worker has already started".into(),
            },
        };
        self.control.send(&reply, &[]).is_ok()
    }

    fn add(
        &mut self,
        id: i64,
        udp: bool,
        target: SocketAddr,
        preserve: bool,
        fd: OwnedFd,
    ) -> std::io::Result<()> {
        let fwd = Forward {
            tag: id as u64,
            target,
            keep_client_address: preserve,
        };
        if udp {
            self.relay.receive(fd, fwd)
        } else {
            self.relay.listen(fd, fwd)
        }
    }
}
