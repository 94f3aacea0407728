//! Helpers shared by the gvisor-tap-vsock tests (gvtap.rs, gvtap_ipv6.rs):
//! helper scripts the test user can read, ports nothing listens on, round
//! trips to forwarded ports, and the driver's descriptors and memory.

#![allow(dead_code)]

use rk_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::{Child, ChildStdout};
use std::time::{Duration, Instant};

pub const NET: &str = "--net=gvisor-tap-vsock";

/// Writes a helper script where the test user can read it; returns its path.
pub fn script(name: &str, body: &str) -> String {
    let dir = std::env::temp_dir().join(format!("rk-gvtap-scripts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    chmod(&dir, 0o755);
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    chmod(&path, 0o644);
    path.to_string_lossy().into_owned()
}

/// `udp_probe.py HOST PORT`: sends one datagram on a connected socket (IPv4
/// or IPv6, as HOST is) and says whether an answer, a refusal (ICMP port
/// unreachable) or nothing came.
pub const UDP_PROBE: &str = r#"
import socket, sys
family = socket.getaddrinfo(sys.argv[1], int(sys.argv[2]), type=socket.SOCK_DGRAM)[0][0]
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b'x')
try:
    print('UDP ANSWERED', s.recv(100))
except ConnectionRefusedError:
    print('udp refused')
except socket.timeout:
    print('udp timeout')
"#;

/// A TCP port of `ip` (the host's `127.0.0.1` or `::1`) that nothing
/// listens on (bound once, then released).
pub fn closed_tcp_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port of `ip` that nothing is bound to.
pub fn closed_udp_port(ip: &str) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to `addr`, sends `line`, returns what comes back (empty on EOF,
/// `Err` on a reset or refusal).
pub fn host_roundtrip(addr: impl ToSocketAddrs, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    // Generous: socat forks a shell per connection, slow on a busy machine.
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(line.as_bytes())?;
    let mut got = String::new();
    s.read_to_string(&mut got)?;
    Ok(got)
}

/// Waits until `f()` holds, up to `secs`.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Open descriptors of a running process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Resident memory of a process, in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Starts `rootlesskit ARGS` whose command prints `ready` first; returns
/// once that line came (within 20 s), with the rest of its output to read.
pub fn start_until_ready(args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let (child, mut out) = spawn_reading(rootlesskit(args));
    wait_for_line(&mut out, "ready", 20);
    (child, out)
}

/// Reads lines until one contains `needle` (panics on EOF or after
/// `secs`); returns everything read.
pub fn wait_for_line(r: &mut impl BufRead, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
            panic!("no {needle:?} in the output:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains(needle) {
            return seen;
        }
    }
}
