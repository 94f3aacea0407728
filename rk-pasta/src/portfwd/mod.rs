//! `--port-driver=implicit`: every port a program in the namespace listens
//! on is reachable on the host at the same number, without any API call.
//!
//! pasta does this itself (`-t auto`, `-u auto`): it rescans the
//! namespace's sockets every second and binds the same ports on the host.
//! Older pasta cannot do all of it: before 2023_03_21 its periodic TCP scan
//! ran only together with `-T auto` (mirroring the host's ports into the
//! namespace, which would undo --disable-host-loopback), and before
//! 2023_11_19 UDP ports were scanned only once, when pasta started (before
//! the command runs, so never usefully). For what the installed pasta
//! cannot do, the driver does the same job: it scans the namespace's
//! `/proc/net` tables twice a second and forwards each listening port
//! through sockets made inside the namespace.

mod nshelper;
mod procnet;
mod sockdiag;
mod sockets;
mod tcp;
mod udp;

use crate::probe::{Probe, TCP_AUTO_SCAN, UDP_AUTO_SCAN};
use nshelper::{Kind, NsSockets};
use procnet::{Bound, TCP_LISTEN, UDP_UNCONNECTED};
use rk_driver::NamespaceFds;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Seek};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tcp::TcpForward;
use udp::UdpForward;

/// How often the driver looks for newly bound ports.
const SCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Who forwards a protocol's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum By {
    #[default]
    Nobody,
    Pasta,
    /// rk-pasta itself, for an older pasta.
    Driver,
}

/// Who forwards TCP and who UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forwarding {
    pub tcp: By,
    pub udp: By,
}

impl Forwarding {
    /// Implicit forwarding with `probe`'s pasta: pasta where it can.
    pub fn for_pasta(probe: &Probe) -> Self {
        let release = probe.at_least();
        let by = |since| {
            if release >= Some(since) {
                By::Pasta
            } else {
                By::Driver
            }
        };
        Forwarding {
            tcp: by(TCP_AUTO_SCAN),
            udp: by(UDP_AUTO_SCAN),
        }
    }

    pub fn needs_driver(&self) -> bool {
        self.tcp == By::Driver || self.udp == By::Driver
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |by| match by {
            By::Nobody => "none",
            By::Pasta => "pasta",
            By::Driver => "rk-pasta",
        };
        if self.tcp == By::Nobody && self.udp == By::Nobody {
            return f.write_str("none");
        }
        write!(
            f,
            "implicit (tcp: {}, udp: {})",
            name(self.tcp),
            name(self.udp)
        )
    }
}

#[derive(Debug)]
enum TcpSource {
    /// A NETLINK_SOCK_DIAG socket of the namespace, and the last sequence
    /// number used on it.
    Diag(OwnedFd, u32),
    /// The namespace's (tcp, tcp6) tables, where socket diagnostics are
    /// not available.
    Tables([std::fs::File; 2]),
}

impl TcpSource {
    fn open(ns: &NsSockets) -> io::Result<Self> {
        if let Ok(diag) = ns.get(Kind::SockDiag) {
            let mut seq = 0;
            if sockdiag::listening_tcp(&diag, &mut seq).is_ok() {
                return Ok(TcpSource::Diag(diag, seq));
            }
        }
        let table = |kind| ns.get(kind).map(std::fs::File::from);
        Ok(TcpSource::Tables([
            table(Kind::ProcTcp)?,
            table(Kind::ProcTcp6)?,
        ]))
    }

    /// The listening sockets, or `None` if they cannot be read just now.
    fn listening(&mut self) -> Option<Vec<Bound>> {
        match self {
            TcpSource::Diag(diag, seq) => sockdiag::listening_tcp(diag, seq).ok(),
            TcpSource::Tables(tables) => Some(
                tables
                    .iter_mut()
                    .flat_map(|t| read_table(t, TCP_LISTEN))
                    .collect(),
            ),
        }
    }
}

