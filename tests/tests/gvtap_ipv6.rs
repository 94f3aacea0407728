//! `--net=gvisor-tap-vsock --ipv6` (rk-gvtap): the guest's IPv6 address,
//! route and nameserver, and real traffic through the NAT. Every
//! destination is the IPv6 gateway `fd00::1` (the host's `::1`), a
//! nameserver on the host's 127.0.0.x, or hand-made frames to addresses the
//! NAT must refuse; servers listen only on the host's loopback.

use rk_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod gvtap_support;
use gvtap_support::*;

#[test]
fn ipv6_gives_fd00_100_a_default_route_via_fd00_1_and_a_second_nameserver() {
    let out = expect_success(&run_sh(
        &[NET, "--ipv6", "--copy-up=/etc", "--disable-host-loopback"],
        "ip -o -6 addr show dev tap0; ip -6 route; ip -o -4 addr show dev tap0; cat /etc/resolv.conf",
    ));
    assert!(out.contains("inet6 fd00::100/64 scope global"), "{out}");
    assert!(out.contains("default via fd00::1 dev tap0"), "{out}");
    // IPv4 is unchanged.
    assert!(out.contains("inet 10.0.2.100/24"), "{out}");
    let servers: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect();
    assert_eq!(servers, ["10.0.2.1", "fd00::1"], "{out}");
    // Without --ipv6, no IPv6 address but the link-local one.
    let out = expect_success(&run_sh(
        &[NET, "--disable-host-loopback"],
        "ip -o -6 addr show dev tap0 scope global; ip -6 route show default; echo end",
    ));
    assert_eq!(out.trim(), "end", "{out}");
}

#[test]
fn tcp_and_udp_to_the_ipv6_gateway_reach_the_hosts_v6_loopback_and_closed_ports_refuse() {
    let tport = servers::tcp_echo("::1");
    let uport = servers::udp_echo("::1");
    let closed = closed_tcp_port("::1");
    let uclosed = closed_udp_port("::1");
    let out = expect_success(&run_sh(
        &[NET, "--ipv6"],
        &format!(
            "echo hello6 | socat -t5 - TCP6:[fd00::1]:{tport}; \
             echo dgram6 | socat -t3 - UDP6:[fd00::1]:{uport}; \
             start=$(date +%s%N); \
             if echo x | socat -t5 - TCP6:[fd00::1]:{closed} 2>/dev/null; then echo CONNECTED; fi; \
             echo refused_ms=$(( ($(date +%s%N) - start) / 1000000 )); \
             python3 {probe} fd00::1 {uclosed}",
            probe = script("udp_probe.py", UDP_PROBE),
        ),
    ));
    assert!(out.contains("reply: hello6"), "{out}");
    assert!(out.contains("reply: dgram6"), "{out}");
    assert!(!out.contains("CONNECTED"), "{out}");
    assert!(out.contains("udp refused"), "{out}");
    let ms: u64 = field(&out, "refused_ms").parse().unwrap();
    assert!(ms < 2000, "a refused IPv6 connection took {ms} ms: {out}");
}

/// `bulk6.py PORT LEN`: receives LEN bytes from [fd00::1]:PORT and prints
/// their count and a checksum, then sends LEN bytes back.
const BULK6: &str = r#"
import hashlib, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(('fd00::1', port), timeout=30)
h = hashlib.sha256(); got = 0
while got < n:
    b = s.recv(1 << 16)
    if not b:
        break
    h.update(b); got += len(b)
print('down', got, h.hexdigest()[:16], flush=True)
block = bytes(range(256)) * 256
sent = 0
while sent < n:
    s.sendall(block); sent += len(block)
s.shutdown(socket.SHUT_WR)
print('up', sent, s.recv(100).decode().strip(), flush=True)
"#;

/// A server on `[::1]`: sends `len` pseudo-random bytes, then counts what
/// comes back and answers `count=N`. Returns the port and the sum of what
/// it sent (first 16 hex digits of its SHA-256, computed by python here).
fn bulk_server6(len: usize) -> (u16, Vec<u8>) {
    let l = TcpListener::bind("[::1]:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut data = vec![0u8; len];
    let mut x: u32 = 0x1234_5678;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let sent = data.clone();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            if s.write_all(&data).is_err() {
                return;
            }
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0usize;
            while n < len {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            let _ = s.write_all(format!("count={n}\n").as_bytes());
        }
    });
    (port, sent)
}

