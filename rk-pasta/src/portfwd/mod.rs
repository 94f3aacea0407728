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
mod relay;
mod sockdiag;
mod sockets;

use crate::contain::Contained;
use crate::probe::{Probe, TCP_AUTO_SCAN, UDP_AUTO_SCAN};
use nshelper::{Kind, NsSockets};
use procnet::{Bound, TCP_LISTEN, UDP_UNCONNECTED};
use relay::{Forwarded, Forwarder};
use rk_driver::fdio::{self, EventFd};
use rk_driver::NamespaceFds;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Seek};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The driver's own implicit forwarding: one thread, which scans for
/// bound ports and relays every connection (see [`relay`]).
#[derive(Debug)]
pub struct AutoForwarder {
    ns: Arc<NsSockets>,
    forwarding: Forwarding,
    /// Signalled to stop the thread.
    stop: Arc<EventFd>,
    thread: Option<Contained>,
}

#[derive(Debug)]
struct Scanner {
    ns: Arc<NsSockets>,
    /// Where listening TCP sockets are found, when TCP is forwarded.
    tcp: Option<TcpSource>,
    /// The namespace's (udp, udp6) tables, when UDP is forwarded.
    udp: Option<[std::fs::File; 2]>,
    tcp_ports: BTreeMap<u16, (SocketAddr, Forwarded)>,
    udp_ports: BTreeMap<u16, (SocketAddr, Forwarded)>,
    /// Ports whose host side could not be bound, reported once each.
    reported: BTreeSet<(bool, u16)>,
}

/// What stops when the forwarding thread fails for good.
const FORWARDING_STOPS: &str = "ports stop being forwarded (--port-driver=implicit)";
/// How often a forwarding thread that failed is started again.
const RESTARTS: u32 = 3;

impl AutoForwarder {
    /// Starts the namespace helper. Call this while the process is
    /// single-threaded (it forks).
    pub fn prepare(namespaces: &NamespaceFds, forwarding: Forwarding) -> io::Result<Self> {
        let ns = Arc::new(NsSockets::start(
            namespaces.userns.as_fd(),
            namespaces.netns.as_fd(),
        )?);
        let stop = Arc::new(EventFd::new()?);
        Ok(AutoForwarder {
            ns,
            forwarding,
            stop,
            thread: None,
        })
    }

    /// Starts scanning and forwarding, on a thread of its own.
    pub fn start(mut self) -> io::Result<Self> {
        // Opened here so that a failure is reported to the core.
        let first = Scanner::open(&self.ns, self.forwarding)?;
        let (ns, forwarding, stop) = (
            Arc::clone(&self.ns),
            self.forwarding,
            Arc::clone(&self.stop),
        );
        self.thread = Some(crate::contain::spawn(
            "port-forward",
            256 * 1024,
            FORWARDING_STOPS,
            move || supervise(first, &ns, forwarding, &stop),
        )?);
        Ok(self)
    }
}

/// Runs the forwarding loop; when it panics (and can be unwound), reports
/// it and starts it again, a few times.
fn supervise(first: Scanner, ns: &Arc<NsSockets>, forwarding: Forwarding, stop: &EventFd) {
    let mut scanner = Some(first);
    let failed = Arc::new(AtomicBool::new(false));
    for attempt in 0..=RESTARTS {
        let current = match scanner.take() {
            Some(s) => s,
            None => match Scanner::open(ns, forwarding) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("restarting port forwarding: {e}; {FORWARDING_STOPS}");
                    return;
                }
            },
        };
        match crate::contain::run(FORWARDING_STOPS, &failed, || forward(current, stop)) {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                log::error!("port forwarding: {e}; {FORWARDING_STOPS}");
                return;
            }
            Err(()) if attempt < RESTARTS => {
                log::warn!("port forwarding starts again");
                // A second's pause, unless told to stop.
                if fdio::wait_readable(stop.as_fd(), Duration::from_secs(1)).unwrap_or(true) {
                    return;
                }
            }
            Err(()) => return,
        }
    }
}

/// The loop: relays until `stop` turns readable, scanning for bound ports
/// every [`SCAN_INTERVAL`].
fn forward(mut scanner: Scanner, stop: &EventFd) -> io::Result<()> {
    const STOP: u64 = 0;
    let mut forwarder = Forwarder::new(Arc::clone(&scanner.ns))?;
    forwarder.relay().watch(stop.as_fd(), STOP)?;
    let mut next_scan = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_scan {
            scanner.scan(&mut forwarder);
            #[cfg(debug_assertions)]
            fault_injection();
            next_scan = now + SCAN_INTERVAL;
        }
        let wait = next_scan.saturating_duration_since(Instant::now());
        if forwarder.relay().turn(Some(wait))?.contains(STOP) {
            return Ok(());
        }
    }
}

/// Tests only (debug builds): `RK_PASTA_TEST_PANIC=port-forward` makes
/// the forwarding thread panic once, after its first scan, so that the
/// tests can check that a panic is contained and forwarding resumes.
#[cfg(debug_assertions)]
fn fault_injection() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if std::env::var("RK_PASTA_TEST_PANIC").as_deref() == Ok("port-forward")
        && !DONE.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        panic!("RK_PASTA_TEST_PANIC=port-forward");
    }
}