/// The driver's own implicit forwarding.
#[derive(Debug)]
pub struct AutoForwarder {
    scanner: Option<Scanner>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Scanner {
    ns: Arc<NsSockets>,
    /// Where listening TCP sockets are found, when TCP is forwarded.
    tcp: Option<TcpSource>,
    /// The namespace's (udp, udp6) tables, when UDP is forwarded.
    udp: Option<[std::fs::File; 2]>,
    tcp_ports: BTreeMap<u16, (SocketAddr, TcpForward)>,
    udp_ports: BTreeMap<u16, (SocketAddr, UdpForward)>,
    /// Ports whose host side could not be bound, reported once each.
    reported: BTreeSet<(bool, u16)>,
    debug: bool,
}

impl AutoForwarder {
    /// Starts the namespace helper. Call this while the process is
    /// single-threaded (it forks).
    pub fn prepare(namespaces: &NamespaceFds, forwarding: Forwarding) -> io::Result<Self> {
        let ns = Arc::new(NsSockets::start(
            namespaces.userns.as_fd(),
            namespaces.netns.as_fd(),
        )?);
        let table = |kind| ns.get(kind).map(std::fs::File::from);
        let tcp = (forwarding.tcp == By::Driver)
            .then(|| TcpSource::open(&ns))
            .transpose()?;
        let debug = rk_driver::debug_enabled();
        if debug {
            match &tcp {
                Some(TcpSource::Diag(..)) => {
                    eprintln!("rk-pasta: listening TCP ports from sock_diag")
                }
                Some(TcpSource::Tables(..)) => {
                    eprintln!("rk-pasta: listening TCP ports from /proc/net/tcp*")
                }
                None => {}
            }
        }
        let udp = (forwarding.udp == By::Driver)
            .then(|| Ok::<_, io::Error>([table(Kind::ProcUdp)?, table(Kind::ProcUdp6)?]))
            .transpose()?;
        Ok(AutoForwarder {
            scanner: Some(Scanner {
                ns,
                tcp,
                udp,
                tcp_ports: BTreeMap::new(),
                udp_ports: BTreeMap::new(),
                reported: BTreeSet::new(),
                debug,
            }),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }

    /// Starts scanning (on a thread of its own).
    pub fn start(mut self) -> io::Result<Self> {
        let mut scanner = self.scanner.take().expect("started once");
        let stop = Arc::clone(&self.stop);
        self.thread = Some(std::thread::Builder::new().name("port-scan".into()).spawn(
            move || {
                while !stop.load(Ordering::SeqCst) {
                    scanner.scan();
                    std::thread::park_timeout(SCAN_INTERVAL);
                }
            },
        )?);
        Ok(self)
    }
}

impl Drop for AutoForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Not joined: a scan in progress may take milliseconds, and the
        // driver drops this only on its way out.
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
        }
    }
}

/// Reads one table again from the start (an open table keeps showing the
/// namespace it was opened in).
fn read_table(file: &mut std::fs::File, state: u8) -> Vec<Bound> {
    let mut text = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    procnet::parse(&text, state)
}

impl Scanner {
    fn scan(&mut self) {
        if let Some(bound) = self.tcp.as_mut().and_then(TcpSource::listening) {
            let wanted = procnet::targets(&bound);
            let ns = Arc::clone(&self.ns);
            reconcile(
                &mut self.tcp_ports,
                &wanted,
                &mut self.reported,
                self.debug,
                "tcp",
                |port, target| TcpForward::start(port, target, &ns),
            );
        }
        if let Some(tables) = self.udp.as_mut() {
            let bound: Vec<Bound> = tables
                .iter_mut()
                .flat_map(|t| read_table(t, UDP_UNCONNECTED))
                .collect();
            let wanted = procnet::targets(&bound);
            let ns = Arc::clone(&self.ns);
            reconcile(
                &mut self.udp_ports,
                &wanted,
                &mut self.reported,
                self.debug,
                "udp",
                |port, target| UdpForward::start(port, target, &ns),
            );
        }
    }
}