fn sha256_prefix(data: &[u8]) -> String {
    let dir = user_temp_dir("gv6sum");
    let f = dir.join("data");
    std::fs::write(&f, data).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&f)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&out.stdout)[..16].to_string()
}

#[test]
fn ipv6_transfers_both_ways_arrive_intact_at_mtu_65520_and_1500_with_and_without_offloads() {
    let len = 32 << 20;
    for args in [
        vec![NET, "--ipv6"],
        vec![NET, "--ipv6", "--mtu=1500"],
        vec![NET, "--ipv6", "--mtu=1500", "--net-opt", "offload=false"],
    ] {
        let (port, sent) = bulk_server6(len);
        let want = sha256_prefix(&sent);
        let out = output_within(
            {
                let mut all = args.clone();
                let py = script("bulk6.py", BULK6);
                let cmd = format!("python3 {py} {port} {len}");
                all.extend(["--", "sh", "-c", &cmd]);
                rootlesskit(&all)
            },
            Duration::from_secs(120),
        );
        let out = expect_success(&out);
        assert!(
            out.contains(&format!("down {len} {want}")),
            "{args:?}: {out}"
        );
        assert!(
            out.contains(&format!("up {len} count={len}")),
            "{args:?}: {out}"
        );
    }
}

#[test]
fn ping6_to_the_gateway_is_answered_with_and_without_host_loopback() {
    for args in [
        vec![NET, "--ipv6"],
        vec![NET, "--ipv6", "--disable-host-loopback"],
        vec![NET, "--ipv6", "--mtu=1500"],
    ] {
        let out = expect_success(&run_sh(
            &args,
            "ping -6 -c3 -i0.2 -W3 -s 1000 fd00::1; ping -6 -c1 -W3 -s 1400 fd00::1",
        ));
        assert!(out.contains("3 received"), "{args:?}: {out}");
        assert!(out.contains("1008 bytes from fd00::1"), "{args:?}: {out}");
        assert!(out.contains("1408 bytes from fd00::1"), "{args:?}: {out}");
    }
}

/// `dns6.py NAME`: one A query for NAME to `fd00::1` over UDP, one over
/// TCP, both over IPv6; prints the addresses answered.
const DNS6: &str = r#"
import socket, struct, sys
name = sys.argv[1]
q = struct.pack('>HHHHHH', 0x4321, 0x0100, 1, 0, 0, 0)
q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0'
q += struct.pack('>HH', 1, 1)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(q, ('fd00::1', 53))
a, src = u.recvfrom(512)
print('udp6 answer', socket.inet_ntoa(a[-4:]), 'from', src[0], flush=True)
s = socket.create_connection(('fd00::1', 53), timeout=5)
s.sendall(struct.pack('>H', len(q)) + q)
n = struct.unpack('>H', s.recv(2))[0]
a = b''
while len(a) < n:
    a += s.recv(n - len(a))
print('tcp6 answer', socket.inet_ntoa(a[-4:]), flush=True)
"#;

#[test]
fn dns_over_ipv6_at_the_gateway_is_forwarded_to_the_hosts_nameserver() {
    let resolver = dns::LocalResolver::start("127.0.72.6", "v6.gvtap.test", "10.9.8.6");
    let script_path = script("dns6.py", DNS6);
    let cmd_line = format!("python3 {script_path} one.v6.gvtap.test");
    let cmd = rootlesskit(&[
        NET,
        "--ipv6",
        "--disable-host-loopback",
        "--",
        "sh",
        "-c",
        &cmd_line,
    ]);
    let out = output_within(
        in_root_mount_ns("private", &resolver.mount_snippet(), &cmd),
        Duration::from_secs(60),
    );
    let out = expect_success(&out);
    assert!(out.contains("udp6 answer 10.9.8.6 from fd00::1"), "{out}");
    assert!(out.contains("tcp6 answer 10.9.8.6"), "{out}");
}