impl AutoForwarder {
    /// Sends the namespace helper SIGKILL, so that it exits while the rest
    /// is torn down; dropping this reaps it.
    pub fn kill_helper(&self) {
        self.ns.kill();
    }
}

impl Drop for AutoForwarder {
    fn drop(&mut self) {
        self.stop.signal();
        // The loop wakes at once and closes every socket it holds before
        // the driver exits.
        if let Some(t) = self.thread.take() {
            t.join();
        }
    }
}

impl Scanner {
    fn open(ns: &Arc<NsSockets>, forwarding: Forwarding) -> io::Result<Scanner> {
        let table = |kind| ns.get(kind).map(std::fs::File::from);
        let tcp = (forwarding.tcp == By::Driver)
            .then(|| TcpSource::open(ns))
            .transpose()?;
        match &tcp {
            Some(TcpSource::Diag(..)) => log::debug!("listening TCP ports from sock_diag"),
            Some(TcpSource::Tables(..)) => log::debug!("listening TCP ports from /proc/net/tcp*"),
            None => {}
        }
        let udp = (forwarding.udp == By::Driver)
            .then(|| Ok::<_, io::Error>([table(Kind::ProcUdp)?, table(Kind::ProcUdp6)?]))
            .transpose()?;
        Ok(Scanner {
            ns: Arc::clone(ns),
            tcp,
            udp,
            tcp_ports: BTreeMap::new(),
            udp_ports: BTreeMap::new(),
            reported: BTreeSet::new(),
        })
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
    fn scan(&mut self, relay: &mut Forwarder) {
        if let Some(bound) = self.tcp.as_mut().and_then(TcpSource::listening) {
            let wanted = procnet::targets(&bound);
            reconcile(
                &mut self.tcp_ports,
                &wanted,
                &mut self.reported,
                "tcp",
                relay,
                |r, port, target| r.forward_tcp(port, target),
                Forwarder::stop,
            );
        }
        if let Some(tables) = self.udp.as_mut() {
            let bound: Vec<Bound> = tables
                .iter_mut()
                .flat_map(|t| read_table(t, UDP_UNCONNECTED))
                .collect();
            let wanted = procnet::targets(&bound);
            reconcile(
                &mut self.udp_ports,
                &wanted,
                &mut self.reported,
                "udp",
                relay,
                |r, port, target| r.forward_udp(port, target),
                Forwarder::stop,
            );
        }
    }
}

/// Makes the forwarded ports those in `wanted`: starts new ones, stops
/// gone ones, restarts ones whose target inside changed.
fn reconcile<F, C>(
    current: &mut BTreeMap<u16, (SocketAddr, F)>,
    wanted: &BTreeMap<u16, SocketAddr>,
    reported: &mut BTreeSet<(bool, u16)>,
    proto: &str,
    ctx: &mut C,
    mut start: impl FnMut(&mut C, u16, SocketAddr) -> io::Result<F>,
    mut stop: impl FnMut(&mut C, F),
) {
    let is_tcp = proto == "tcp";
    let gone: Vec<u16> = current
        .iter()
        .filter(|(port, (target, _))| wanted.get(port) != Some(target))
        .map(|(port, _)| *port)
        .collect();
    for port in gone {
        if let Some((_, f)) = current.remove(&port) {
            stop(ctx, f);
        }
        log::debug!("no longer forwarding {proto} port {port}");
    }
    reported.retain(|(tcp, port)| *tcp != is_tcp || wanted.contains_key(port));
    for (&port, &target) in wanted {
        if current.contains_key(&port) {
            continue;
        }
        match start(ctx, port, target) {
            Ok(forward) => {
                log::debug!("forwarding {proto} port {port} to {target} inside");
                reported.remove(&(is_tcp, port));
                current.insert(port, (target, forward));
            }
            Err(e) => {
                if reported.insert((is_tcp, port)) {
                    log::warn!(
                        "cannot forward {proto} port {port} from the host \
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
        let mut stopped = Vec::new();
        let mut start = |_: &mut (), p: u16, t: SocketAddr| {
            started.push((p, t));
            if p == 81 {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else {
                Ok(p)
            }
        };
        let mut run = |current: &mut _, reported: &mut _, wanted: &BTreeMap<_, _>| {
            let stop = |_: &mut (), p| stopped.push(p);
            reconcile(current, wanted, reported, "tcp", &mut (), &mut start, stop)
        };
        run(
            &mut current,
            &mut reported,
            &BTreeMap::from([(80, a), (81, c)]),
        );
        assert_eq!(current.keys().copied().collect::<Vec<_>>(), [80]);
        assert!(reported.contains(&(true, 81)));
        run(&mut current, &mut reported, &BTreeMap::from([(80, b)]));
        assert_eq!(current[&80].0, b);
        assert!(reported.is_empty());
        run(&mut current, &mut reported, &BTreeMap::new());
        assert!(current.is_empty());
        assert_eq!(started, [(80, a), (81, c), (80, b)]);
        assert_eq!(stopped, [80, 80]);
    }
}