/// Makes the forwarded ports those in `wanted`: starts new ones, stops
/// gone ones, restarts ones whose target inside changed.
fn reconcile<F>(
    current: &mut BTreeMap<u16, (SocketAddr, F)>,
    wanted: &BTreeMap<u16, SocketAddr>,
    reported: &mut BTreeSet<(bool, u16)>,
    debug: bool,
    proto: &str,
    mut start: impl FnMut(u16, SocketAddr) -> io::Result<F>,
) {
    let is_tcp = proto == "tcp";
    current.retain(|port, (target, _)| {
        let keep = wanted.get(port) == Some(target);
        if !keep && debug {
            eprintln!("rk-pasta: no longer forwarding {proto} port {port}");
        }
        keep
    });
    reported.retain(|(tcp, port)| *tcp != is_tcp || wanted.contains_key(port));
    for (&port, &target) in wanted {
        if current.contains_key(&port) {
            continue;
        }
        match start(port, target) {
            Ok(forward) => {
                if debug {
                    eprintln!("rk-pasta: forwarding {proto} port {port} to {target} inside");
                }
                reported.remove(&(is_tcp, port));
                current.insert(port, (target, forward));
            }
            Err(e) => {
                if reported.insert((is_tcp, port)) {
                    eprintln!(
                        "rk-pasta: warning: cannot forward {proto} port {port} from the host \
                         (--port-driver=implicit): {e}; will retry while it is bound inside"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn probe(help: &str, version: &str) -> Probe {
        Probe::from_outputs(PathBuf::from("/usr/bin/pasta"), help, Some(version))
    }

    #[test]
    fn old_pasta_leaves_both_protocols_to_the_driver() {
        let f = Forwarding::for_pasta(&probe("--foreground", "pasta unknown version"));
        assert_eq!(
            f,
            Forwarding {
                tcp: By::Driver,
                udp: By::Driver
            }
        );
        assert!(f.needs_driver());
        assert_eq!(f.to_string(), "implicit (tcp: rk-pasta, udp: rk-pasta)");
    }

    #[test]
    fn pasta_forwards_what_its_release_can() {
        let f = Forwarding::for_pasta(&probe("--no-copy-routes", "pasta unknown version"));
        assert_eq!(
            f,
            Forwarding {
                tcp: By::Pasta,
                udp: By::Driver
            }
        );
        let f = Forwarding::for_pasta(&probe("", "pasta 2023_11_19.4f1709d"));
        assert_eq!(
            f,
            Forwarding {
                tcp: By::Pasta,
                udp: By::Pasta
            }
        );
        assert!(!f.needs_driver());
        let f = Forwarding::for_pasta(&probe("--host-lo-to-ns-lo", "pasta unknown version"));
        assert_eq!(
            f,
            Forwarding {
                tcp: By::Pasta,
                udp: By::Pasta
            }
        );
        assert_eq!(Forwarding::default().to_string(), "none");
    }

    #[test]
    fn reconcile_starts_stops_and_retargets() {
        let mut current: BTreeMap<u16, (SocketAddr, u16)> = BTreeMap::new();
        let mut reported = BTreeSet::new();
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "[::1]:80".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:81".parse().unwrap();
        let mut started = Vec::new();
        let mut start = |p: u16, t: SocketAddr| {
            started.push((p, t));
            if p == 81 {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else {
                Ok(p)
            }
        };
        let wanted = BTreeMap::from([(80, a), (81, c)]);
        reconcile(
            &mut current,
            &wanted,
            &mut reported,
            false,
            "tcp",
            &mut start,
        );
        assert_eq!(current.keys().copied().collect::<Vec<_>>(), [80]);
        assert!(reported.contains(&(true, 81)));
        let wanted = BTreeMap::from([(80, b)]);
        reconcile(
            &mut current,
            &wanted,
            &mut reported,
            false,
            "tcp",
            &mut start,
        );
        assert_eq!(current[&80].0, b);
        assert!(reported.is_empty());
        reconcile(
            &mut current,
            &BTreeMap::new(),
            &mut reported,
            false,
            "tcp",
            &mut start,
        );
        assert!(current.is_empty());
        assert_eq!(started, [(80, a), (81, c), (80, b)]);
    }
}