/// `forbidden6.py PORT6 PORT4`, run inside: TCP and UDP through the guest's
/// kernel to the gateway `[fd00::1]:PORT6`, then hand-made frames on tap0
/// (a TCP SYN, a UDP datagram and an echo request each) to addresses the
/// NAT must never connect to (`::1` but through the gateway, `::`, the
/// IPv4-compatible `::127.0.0.1`, the IPv4-mapped `::ffff:127.0.0.1` on
/// PORT4, link-local `fe80::1`) and to multicast `ff02::1`. Prints what
/// came back: ICMPv6 "administratively prohibited" per protocol and
/// address, anything else as OTHER.
const FORBIDDEN6: &str = r#"
import errno, socket, struct, subprocess, sys, time
P6, P4 = int(sys.argv[1]), int(sys.argv[2])
def err(e):
    return errno.errorcode.get(e.errno, str(e)) if e.errno else 'timeout'
def tcp(addr):
    s = socket.socket(socket.AF_INET6); s.settimeout(5)
    try:
        s.connect((addr, P6)); s.sendall(b'k\n'); r = 'connected ' + s.recv(100).decode().strip()
    except OSError as e:
        r = err(e)
    print('tcp %s %s' % (addr, r), flush=True)
def udp(addr):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(2)
    try:
        s.connect((addr, P6)); s.send(b'u\n'); r = 'answered ' + s.recv(100).decode().strip()
    except OSError as e:
        r = err(e)
    print('udp %s %s' % (addr, r), flush=True)
tcp('fd00::1'); udp('fd00::1')
subprocess.run(['ping', '-6', '-c1', '-W2', 'fd00::1'], stdout=subprocess.DEVNULL)

def a6(x):
    return socket.inet_pton(socket.AF_INET6, x)
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
SRC = 'fd00::100'
def ip6(dst, nh, seg, at):
    pseudo = a6(SRC) + a6(dst) + struct.pack('!IxxxB', len(seg), nh)
    seg = seg[:at] + struct.pack('!H', csum(pseudo + seg)) + seg[at + 2:]
    return struct.pack('!IHBB', 6 << 28, len(seg), nh, 64) + a6(SRC) + a6(dst) + seg
def port(dst):
    return P4 if dst.startswith('::ffff:') else P6
def syn(dst, sport):
    return ip6(dst, 6, struct.pack('!HHIIBBHHH', sport, port(dst), 1000, 0, 5 << 4, 0x02, 65535, 0, 0), 16)
def dgram(dst, sport):
    return ip6(dst, 17, struct.pack('!HHHH', sport, port(dst), 10, 0) + b'r\n', 6)
def echo(dst, ident):
    return ip6(dst, 58, struct.pack('!BBHHH', 128, 0, 0, ident, 1) + b'ping', 2)

neigh = subprocess.run(['ip', '-6', 'neigh', 'show', 'fd00::1'], capture_output=True, text=True).stdout.split()
gw = bytes.fromhex(neigh[neigh.index('lladdr') + 1].replace(':', ''))
me = bytes.fromhex(open('/sys/class/net/tap0/address').read().strip().replace(':', ''))
martians = ['::1', '::', '::127.0.0.1', '::ffff:127.0.0.1', 'fe80::1']
groups = ['ff02::1']
p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
p.bind(('tap0', 0))
n = 0
for dst in martians + groups:
    mac = bytes.fromhex('333300000001') if dst == 'ff02::1' else gw
    for frame in (syn(dst, 41000 + n), dgram(dst, 42000 + n), echo(dst, 43000 + n)):
        p.send(mac + me + b'\x86\xdd' + frame)
    n += 1
