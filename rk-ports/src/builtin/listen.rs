//! Host-side sockets, opened as Go's `net.Listen`/`net.ListenUDP` open them
//! for RootlessKit: `tcp` on a wildcard address listens on IPv6 and IPv4,
//! `tcp4`/`tcp6` on one family only.

use crate::spec::{Family, PortSpec, Proto};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Opens the host socket of `spec`: listening for TCP, bound for UDP.
/// Errors read like Go's (`listen tcp 0.0.0.0:80: bind: permission denied`),
/// with RootlessKit's hint for privileged ports.
pub fn open(spec: &PortSpec, proto: Proto) -> Result<Socket, String> {
    let port = spec.parent_port as u16;
    let ip = spec.parent_addr();
    let wildcard = ip.is_none_or(|ip| ip.is_unspecified());
    let addr = match (proto.family(), ip) {
        (Family::Any, _) if wildcard => {
            // Dual-stack if the host has IPv6, like Go.
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
        }
        (Family::V4, None) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        (Family::V6, None) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        (_, Some(ip)) => SocketAddr::new(ip.to_canonical(), port),
        (Family::Any, None) => unreachable!("no IP is a wildcard"),
    };
    let net = if proto.is_tcp() { "tcp" } else { "udp" };
    let shown = match &ip {
        Some(ip) => SocketAddr::new(*ip, port).to_string(),
        None => format!(":{port}"),
    };
    let fail = |op: &str, e: io::Error| {
        let text = format!("listen {net} {shown}: {op}: {}", describe(&e));
        if e.raw_os_error() == Some(libc::EACCES) {
            privileged_hint(port, text)
        } else {
            text
        }
    };
    let dual = proto.family() == Family::Any && wildcard;
    let sock = match make(addr, proto, dual) {
        Err((_, e)) if dual && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            // No IPv6 on this host: IPv4 only, as Go falls back.
            make(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                proto,
                false,
            )
        }
        other => other,
    };
    let sock = sock.map_err(|(op, e)| fail(op, e))?;
    Ok(sock)
}

fn make(addr: SocketAddr, proto: Proto, dual: bool) -> Result<Socket, (&'static str, io::Error)> {
    let ty = if proto.is_tcp() {
        Type::STREAM
    } else {
        Type::DGRAM
    };
    let s = Socket::new(Domain::for_address(addr), ty.nonblocking().cloexec(), None)
        .map_err(|e| ("socket", e))?;
    if addr.is_ipv6() {
        s.set_only_v6(!dual).map_err(|e| ("setsockopt", e))?;
    }
    if proto.is_tcp() {
        s.set_reuse_address(true).map_err(|e| ("setsockopt", e))?;
    }
    s.bind(&SockAddr::from(addr)).map_err(|e| ("bind", e))?;
    if proto.is_tcp() {
        s.listen(4096).map_err(|e| ("listen", e))?;
    }
    Ok(s)
}

fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => "address already in use".into(),
        Some(libc::EACCES) => "permission denied".into(),
        Some(libc::EADDRNOTAVAIL) => {
            "cannot assign requested address (the host has no such address)".into()
        }
        _ => e.to_string(),
    }
}

/// RootlessKit's explanation of EACCES on ports below
/// `net.ipv4.ip_unprivileged_port_start`.
fn privileged_hint(port: u16, err: String) -> String {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match start {
        Some(start) if u32::from(port) < start => format!(
            "cannot expose privileged port {port}, you can add 'net.ipv4.ip_unprivileged_port_start={port}' to /etc/sysctl.conf (currently {start}), or set CAP_NET_BIND_SERVICE on rootlesskit binary, or choose a larger port number (>= {start}): {err}"
        ),
        _ => err,
    }
}
