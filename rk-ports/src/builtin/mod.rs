//! The builtin port driver: the parent listens on the host, relay workers
//! inside the child's namespaces carry the traffic.
//!
//! The parent (unprivileged, in the host's namespaces) opens each host
//! socket itself, so that bind errors (port in use, privileged port) are the
//! API's answer. It hands the socket to a *worker*: the separate executable
//! [`RELAY_BINARY`] (docs/driver-protocol.md §18), which joins the child's
//! user and network namespaces, confines itself ([`worker::policy`]), and
//! from then on accepts on the host socket (a socket keeps its network
//! namespace wherever its descriptor goes), connects inside, and moves the
//! bytes with splice(2). The parent never touches the data.
//!
//! Each worker serves as many connections as its descriptor limit allows;
//! when one gets busy the parent starts another (up to [`MAX_WORKERS`]) and
//! hands it the same listeners. See `docs/port-forwarding.md`.

mod listen;
mod relay;
mod routing;
mod source;
mod wire;
pub mod worker;

pub use wire::RELAY_BINARY;

use crate::api::PortDriverInfo;
use crate::manager::PortDriver;
use crate::spec::{PortSpec, Proto};
use rk_driver::helper::{Env, HelperCommand, Program};
use rk_driver::process::Supervised;
use rk_driver::Channel;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use wire::{FromWorker, ToWorker};

/// Most relay workers one rootlesskit starts.
pub const MAX_WORKERS: usize = 8;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay as a helper program: rootlesskit's environment, without the
/// protocol's variables but the channel's.
const RELAY_PROGRAM: Program = Program {
    name: RELAY_BINARY,
    flag: "",
    install: "install rootlesskit's builtin port relay next to rootlesskit",
    env: Env::Inherit,
};

pub const PROTOS: [&str; 6] = ["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"];

/// What the builtin driver needs from the core.
pub struct BuiltinOptions {
    /// The child's user namespace and the network namespace to relay into.
    pub userns: OwnedFd,
    pub netns: OwnedFd,
    /// Shown in the workers' command line, to tell them apart in `ps`.
    pub state_dir: PathBuf,
    /// The relay executable, [`RELAY_BINARY`] as discovery found it.
    pub relay: PathBuf,
    /// Let the server inside see the client's address (`--source-ip-transparent`).
    pub preserve_source: bool,
    /// `--debug`: workers say how they are confined.
    pub debug: bool,
}

pub struct Builtin {
    opts: BuiltinOptions,
    workers: Vec<Worker>,
    ports: BTreeMap<i64, Port>,
    refuse_when_full: bool,
    /// Starting a worker failed: no more will be tried.
    cannot_grow: bool,
    host_gateway: Option<IpAddr>,
}

struct Port {
    udp: bool,
    socket: OwnedFd,
    target: SocketAddr,
}

struct Worker {
    channel: Channel,
    process: Supervised,
    busy: bool,
    /// At capacity: it accepts no more (unless told to refuse).
    full: bool,
    /// Ids of the ports this worker relays.
    ports: Vec<i64>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.process.kill();
    }
}

impl Builtin {
    /// Starts the first worker.
    pub fn start(opts: BuiltinOptions) -> Result<Builtin, String> {
        let mut b = Builtin {
            opts,
            workers: Vec::new(),
            ports: BTreeMap::new(),
            refuse_when_full: false,
            cannot_grow: false,
            host_gateway: host_gateway_ip(),
        };
        let w = b.spawn_worker()?;
        b.workers.push(w);
        Ok(b)
    }

    fn spawn_worker(&self) -> Result<Worker, String> {
        let (ours, theirs) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut helper = HelperCommand::new(RELAY_PROGRAM, &self.opts.relay);
        // Exactly the channel gets through (the namespaces come as
        // SCM_RIGHTS with `start`).
        let fd = helper
            .pass_fd(theirs.as_fd())
            .map_err(|e| format!("port relay worker: {e}"))?;
        let cmd = helper.command();
        cmd.arg(format!("--state-dir={}", self.opts.state_dir.display()));
        if self.opts.debug {
            cmd.arg("--debug");
        }
        cmd.env(rk_driver::DRIVER_FD_ENV, fd.to_string())
            .stdout(Stdio::null());
        let process = helper.spawn().map_err(|e| {
            format!(
                "starting the port relay worker {}: {e}",
                self.opts.relay.display()
            )
        })?;
        drop(theirs);
        let mut w = Worker {
            channel: ours,
            process,
            busy: false,
            full: false,
            ports: Vec::new(),
        };
        w.send(
            &ToWorker::Start {
                index: self.workers.len() as u32,
                preserve_source: self.opts.preserve_source,
            },
            &[self.opts.userns.as_fd(), self.opts.netns.as_fd()],
        )?;
        match w.recv()? {
            FromWorker::Ready { .. } => {}
            FromWorker::Failed { message, .. } => {
                return Err(format!("port relay worker: {message}"))
            }
            other => return Err(format!("port relay worker: unexpected {other:?}")),
        }
        w.send(
            &ToWorker::Limit {
                refuse_when_full: self.refuse_when_full,
            },
            &[],
        )?;
        Ok(w)
    }