print('raw frames sent', 3 * n, flush=True)
p.settimeout(0.2)
deadline = time.time() + 2
while time.time() < deadline:
    try:
        f = p.recv(65535)
    except socket.timeout:
        continue
    ip = f[14:]
    if ip[6] not in (6, 17, 58) or ip[24:40] != a6(SRC) or ip[8:24] == a6(SRC):
        continue
    body = ip[40:]
    if ip[6] == 58 and body[0] in (133, 134, 135, 136, 143):
        continue  # neighbour discovery and MLD
    if ip[6] == 58 and body[0] == 1:
        inner = body[8:]
        proto = {58: 'icmp', 6: 'tcp', 17: 'udp'}.get(inner[6], '?')
        dst = socket.inet_ntop(socket.AF_INET6, inner[24:40])
        print('unreachable %s %s code %d' % (proto, dst, body[1]), flush=True)
    elif ip[6] == 58 and body[0] == 129 and socket.inet_ntop(socket.AF_INET6, ip[8:24]) == 'fd00::1':
        continue  # the ping above
    else:
        print('OTHER', ip[6], socket.inet_ntop(socket.AF_INET6, ip[8:24]), body[:4].hex(), flush=True)
"#;

/// A TCP and UDP server on `addr` port `port` (0: any) that count what
/// reaches them (TCP connections answer `reply: LINE`, datagrams `reply`).
struct Counting {
    port: u16,
    tcp: Arc<AtomicUsize>,
    udp: Arc<AtomicUsize>,
}

fn counting_server(addr: &str) -> Counting {
    let l = TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let u = UdpSocket::bind((addr, port)).expect("the same port for UDP");
    let (tcp, udp) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let t = tcp.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            t.fetch_add(1, Ordering::SeqCst);
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            let _ = s.write_all(format!("reply: {}\n", line.trim()).as_bytes());
        }
    });
    let c = udp.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = u.recv_from(&mut buf) {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = u.send_to(b"reply", from);
        }
    });
    Counting { port, tcp, udp }
}

#[test]
fn forbidden_ipv6_destinations_are_refused_and_the_hosts_loopback_is_reached_only_through_the_gateway(
) {
    for disable in [false, true] {
        let six = counting_server("::1");
        let four = counting_server("127.0.0.1");
        let mut args = vec![NET, "--ipv6"];
        if disable {
            args.push("--disable-host-loopback");
        }
        let out = expect_success(&run_sh(
            &args,
            &format!(
                "python3 {py} {} {}",
                six.port,
                four.port,
                py = script("forbidden6.py", FORBIDDEN6)
            ),
        ));
        if disable {
            assert!(out.contains("tcp fd00::1 ECONNREFUSED"), "{out}");
            assert!(out.contains("udp fd00::1 ECONNREFUSED"), "{out}");
        } else {
            assert!(out.contains("tcp fd00::1 connected reply: k"), "{out}");
            assert!(out.contains("udp fd00::1 answered reply"), "{out}");
        }
        assert!(out.contains("raw frames sent 18"), "{out}");
        for dst in ["::1", "::", "::127.0.0.1", "::ffff:127.0.0.1", "fe80::1"] {
            for proto in ["tcp", "udp", "icmp"] {
                let want = format!("unreachable {proto} {dst} code 1");
                assert!(out.contains(&want), "no {want:?}: {out}");
            }
        }
        assert!(!out.contains("ff02::1 code"), "{out}");
        assert!(!out.contains("OTHER"), "{out}");
        // Only the gateway's connection and datagram reached the host's
        // loopback, and only when host loopback is on.
        let want = usize::from(!disable);
        assert_eq!(six.tcp.load(Ordering::SeqCst), want, "{out}");
        assert_eq!(six.udp.load(Ordering::SeqCst), want, "{out}");
        assert_eq!(four.tcp.load(Ordering::SeqCst), 0, "{out}");
        assert_eq!(four.udp.load(Ordering::SeqCst), 0, "{out}");
    }
}
#[test]
fn the_port_driver_still_forwards_tcp_and_udp_with_ipv6_on() {
    let tcp4 = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp6 = closed_tcp_port("::1");
    let udp4 = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut child, _out) = start_until_ready(&[
        NET,
        "--ipv6",
        "--pidns",
        "--disable-host-loopback",
        "--port-driver=gvisor-tap-vsock",
        &format!("--publish=127.0.0.1:{tcp4}:80/tcp"),
        &format!("--publish=[::1]:{tcp6}:80/tcp6"),
        &format!("--publish=127.0.0.1:{udp4}:81/udp"),
        "--",
        "sh",
        "-c",
        "socat TCP-LISTEN:80,reuseaddr,fork SYSTEM:'read l; echo inside=$l' & \
         socat UDP-RECVFROM:81,fork SYSTEM:'echo udp-inside' & echo ready; sleep 60",
    ]);
    let four = format!("127.0.0.1:{tcp4}");
    let six = format!("[::1]:{tcp6}");
    assert!(eventually(15, || host_roundtrip(&four, "a4\n")
        .unwrap_or_default()
        .contains("inside=a4")));
    assert!(eventually(15, || host_roundtrip(&six, "a6\n")
        .unwrap_or_default()
        .contains("inside=a6")));
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(eventually(15, || {
        let _ = u.send_to(b"x\n", ("127.0.0.1", udp4));
        let mut buf = [0u8; 100];
        u.recv(&mut buf)
            .is_ok_and(|n| String::from_utf8_lossy(&buf[..n]).contains("udp-inside"))
    }));
    terminate(&mut child);
}

