//! Forwarding one UDP port: datagrams to the host's port go, per client
//! address, through a socket connected to the server inside the
//! namespace; its answers go back to that client from the host's port.

use super::nshelper::{Kind, NsSockets};
use super::sockets;
use nix::sys::socket::{shutdown, Shutdown, SockType};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A client silent this long is forgotten (pasta uses 180 s).
const FLOW_IDLE: Duration = Duration::from_secs(180);
/// How often blocked receives look at the stop flag and the idle time.
const TICK: Duration = Duration::from_secs(1);
const STACK: usize = 128 * 1024;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65535;

/// A forwarded port; dropping it stops forwarding.
#[derive(Debug)]
pub struct UdpForward {
    sockets: Vec<Arc<UdpSocket>>,
    stop: Arc<AtomicBool>,
}

/// One client's path to the server inside.
#[derive(Debug)]
struct Flow {
    inner: UdpSocket,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: AtomicU64,
    closed: AtomicBool,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>;

impl UdpForward {
    pub fn start(port: u16, target: SocketAddr, ns: &Arc<NsSockets>) -> io::Result<UdpForward> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut sockets = Vec::new();
        for (i, addr) in sockets::host_addresses(port).into_iter().enumerate() {
            let socket = match sockets::bound(SockType::Datagram, addr) {
                Ok(fd) => Arc::new(UdpSocket::from(fd)),
                Err(e) if i == 0 => return Err(e),
                Err(_) => continue,
            };
            socket.set_read_timeout(Some(TICK))?;
            let (host, ns, stop) = (Arc::clone(&socket), Arc::clone(ns), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("udp-{port}"))
                .stack_size(STACK)
                .spawn(move || receive_loop(&host, target, &ns, &stop))?;
            sockets.push(socket);
        }
        Ok(UdpForward { sockets, stop })
    }
}

impl Drop for UdpForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.sockets {
            // Wakes a blocked receive at once (on an unconnected socket
            // this reports ENOTCONN but still does it).
            let _ = shutdown(s.as_raw_fd(), Shutdown::Read);
        }
    }
}

fn receive_loop(host: &Arc<UdpSocket>, target: SocketAddr, ns: &NsSockets, stop: &Arc<AtomicBool>) {
    let epoch = Instant::now();
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !stop.load(Ordering::SeqCst) {
        let (n, client) = match host.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            // An ICMP error for an earlier answer; keep serving.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(_) => return,
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let flow = match flow_for(&flows, client, target, ns, host, stop, epoch) {
            Ok(f) => f,
            Err(_) => continue,
        };
        flow.last
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let _ = flow.inner.send(&buf[..n]);
    }
}

/// The flow of `client`, made (with its answering thread) on first use.
fn flow_for(
    flows: &Flows,
    client: SocketAddr,
    target: SocketAddr,
    ns: &NsSockets,
    host: &Arc<UdpSocket>,
    stop: &Arc<AtomicBool>,
    epoch: Instant,
) -> io::Result<Arc<Flow>> {
    let mut table = flows.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = table.get(&client) {
        if !f.closed.load(Ordering::SeqCst) {
            return Ok(Arc::clone(f));
        }
    }
    let kind = if target.is_ipv4() {
        Kind::Udp4
    } else {
        Kind::Udp6
    };
    let inner = UdpSocket::from(ns.get(kind)?);
    inner.connect(target)?;
    inner.set_read_timeout(Some(TICK))?;
    let flow = Arc::new(Flow {
        inner,
        last: AtomicU64::new(epoch.elapsed().as_millis() as u64),
        closed: AtomicBool::new(false),
    });
    let (f, host, stop, all) = (
        Arc::clone(&flow),
        Arc::clone(host),
        Arc::clone(stop),
        Arc::clone(flows),
    );
    std::thread::Builder::new()
        .name("udp-flow".into())
        .stack_size(STACK)
        .spawn(move || answer_loop(&f, client, &host, &stop, &all, epoch))?;
    table.insert(client, Arc::clone(&flow));
    Ok(flow)
}

/// Sends what the server inside answers back to `client`, until the flow
/// has been idle for [`FLOW_IDLE`] or forwarding stops.
fn answer_loop(
    flow: &Arc<Flow>,
    client: SocketAddr,
    host: &UdpSocket,
    stop: &AtomicBool,
    flows: &Flows,
    epoch: Instant,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match flow.inner.recv(&mut buf) {
            Ok(n) => {
                flow.last
                    .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                let _ = host.send_to(&buf[..n], client);
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // Nothing listens inside right now (ICMP port unreachable).
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(_) => break,
        }
        let idle =
            (epoch.elapsed().as_millis() as u64).saturating_sub(flow.last.load(Ordering::Relaxed));
        if stop.load(Ordering::SeqCst) || idle >= FLOW_IDLE.as_millis() as u64 {
            break;
        }
    }
    flow.closed.store(true, Ordering::SeqCst);
    let mut table = flows.lock().unwrap_or_else(|e| e.into_inner());
    if table.get(&client).is_some_and(|f| Arc::ptr_eq(f, flow)) {
        table.remove(&client);
    }
}