    /// Where connections to `spec` go inside, RootlessKit's way: the child
    /// IP if given; else the parent IP when it is a specific address (not a
    /// wildcard, not the host's own main address); else 127.0.0.1.
    fn target(&self, spec: &PortSpec) -> Result<SocketAddr, String> {
        let port = spec.child_port as u16;
        if !spec.child_ip.is_empty() {
            let ip: IpAddr = spec
                .child_ip
                .parse()
                .map_err(|_| format!("invalid ChildIP: {:?}", spec.child_ip))?;
            return Ok(SocketAddr::new(ip.to_canonical(), port));
        }
        let ip = match spec.parent_addr().map(|ip| ip.to_canonical()) {
            Some(IpAddr::V6(v6)) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            Some(ip) if !ip.is_unspecified() && Some(ip) != self.host_gateway => ip,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        Ok(SocketAddr::new(ip, port))
    }

    /// Gives port `id` to worker `w`.
    fn assign(&mut self, w: usize, id: i64) -> Result<(), String> {
        let port = &self.ports[&id];
        let msg = ToWorker::Add {
            id,
            udp: port.udp,
            target: port.target,
            preserve_source: self.opts.preserve_source,
        };
        let worker = &mut self.workers[w];
        worker.send(&msg, &[port.socket.as_fd()])?;
        match worker.answer(id)? {
            FromWorker::Added { .. } => {
                worker.ports.push(id);
                Ok(())
            }
            FromWorker::Failed { message, .. } => Err(message),
            other => Err(format!("port relay worker: unexpected {other:?}")),
        }
    }

    /// Starts another worker when every one is busy, and gives it the TCP
    /// ports (UDP ports stay with one worker each).
    fn grow_if_busy(&mut self) {
        if self.cannot_grow
            || self.workers.len() >= MAX_WORKERS
            || !self.workers.iter().all(|w| w.busy)
        {
            return;
        }
        match self.spawn_worker() {
            Ok(w) => {
                self.workers.push(w);
                let n = self.workers.len() - 1;
                let tcp: Vec<i64> = self
                    .ports
                    .iter()
                    .filter(|(_, p)| !p.udp)
                    .map(|(id, _)| *id)
                    .collect();
                for id in tcp {
                    if let Err(e) = self.assign(n, id) {
                        eprintln!("[rootlesskit:parent] warning: port {id}: {e}");
                    }
                }
            }
            Err(e) => {
                eprintln!("[rootlesskit:parent] warning: {e}; connections beyond the current workers' capacity will be refused");
                self.cannot_grow = true;
            }
        }
    }

    /// When every worker is full and no other can start, workers refuse new
    /// connections (reset) rather than leave them waiting; as soon as one
    /// has room again they stop refusing.
    fn update_refusal(&mut self) {
        let refuse = self.workers.iter().all(|w| w.full)
            && (self.cannot_grow || self.workers.len() >= MAX_WORKERS);
        if refuse == self.refuse_when_full {
            return;
        }
        self.refuse_when_full = refuse;
        for w in &mut self.workers {
            let _ = w.send(
                &ToWorker::Limit {
                    refuse_when_full: refuse,
                },
                &[],
            );
        }
    }

    /// Replaces a worker that died, with the ports it had.
    fn replace(&mut self, w: usize) {
        let ports = std::mem::take(&mut self.workers[w].ports);
        eprintln!(
            "[rootlesskit:parent] error: port relay worker {} exited; starting a new one (its connections are lost)",
            self.workers[w].process.pid()
        );
        match self.spawn_worker() {
            Ok(new) => {
                self.workers[w] = new;
                for id in ports {
                    if let Err(e) = self.assign(w, id) {
                        eprintln!("[rootlesskit:parent] error: port {id}: {e}");
                    }
                }
            }
            Err(e) => eprintln!("[rootlesskit:parent] error: {e}"),
        }
    }
}

impl PortDriver for Builtin {
    fn info(&self) -> PortDriverInfo {
        PortDriverInfo {
            driver: "builtin".into(),
            protos: PROTOS.iter().map(|p| p.to_string()).collect(),
            disallow_loopback_child_ip: false,
        }
    }