/// A UDP server on `[::1]` that sends every datagram back as it is.
fn udp_mirror6() -> u16 {
    let s = UdpSocket::bind("[::1]:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 70000];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    port
}

/// `big6.py PORT`: datagrams of 3000 and 20000 bytes to `[fd00::1]:PORT`
/// (fragmented by the guest's kernel, answered in fragments by the
/// driver); prints the sizes that came back intact.
const BIG6: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(('fd00::1', int(sys.argv[1])))
for n in (3000, 20000):
    msg = bytes(i % 251 for i in range(n))
    got = None
    for _ in range(3):
        s.send(msg)
        try:
            got = s.recv(70000)
            break
        except socket.timeout:
            pass
    print('udp6', n, 'intact' if got == msg else 'BAD %r' % (len(got) if got else got), flush=True)
"#;

#[test]
fn at_mtu_1500_large_ipv6_datagrams_and_pings_cross_in_fragments() {
    let port = udp_mirror6();
    for args in [
        vec![NET, "--ipv6", "--mtu=1500"],
        vec![NET, "--ipv6", "--mtu=1500", "--net-opt", "offload=false"],
        vec![NET, "--ipv6", "--mtu=1500", "--disable-host-loopback"],
    ] {
        let py = script("big6.py", BIG6);
        let loopback = !args.contains(&"--disable-host-loopback");
        let udp = if loopback {
            format!("python3 {py} {port}; ")
        } else {
            String::new()
        };
        let out = expect_success(&run_sh(
            &args,
            &format!("{udp}ping -6 -c2 -i0.3 -W3 -s 3000 fd00::1"),
        ));
        if loopback {
            assert!(out.contains("udp6 3000 intact"), "{args:?}: {out}");
            assert!(out.contains("udp6 20000 intact"), "{args:?}: {out}");
        }
        assert!(out.contains("2 received"), "{args:?}: {out}");
        assert!(out.contains("3008 bytes from fd00::1"), "{args:?}: {out}");
    }
}

/// `flood6.py KIND N PORT`: N hand-made IPv6 frames to the gateway from
/// inside, as fast as Python goes: `syn` (SYNs from new ports to PORT, a
/// closed port of the host's ::1), `udp` (datagrams to new ports), `ping`
/// (echo requests with 5000 identifiers), `frag` (first fragments of UDP
/// datagrams that never complete, each with its own identification).
const FLOOD6: &str = r#"
import socket, struct, subprocess, sys
kind, n, tport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SRC, GW = 'fd00::100', 'fd00::1'
a6 = lambda x: socket.inet_pton(socket.AF_INET6, x)
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ip6(nh, payload):
    return struct.pack('!IHBB', 6 << 28, len(payload), nh, 64) + a6(SRC) + a6(GW) + payload
def fix(nh, seg, at):
    pseudo = a6(SRC) + a6(GW) + struct.pack('!IxxxB', len(seg), nh)
    return seg[:at] + struct.pack('!H', csum(pseudo + seg)) + seg[at + 2:]
subprocess.run(['ping', '-6', '-c1', '-W2', GW], stdout=subprocess.DEVNULL)
neigh = subprocess.run(['ip', '-6', 'neigh', 'show', GW], capture_output=True, text=True).stdout.split()
gw = bytes.fromhex(neigh[neigh.index('lladdr') + 1].replace(':', ''))
me = bytes.fromhex(open('/sys/class/net/tap0/address').read().strip().replace(':', ''))
p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
p.bind(('tap0', 0))
head = gw + me + b'\x86\xdd'
sent = 0
for i in range(n):
    port = 20000 + i % 40000
    if kind == 'syn':
        frame = ip6(6, fix(6, struct.pack('!HHIIBBHHH', port, tport, i, 0, 5 << 4, 0x02, 65535, 0, 0), 16))
    elif kind == 'udp':
        frame = ip6(17, fix(17, struct.pack('!HHHH', port, 1024 + i % 60000, 9, 0) + b'x', 6))
    elif kind == 'ping':
        frame = ip6(58, fix(58, struct.pack('!BBHHH', 128, 0, 0, i % 5000, i) + b'flood', 2))
    else:
        udp = struct.pack('!HHHH', port, 1024 + i % 60000, 1008, 0) + b'f' * 1000
        frame = ip6(44, struct.pack('!BBHI', 17, 0, 1, i) + udp)
    try:
        p.send(head + frame); sent += 1
    except OSError:
        pass
print('flood', kind, 'sent', sent, flush=True)
"#;

#[test]
fn ipv6_floods_from_inside_leave_the_driver_up_with_memory_and_descriptors_bounded() {
    // Every frame goes to the gateway fd00::1 (the host's ::1, a closed
    // port for the SYNs): nothing leaves the machine.
    let echo = servers::tcp_echo("::1");
    let closed = closed_tcp_port("::1");
    let n = 20000;
    let flood = script("flood6.py", FLOOD6);
    let (max_tcp, max_udp, max_ping) = (300, 300, 256);
    let (mut child, mut out) = start_until_ready(&[
        NET,
        "--ipv6",
        "--net-opt",
        &format!("max-tcp-flows={max_tcp}"),
        "--net-opt",
        &format!("max-udp-flows={max_udp}"),
        "--",
        "sh",
        "-c",
        &format!(
            "echo x | socat -t5 - TCP6:[fd00::1]:{echo} >/dev/null; sleep 0.5; echo ready; \
             for k in syn udp ping frag; do python3 {flood} $k {n} {closed}; done; \
             sleep 0.5; echo after | socat -t5 - TCP6:[fd00::1]:{echo}; echo end"
        ),
    ]);
    let driver = child_named(child.id(), "rk-gvtap").expect("rk-gvtap is running");
    let (fds0, rss0) = (fd_count(driver), rss_kib(driver));
    let (mut most_fds, mut most_rss) = (fds0, rss0);
    let seen = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut seen = String::new();
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let mut l = String::new();
                if out.read_line(&mut l).unwrap_or(0) == 0 || Instant::now() > deadline {
                    return seen;
                }
                seen.push_str(&l);
                if l.starts_with("end") {
                    return seen;
                }
            }
        });
        while !h.is_finished() {
            most_fds = most_fds.max(fd_count(driver));
            most_rss = most_rss.max(rss_kib(driver));
            std::thread::sleep(Duration::from_millis(20));
        }
        h.join().unwrap()
    });
    let report =
        format!("before {fds0} fds {rss0} KiB; peak {most_fds} fds {most_rss} KiB\n{seen}");
    eprintln!("{report}");
    for kind in ["syn", "udp", "ping", "frag"] {
        assert!(seen.contains(&format!("flood {kind} sent {n}")), "{report}");
    }
    assert!(
        seen.contains("reply: after"),
        "the driver stopped serving\n{report}"
    );
    assert!(
        most_fds <= fds0 + max_tcp + max_udp + max_ping + 8,
        "{report}"
    );
    assert!(most_rss <= rss0 + 8 * 1024, "{report}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}\n{report}");
}