    fn add(&mut self, id: i64, spec: &PortSpec, proto: Proto) -> Result<(), String> {
        let udp = match proto {
            Proto::Tcp(_) => false,
            Proto::Udp(_) => true,
            Proto::Sctp(_) => {
                return Err(format!(
                    "unsupported port protocol {}: the builtin driver forwards tcp and udp",
                    spec.proto
                ))
            }
        };
        let target = self.target(spec)?;
        let socket: OwnedFd = listen::open(spec, proto)?.into();
        self.ports.insert(
            id,
            Port {
                udp,
                socket,
                target,
            },
        );
        // TCP: every worker accepts on the listener. UDP: the least loaded one.
        let chosen: Vec<usize> = if udp {
            let least = (0..self.workers.len())
                .min_by_key(|&w| self.workers[w].ports.len())
                .unwrap_or(0);
            vec![least]
        } else {
            (0..self.workers.len()).collect()
        };
        for w in chosen {
            if let Err(e) = self.assign(w, id) {
                let _ = self.remove(id);
                return Err(e);
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: i64) -> Result<(), String> {
        let mut first_error = None;
        for w in &mut self.workers {
            if !w.ports.contains(&id) {
                continue;
            }
            w.ports.retain(|p| *p != id);
            let result = w
                .send(&ToWorker::Remove { id }, &[])
                .and_then(|()| w.answer(id))
                .and_then(|a| match a {
                    FromWorker::Removed { .. } => Ok(()),
                    FromWorker::Failed { message, .. } => Err(message),
                    other => Err(format!("port relay worker: unexpected {other:?}")),
                });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        self.ports.remove(&id);
        first_error.map_or(Ok(()), Err)
    }

    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.workers.iter().map(|w| w.channel.as_fd()).collect()
    }

    fn on_ready(&mut self) {
        let mut dead = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            loop {
                match w.channel.wait_readable(Duration::ZERO) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => {
                        dead.push(i);
                        break;
                    }
                }
                match w.channel.recv::<FromWorker>(None) {
                    Ok((FromWorker::Load { busy, full, .. }, _)) => {
                        w.busy = busy;
                        w.full = full;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        dead.push(i);
                        break;
                    }
                }
            }
        }
        for i in dead {
            self.replace(i);
        }
        self.grow_if_busy();
        self.update_refusal();
    }
}

impl Worker {
    fn send(&self, msg: &ToWorker, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
        self.channel
            .send(msg, fds)
            .map_err(|e| format!("port relay worker: {e}"))
    }

    fn recv(&mut self) -> Result<FromWorker, String> {
        loop {
            let (msg, _) = self
                .channel
                .recv::<FromWorker>(Some(ANSWER_TIMEOUT))
                .map_err(|e| format!("port relay worker: {e}"))?;
            match msg {
                FromWorker::Load { busy, full, .. } => {
                    self.busy = busy;
                    self.full = full;
                }
                other => return Ok(other),
            }
        }
    }

    /// The answer about port `id`, skipping load notices.
    fn answer(&mut self, id: i64) -> Result<FromWorker, String> {
        loop {
            let msg = self.recv()?;
            match &msg {
                FromWorker::Added { id: i }
                | FromWorker::Removed { id: i }
                | FromWorker::Failed { id: i, .. }
                    if *i == id =>
                {
                    return Ok(msg)
                }
                _ => continue,
            }
        }
    }
}

/// The host's first non-loopback IPv4 address (RootlessKit's "host gateway
/// IP"): a parent IP equal to it is not reused as the child IP.
fn host_gateway_ip() -> Option<IpAddr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) else {
            continue;
        };
        let ip = sin.ip();
        if !ip.is_loopback() {
            return Some(IpAddr::V4(ip));
        }
    }
    None
}
