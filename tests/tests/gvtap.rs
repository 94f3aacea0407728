//! `--net=gvisor-tap-vsock` (rk-gvtap): the userspace stack with its NAT,
//! through real traffic to servers on the host's loopback. Every destination
//! is the gateway (10.0.x.1), which the NAT maps to the host's 127.0.0.1, or
//! a nameserver on 127.0.0.x: nothing leaves the machine.

use rk_tests::*;
use std::io::{BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod gvtap_support;
use gvtap_support::*;

/// `many.py HOST PORT N`: opens N connections at once, sends a line on each,
/// checks every echo, then closes them all.
const MANY_CONNECTIONS: &str = r#"
import resource, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
t = time.time()
socks = [socket.create_connection((host, port), timeout=20) for _ in range(n)]
for i, s in enumerate(socks):
    s.sendall(b'n%d\n' % i)
ok = 0
for i, s in enumerate(socks):
    data = b''
    while not data.endswith(b'\n'):
        chunk = s.recv(100)
        if not chunk:
            break
        data += chunk
    ok += data == b'reply: n%d\n' % i
print('open', len(socks), 'ok', ok, 'secs', round(time.time() - t, 1), flush=True)
for s in socks:
    s.close()
"#;

/// `flood.py HOST PORT N DIR`: tries N connections and holds those that
/// succeed; after DIR/go1 appears closes them and checks a new one works.
const FLOOD: &str = r#"
import os, socket, sys, time
host, port, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
held, refused = [], 0
for _ in range(n):
    try:
        held.append(socket.create_connection((host, port), timeout=5))
    except ConnectionRefusedError:
        refused += 1
print('held', len(held), 'refused', refused, flush=True)
deadline = time.time() + 30
while not os.path.exists(d + '/go1') and time.time() < deadline:
    time.sleep(0.05)
for s in held:
    s.close()
time.sleep(1)
s = socket.create_connection((host, port), timeout=5)
s.sendall(b'after\n')
print(s.recv(100).decode().strip(), flush=True)
"#;

#[test]
fn defaults_are_tap0_with_rootlesskit_addresses_and_dns_at_the_gateway() {
    let out = expect_success(&run_sh(
        &[NET, "--copy-up=/etc", "--disable-host-loopback"],
        "ip -o -4 addr show dev tap0; ip route; cat /sys/class/net/tap0/mtu; cat /etc/resolv.conf",
    ));
    assert!(out.contains("inet 10.0.2.100/24"), "{out}");
    assert!(out.contains("default via 10.0.2.1 dev tap0"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "65520"), "{out}");
    assert!(out.contains("nameserver 10.0.2.1"), "{out}");
}

#[test]
fn tcp_to_the_gateway_reaches_host_loopback_and_a_closed_port_is_refused_at_once() {
    let port = servers::tcp_echo("127.0.0.1");
    let closed = closed_tcp_port("127.0.0.1");
    let out = expect_success(&run_sh(
        &[NET],
        &format!(
            "echo hello | socat -t5 - TCP:10.0.2.1:{port}; \
             start=$(date +%s%N); \
             if echo x | socat -t5 - TCP:10.0.2.1:{closed} 2>/dev/null; then echo CONNECTED; fi; \
             echo refused_ms=$(( ($(date +%s%N) - start) / 1000000 ))"
        ),
    ));
    assert!(out.contains("reply: hello"), "{out}");
    assert!(!out.contains("CONNECTED"), "{out}");
    let ms: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("refused_ms="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms < 2000, "a refused connection took {ms} ms: {out}");
}

#[test]
fn udp_to_the_gateway_reaches_host_loopback_and_a_closed_port_says_refused() {
    let port = servers::udp_echo("127.0.0.1");
    let closed = closed_udp_port("127.0.0.1");
    let out = expect_success(&run_sh(
        &[NET],
        &format!(
            "echo ping1 | socat -t2 - UDP:10.0.2.1:{port}; \
             python3 {probe} 10.0.2.1 {closed}",
            probe = script("udp_probe.py", UDP_PROBE),
        ),
    ));
    assert!(out.contains("reply: ping1"), "{out}");
    assert!(out.contains("udp refused"), "{out}");
}

#[test]
fn disable_host_loopback_refuses_the_gateways_ports_fast() {
    let tport = servers::tcp_echo("127.0.0.1");
    let uport = servers::udp_echo("127.0.0.1");
    let started = Instant::now();
    let out = expect_success(&run_sh(
        &[NET, "--disable-host-loopback"],
        &format!(
            "if echo x | socat -t5 - TCP:10.0.2.1:{tport} 2>&1; then echo TCP_CONNECTED; else echo tcp refused; fi; \
             python3 {probe} 10.0.2.1 {uport}; \
             ping -c1 -W3 10.0.2.1 >/dev/null && echo gateway pings",
            probe = script("udp_probe.py", UDP_PROBE),
        ),
    ));
    assert!(out.contains("tcp refused"), "{out}");
    assert!(out.contains("Connection refused"), "{out}");
    assert!(out.contains("udp refused"), "{out}");
    assert!(out.contains("gateway pings"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(15), "{out}");
}

#[test]
fn ping_to_the_gateway_is_answered_with_and_without_host_loopback() {
    for args in [vec![NET], vec![NET, "--disable-host-loopback"]] {
        let out = expect_success(&run_sh(&args, "ping -c3 -i0.2 -W3 -s 1000 10.0.2.1"));
        assert!(out.contains("3 received"), "{args:?}: {out}");
        assert!(out.contains("1008 bytes from 10.0.2.1"), "{args:?}: {out}");
    }
}

#[test]
fn cidr_moves_the_address_gateway_and_dns() {
    let port = servers::tcp_echo("127.0.0.1");
    let out = expect_success(&run_sh(
        &[NET, "--copy-up=/etc", "--cidr=10.0.5.0/24"],
        &format!(
            "ip -o -4 addr show dev tap0; ip route; cat /etc/resolv.conf; \
             echo moved | socat -t5 - TCP:10.0.5.1:{port}"
        ),
    ));
    assert!(out.contains("inet 10.0.5.100/24"), "{out}");
    assert!(out.contains("default via 10.0.5.1"), "{out}");
    assert!(out.contains("nameserver 10.0.5.1"), "{out}");
    assert!(out.contains("reply: moved"), "{out}");
}

#[test]
fn bad_options_fail_with_the_fix_named_and_leave_nothing_behind() {
    let cases: [(&[&str], &str); 5] = [
        (&[NET, "--net-opt", "offload=maybe"], "give true or false"),
        (
            &[NET, "--net-opt", "pin-cpu=1"],
            "pin-cpu=\"1\": give true or false",
        ),
        (&[NET, "--mtu=300"], "between 576"),
        (&[NET, "--net-opt", "colour=blue"], "max-tcp-flows"),
        (
            &[NET, "--net-opt", "max-tcp-flows=0"],
            "between 1 and 65536",
        ),
    ];
    for (args, needle) in cases {
        let m = marker("gvbad");
        let mut all = args.to_vec();
        all.extend(["--", "sh", "-c", &m]);
        let out = rootlesskit(&all).output().unwrap();
        expect_failure(&out, needle);
        let left = wait_until_gone(&m, 5);
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Starts `rootlesskit ARGS -- sh -c SCRIPT`, whose script prints `ready`
/// first; returns once that line came, with the rest of its output to read.
fn start_sh(args: &[&str], script: &str) -> (Child, BufReader<ChildStdout>) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", script]);
    start_until_ready(&all)
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), b"").unwrap();
}

const WAIT_FOR: &str = "w() { n=0; while [ ! -e \"$D/$1\" ]; do sleep 0.05; n=$((n+1)); [ $n -gt 600 ] && exit 9; done; }";

#[test]
fn a_thousand_parallel_connections_all_succeed_and_descriptors_return() {
    let port = servers::tcp_echo("127.0.0.1");
    let dir = user_temp_dir("gv1000");
    let script = format!(
        "D={d}; {WAIT_FOR}; echo ready; w go1; \
         python3 {py} 10.0.2.1 {port} 1000; \
         echo closed; w go2; echo bye",
        d = dir.display(),
        py = script("many.py", MANY_CONNECTIONS),
    );
    let (mut child, mut out) = start_sh(&[NET], &script);
    let driver = child_named(child.id(), "rk-gvtap").expect("rk-gvtap is running");
    let baseline = fd_count(driver);
    let started = Instant::now();
    touch(&dir, "go1");
    let seen = wait_for_line(&mut out, "closed", 90);
    assert!(
        seen.contains("open 1000 ok 1000"),
        "{seen} (after {:?})",
        started.elapsed()
    );
    let back = eventually(20, || fd_count(driver) <= baseline);
    assert!(
        back,
        "rk-gvtap holds {} descriptors, {baseline} before",
        fd_count(driver)
    );
    touch(&dir, "go2");
    wait_for_line(&mut out, "bye", 20);
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connections_beyond_the_flow_limit_are_refused_and_descriptors_stay_bounded() {
    let port = servers::tcp_echo("127.0.0.1");
    let dir = user_temp_dir("gvflood");
    let script = format!(
        "D={d}; {WAIT_FOR}; echo ready; \
         python3 {py} 10.0.2.1 {port} 200 {d}; \
         echo done",
        d = dir.display(),
        py = script("flood.py", FLOOD),
    );
    let (mut child, mut out) = start_sh(&[NET, "--net-opt", "max-tcp-flows=50"], &script);
    let driver = child_named(child.id(), "rk-gvtap").expect("rk-gvtap is running");
    let baseline = fd_count(driver);
    let seen = wait_for_line(&mut out, "held", 60);
    assert!(seen.contains("held 50 refused 150"), "{seen}");
    let during = fd_count(driver);
    assert!(
        during <= baseline + 50,
        "{during} descriptors, {baseline} before, limit 50"
    );
    touch(&dir, "go1");
    let seen = wait_for_line(&mut out, "done", 30);
    assert!(seen.contains("reply: after"), "{seen}");
    assert!(child.wait().unwrap().success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("the limit"),
        "no log line about the limit: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killing_rootlesskit_takes_the_driver_with_it() {
    let m = marker("gvkill");
    // A state directory of the test's own (removed at exit): SIGKILL
    // leaves rootlesskit no chance to remove one it made.
    let state = format!("--state-dir={}/sd", user_temp_dir("gvkill").display());
    let (mut child, _out) = start_sh(&[NET, &state], &format!("echo ready; sleep 100 # {m}"));
    let driver = child_named(child.id(), "rk-gvtap").expect("rk-gvtap is running");
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = eventually(5, || !Path::new(&format!("/proc/{driver}")).exists());
    assert!(gone, "rk-gvtap {driver} survived its rootlesskit");
    let left = wait_until_gone(&m, 5);
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_network_thread_runs_under_seccomp_with_no_new_privs() {
    let (mut child, _out) = start_sh(&[NET], "echo ready; sleep 100");
    let status = std::fs::read_to_string(net_thread_status(child.id())).unwrap();
    terminate(&mut child);
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
}

/// The CPUs a thread may run on, as /proc shows them ("0-3", "1").
fn cpus_allowed(status_path: &str) -> String {
    std::fs::read_to_string(status_path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The status file of rk-gvtap's network thread under rootlesskit `pid`.
fn net_thread_status(pid: u32) -> String {
    let driver = child_named(pid, "rk-gvtap").expect("rk-gvtap is running");
    for task in std::fs::read_dir(format!("/proc/{driver}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "rk-gvtap-net" {
            return task.path().join("status").to_string_lossy().into_owned();
        }
    }
    panic!("no rk-gvtap-net thread in rk-gvtap {driver}");
}

#[test]
fn the_network_thread_keeps_to_one_cpu_during_a_bulk_upload_and_lets_go_after() {
    let ours = cpus_allowed("/proc/self/status");
    let several = ours.contains('-') || ours.contains(',');
    for opts in [vec![NET], vec![NET, "--net-opt", "pin-cpu=false"]] {
        let sink = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = sink.local_addr().unwrap().port();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = sink.accept().unwrap();
            std::io::copy(&mut s, &mut std::io::sink()).unwrap()
        });
        let script = format!(
            "echo ready; sleep 0.3; timeout 3 socat -u /dev/zero TCP:10.0.2.1:{port}; echo sent; sleep 100"
        );
        let (mut child, mut out) = start_sh(&opts, &script);
        let status = net_thread_status(child.id());
        // What the thread may use while the upload runs (sampled).
        let mut seen = std::collections::BTreeSet::new();
        let until = Instant::now() + Duration::from_millis(3200);
        while Instant::now() < until {
            seen.insert(cpus_allowed(&status));
            std::thread::sleep(Duration::from_millis(10));
        }
        wait_for_line(&mut out, "sent", 20);
        let moved = reader.join().unwrap();
        assert!(moved > 0, "{opts:?}: the upload moved nothing");
        let single = |l: &String| !l.is_empty() && !l.contains('-') && !l.contains(',');
        if several && opts.len() == 1 {
            assert!(
                seen.iter().any(single),
                "never pinned during the upload ({moved} bytes): {seen:?}"
            );
            // Idle again: all the CPUs come back.
            let back = eventually(5, || cpus_allowed(&status) == ours);
            assert!(back, "still {} after the upload", cpus_allowed(&status));
        } else {
            // Turned off, or a single CPU to run on: the mask never changes.
            assert!(
                seen.iter().all(|l| *l == ours),
                "{opts:?}: {seen:?} (ours {ours})"
            );
        }
        terminate(&mut child);
    }
}

/// A server process, killed with its process group when dropped (a failing
/// test must not leave it listening).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling the process group this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// A host TCP server that sends `len` bytes of /dev/urandom to the first
/// connection and writes their sha256 to `sum_file`. Returns (port, server).
fn random_data_server(len: u64, sum_file: &Path) -> (u16, Server) {
    let port = closed_tcp_port("127.0.0.1");
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "head -c {len} /dev/urandom | tee >(sha256sum | cut -d' ' -f1 > {sum}) \
             | socat -u - TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
            sum = sum_file.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let child = Server(child);
    let listening = eventually(10, || {
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .contains(&format!("0100007F:{port:04X} 00000000:0000 0A"))
    });
    assert!(listening, "the data server did not listen on {port}");
    (port, child)
}

/// `secs` bounds a stalled transfer (it fails instead of hanging); speed
/// itself is measured in bench/, not asserted here.
fn transfer_checks_out(args: &[&str], len: u64, secs: u64) {
    let dir = user_temp_dir("gvbig");
    let sum_file = dir.join("sent.sum");
    let (port, mut server) = random_data_server(len, &sum_file);
    let started = Instant::now();
    let mut all: Vec<&str> = args.to_vec();
    let script = format!("socat -u TCP:10.0.2.1:{port} - | sha256sum | cut -d' ' -f1");
    all.extend(["--", "sh", "-c", &script]);
    // A stalled transfer fails the test (and the server goes with it)
    // instead of hanging the suite.
    let out = expect_success(&output_within(rootlesskit(&all), Duration::from_secs(secs)));
    server.0.wait().unwrap();
    let sent = eventually(10, || {
        std::fs::read_to_string(&sum_file).is_ok_and(|s| s.trim().len() == 64)
    });
    assert!(sent);
    let want = std::fs::read_to_string(&sum_file).unwrap();
    assert_eq!(
        out.trim(),
        want.trim(),
        "sha256 differs after {len} bytes ({:?})",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_gib_from_the_host_arrive_intact() {
    transfer_checks_out(&[NET], 2 << 30, 600);
}

#[test]
fn mtu_1500_is_set_and_carries_a_transfer() {
    let out = expect_success(&run_sh(&[NET, "--mtu=1500"], "cat /sys/class/net/tap0/mtu"));
    assert_eq!(out.trim(), "1500");
    transfer_checks_out(&[NET, "--mtu=1500"], 256 << 20, 300);
}

#[test]
fn detach_netns_puts_the_network_in_the_state_dirs_netns() {
    let port = servers::tcp_echo("127.0.0.1");
    let out = expect_success(&run_sh(
        &[NET, "--detach-netns"],
        &format!(
            "nsenter --net=$ROOTLESSKIT_STATE_DIR/netns sh -c \
             'ip -o -4 addr show dev tap0; echo detached | socat -t5 - TCP:10.0.2.1:{port}'"
        ),
    ));
    assert!(out.contains("inet 10.0.2.100/24"), "{out}");
    assert!(out.contains("reply: detached"), "{out}");
}

/// dnsmasq as root on `addr`:53 answering NAME.gvtap.test with `answer`.
fn dnsmasq(addr: &str, answer: &str) -> Server {
    let child = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            &format!("--listen-address={addr}"),
            &format!("--address=/gvtap.test/{answer}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("dnsmasq (install dnsmasq-base)");
    let server = Server(child);
    let hex = addr
        .split('.')
        .rev()
        .map(|o| format!("{:02X}", o.parse::<u8>().unwrap()))
        .collect::<String>();
    let up = eventually(10, || {
        std::fs::read_to_string("/proc/net/udp")
            .unwrap_or_default()
            .contains(&format!("{hex}:0035"))
    });
    assert!(up, "dnsmasq did not listen on {addr}:53");
    server
}

/// `dns_tcp.py SERVER NAME`: one A query over TCP; prints the address.
const DNS_TCP: &str = r#"
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0)
q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0'
q += struct.pack('>HH', 1, 1)
s = socket.create_connection((server, 53), timeout=5)
s.sendall(struct.pack('>H', len(q)) + q)
n = struct.unpack('>H', s.recv(2))[0]
a = b''
while len(a) < n:
    a += s.recv(n - len(a))
print('tcp answer', socket.inet_ntoa(a[-4:]))
"#;

/// Runs `rootlesskit ARGS -- sh -c SCRIPT` with the host's /etc/resolv.conf
/// replaced (in a private mount namespace) by `resolv`.
fn run_with_resolv(resolv: &Path, args: &[&str], script: &str) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", script]);
    let cmd = rootlesskit(&all);
    in_root_mount_ns(
        "private",
        &format!("mount --bind {} /etc/resolv.conf", resolv.display()),
        &cmd,
    )
    .output()
    .unwrap()
}

#[test]
fn dns_at_the_gateway_falls_back_to_the_next_nameserver_over_udp_and_tcp() {
    let _live = dnsmasq("127.0.71.2", "10.9.8.7");
    let dir = user_temp_dir("gvdns");
    let resolv = dir.join("resolv.conf");
    // 127.0.71.1 has no server: refused at once, the forwarder moves on.
    std::fs::write(&resolv, "nameserver 127.0.71.1\nnameserver 127.0.71.2\n").unwrap();
    let out = run_with_resolv(
        &resolv,
        &[NET, "--copy-up=/etc", "--disable-host-loopback"],
        &format!(
            "cat /etc/resolv.conf; getent hosts one.gvtap.test; getent hosts two.gvtap.test; \
             python3 {py} 10.0.2.1 three.gvtap.test",
            py = script("dns_tcp.py", DNS_TCP)
        ),
    );
    let out = expect_success(&out);
    assert!(out.contains("nameserver 10.0.2.1"), "{out}");
    assert!(out.contains("10.9.8.7        one.gvtap.test"), "{out}");
    assert!(out.contains("10.9.8.7        two.gvtap.test"), "{out}");
    assert!(out.contains("tcp answer 10.9.8.7"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dns_forwarder_rereads_resolv_conf_when_it_changes() {
    let _first = dnsmasq("127.0.71.3", "10.9.8.7");
    let _second = dnsmasq("127.0.71.4", "10.9.8.8");
    let dir = user_temp_dir("gvdns2");
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.71.3\n").unwrap();
    let script = format!(
        "D={d}; {WAIT_FOR}; getent hosts a.gvtap.test; touch $D/asked; w changed; \
         getent hosts b.gvtap.test",
        d = dir.display()
    );
    let mut all: Vec<&str> = vec![NET];
    all.extend(["--", "sh", "-c", &script]);
    let mut child = in_root_mount_ns(
        "private",
        &format!("mount --bind {} /etc/resolv.conf", resolv.display()),
        &rootlesskit(&all),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(eventually(20, || dir.join("asked").exists()));
    // Rewritten in place: the bind mount shows the same inode, new content.
    std::fs::write(&resolv, "nameserver 127.0.71.4\n").unwrap();
    touch(&dir, "changed");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{out}");
    assert!(out.contains("10.9.8.7        a.gvtap.test"), "{out}");
    assert!(out.contains("10.9.8.8        b.gvtap.test"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `resets.py HOST PORT`: resets one connection itself, then waits for the
/// host to reset a second one.
const RESETS: &str = r#"
import socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])
a = socket.create_connection((host, port), timeout=5)
a.sendall(b'x')
time.sleep(0.3)
a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
a.close()
# The host resets as soon as it accepts: the reset may even beat connect()
# back to this process. Either way it must be a reset, not a refusal.
try:
    b = socket.create_connection((host, port), timeout=5)
    print('guest read', b.recv(10), flush=True)
except ConnectionResetError:
    print('guest saw reset', flush=True)
"#;

#[test]
fn resets_cross_the_nat_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host_side = std::thread::spawn(move || {
        let (mut a, _) = listener.accept().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        let first = a.read(&mut buf).unwrap();
        let second = match a.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset".to_string(),
            other => format!("{other:?}"),
        };
        let (b, _) = listener.accept().unwrap();
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setting SO_LINGER on a socket we own, with a linger struct.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&b),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        drop(b);
        (first, second)
    });
    let out = expect_success(&run_sh(
        &[NET],
        &format!(
            "python3 {py} 10.0.2.1 {port}",
            py = script("resets.py", RESETS)
        ),
    ));
    let (first, second) = host_side.join().unwrap();
    assert_eq!(first, 1);
    assert_eq!(second, "reset", "the guest's reset did not reach the host");
    assert!(out.contains("guest saw reset"), "{out}");
}

/// `reuse.py HOST PORT N`: N times, resets a connection and at once opens a
/// new one from the same source port (no TIME-WAIT after a reset).
const REUSE: &str = r#"
import socket, struct, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for i in range(n):
    a = socket.create_connection((host, port), timeout=5)
    src = a.getsockname()[1]
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    a.close()
    b = socket.socket()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    b.settimeout(5)
    b.bind(('', src))
    b.connect((host, port))
    b.sendall(b'again%d\n' % i)
    ok += b.recv(100) == b'reply: again%d\n' % i
    b.close()
print('reused ok', ok, flush=True)
"#;

#[test]
fn a_source_port_reused_right_after_a_reset_connects_again() {
    let port = servers::tcp_echo("127.0.0.1");
    let out = expect_success(&run_sh(
        &[NET],
        &format!(
            "python3 {py} 10.0.2.1 {port} 20",
            py = script("reuse.py", REUSE)
        ),
    ));
    assert!(out.contains("reused ok 20"), "{out}");
}

#[test]
fn port_driver_forwards_host_tcp_into_the_guest_and_resets_when_nothing_listens() {
    let open = closed_tcp_port("127.0.0.1");
    let dead = closed_tcp_port("127.0.0.1");
    let (mut child, _out) = start_sh(
        &[
            NET,
            // Its own pid namespace: killing rootlesskit ends the servers inside.
            "--pidns",
            "--disable-host-loopback",
            "--port-driver=gvisor-tap-vsock",
            &format!("--publish=127.0.0.1:{open}:80/tcp"),
            &format!("--publish=127.0.0.1:{dead}:81/tcp"),
        ],
        "socat TCP-LISTEN:80,reuseaddr,fork,backlog=64 SYSTEM:'read l; echo inside=$l' & echo ready; sleep 60",
    );
    let mut answer = String::new();
    let served = eventually(10, || {
        answer = host_roundtrip(("127.0.0.1", open), "hi\n").unwrap_or_default();
        answer.contains("inside=hi")
    });
    assert!(served, "no answer through the forwarded port: {answer:?}");
    // Many at once, to check the stack's ports for connections in.
    let handles: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || host_roundtrip(("127.0.0.1", open), &format!("n{i}\n")))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let got = h.join().unwrap().unwrap();
        assert_eq!(got.trim(), format!("inside=n{i}"));
    }
    // Nothing listens on 81 inside: the host side is reset, at once.
    let started = Instant::now();
    let dead_result = host_roundtrip(("127.0.0.1", dead), "x\n");
    assert!(
        matches!(&dead_result, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            || matches!(&dead_result, Ok(s) if s.is_empty()),
        "{dead_result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    terminate(&mut child);
}

/// Root's half of the contained run (see [`contained`]): `contained.sh PORT
/// LOGDIR SERVER_PY PROBE_DIR PROBE_PY CMD...` (`-` for no probe). Runs in a network namespace of its own, made by
/// `unshare -n`: `lo`, and `rksink0`, an ifb device that is connected to
/// nothing, with the default route. A packet the host side routes out is
/// swallowed there and counted, so a driver that wrongly connects to
/// 0.1.2.3 is caught without anything leaving the machine. It refuses to go
/// on unless exactly those two links exist.
const CONTAINED_SH: &str = r#"
set -eu
port=$1 logdir=$2 server=$3 probe_dir=$4 probe=$5; shift 5
ip link set lo up
sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1
ip link add rksink0 type ifb
ip addr add 198.51.100.1/24 dev rksink0
ip link set rksink0 up
ip route add default dev rksink0
# Stands in for a cloud's metadata service: a local address here.
ip addr add 169.254.169.254/32 dev lo
links=$(ip -o link | cut -d: -f2 | tr -d ' ' | sort | tr '\n' ' ')
[ "$links" = "lo rksink0 " ] || { echo "not contained: links $links"; exit 97; }
python3 "$server" "$port" "$logdir/served" & srv=$!
n=0; while ! grep -q ":$(printf %04X "$port") 00000000:0000 0A" /proc/net/tcp; do
  sleep 0.05; n=$((n+1)); [ $n -gt 200 ] && { echo "server did not start"; exit 98; }
done
set +e
if [ "$probe" = - ]; then
  "$@"; rc=$?
else
  # Root's side of the run: once the child has touched $probe_dir/go,
  # $probe runs here (a client of the published ports), then "done".
  "$@" & rk=$!
  n=0; while [ ! -e "$probe_dir/go" ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done
  python3 "$probe"; touch "$probe_dir/done"
  wait $rk; rc=$?
fi
kill $srv
# rx and tx packets of the sink (an ifb counts what it swallows as rx).
awk '/rksink0:/ { print "sink_packets=" $3 + $11 }' /proc/net/dev
exit $rc
"#;

/// `server.py PORT LOG`: TCP and UDP on 0.0.0.0:PORT of the contained
/// namespace (so 127.x, 0.0.0.0 and the sink's address all reach it);
/// answers `reply: LINE` and logs each peer to LOG (`tcp PEER -> LOCAL`,
/// `udp PEER`).
const COUNTING_SERVER: &str = r#"
import socket, sys, threading
port, log = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
def note(what):
    with lock, open(log, 'a') as f:
        f.write(what + '\n')
def tcp():
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(('0.0.0.0', port)); l.listen(64)
    while True:
        c, peer = l.accept()
        note('tcp %s -> %s' % (peer[0], c.getsockname()[0]))
        c.settimeout(5)
        try:
            c.sendall(b'reply: ' + c.recv(100))
        except OSError:
            pass
        c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('0.0.0.0', port))
    while True:
        data, peer = u.recvfrom(2048)
        note('udp %s' % peer[0])
        u.sendto(b'reply: ' + data, peer)
threading.Thread(target=udp, daemon=True).start()
tcp()
"#;

/// `forbidden.py PORT`, inside the child: first the kernel's own sockets
/// (TCP and UDP to 0.1.2.3, UDP to 224.0.0.1 and 255.255.255.255, the
/// gateway as control), then hand-made frames on tap0 that the guest's
/// kernel would never send: TCP SYN, UDP and ICMP echo from 10.0.2.100 to
/// the host's loopback, 0.0.0.0/8, 240.0.0.0/4, broadcast and multicast.
/// Prints one line per probe and the ICMP errors that came back.
const FORBIDDEN: &str = r#"
import errno, os, socket, struct, sys, time
PORT = int(sys.argv[1])
def err(e):
    return errno.errorcode.get(e.errno, str(e)) if e.errno else 'timeout'
def tcp(addr):
    s = socket.socket(); s.settimeout(5); t = time.time()
    try:
        s.connect((addr, PORT)); s.sendall(b'k\n'); r = 'connected ' + s.recv(100).decode().strip()
    except OSError as e:
        r = err(e)
    print('tcp %s %s %dms' % (addr, r, (time.time() - t) * 1000), flush=True)
def udp(addr, broadcast=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    if broadcast:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    try:
        s.connect((addr, PORT)); s.send(b'u\n'); s.send(b'u\n'); r = 'answered ' + s.recv(100).decode().strip()
    except OSError as e:
        r = err(e)
    print('udp %s %s' % (addr, r), flush=True)
tcp('10.0.2.1'); udp('10.0.2.1')
tcp('0.1.2.3'); udp('0.1.2.3'); udp('224.0.0.1'); udp('255.255.255.255', True)

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ip4(src, dst, proto, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 7, 0, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + payload
def l4(src, dst, proto, seg, at):
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, proto, len(seg))
    c = csum(pseudo + seg)
    return seg[:at] + struct.pack('!H', c) + seg[at + 2:]
SRC = '10.0.2.100'
def syn(dst, sport):
    seg = struct.pack('!HHIIBBHHH', sport, PORT, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    return ip4(SRC, dst, 6, l4(SRC, dst, 6, seg, 16))
def dgram(dst, sport):
    seg = struct.pack('!HHHH', sport, PORT, 10, 0) + b'r\n'
    return ip4(SRC, dst, 17, l4(SRC, dst, 17, seg, 6))
def echo(dst, ident):
    m = struct.pack('!BBHHH', 8, 0, 0, ident, 1) + b'ping'
    m = m[:2] + struct.pack('!H', csum(m)) + m[4:]
    return ip4(SRC, dst, 1, m)

gw = None
for line in open('/proc/net/arp').read().splitlines()[1:]:
    f = line.split()
    if f[0] == '10.0.2.1' and f[3] != '00:00:00:00:00:00':
        gw = bytes.fromhex(f[3].replace(':', ''))
me = bytes.fromhex(open('/sys/class/net/tap0/address').read().strip().replace(':', ''))
assert gw, 'no ARP entry for the gateway'
martians = ['127.0.0.1', '127.1.2.3', '0.0.0.0', '0.1.2.3', '240.0.0.1']
groups = ['255.255.255.255', '10.0.2.255', '224.0.0.1']
p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
p.bind(('tap0', 0))
n = 0
for dst in martians + groups:
    mac = b'\xff' * 6 if dst in ('255.255.255.255', '10.0.2.255') else gw
    if dst == '224.0.0.1':
        mac = bytes.fromhex('01005e000001')
    for frame in (syn(dst, 41000 + n), dgram(dst, 42000 + n), echo(dst, 43000 + n)):
        p.send(mac + me + b'\x08\x00' + frame)
    n += 1
print('raw frames sent', 3 * n, flush=True)
prohibited = set()
other = []
p.settimeout(0.2)
deadline = time.time() + 2
while time.time() < deadline:
    try:
        f = p.recv(65535)
    except socket.timeout:
        continue
    ip = f[14:]
    if ip[9] != 1 and ip[9] != 6:
        continue
    src = socket.inet_ntoa(ip[12:16]); dst = socket.inet_ntoa(ip[16:20])
    if dst != SRC or src == SRC:
        continue
    body = ip[(ip[0] & 15) * 4:]
    if ip[9] == 1 and body[0] == 3:
        inner = body[8:]
        proto = {1: 'icmp', 6: 'tcp', 17: 'udp'}.get(inner[9], '?')
        what = '%s %s code %d' % (proto, socket.inet_ntoa(inner[16:20]), body[1])
        prohibited.add(what) if body[1] == 13 else other.append(what)
    elif ip[9] == 6 and body[13] & 0x12 == 0x12:
        other.append('syn-ack from %s' % src)
    elif ip[9] == 1 and body[0] == 0:
        other.append('echo reply from %s' % src)
for w in sorted(prohibited):
    print('prohibited', w)
for w in other:
    print('OTHER', w)
"#;

/// Runs `rootlesskit ARGS -- sh -c SCRIPT` as the test user inside a
/// network namespace that root makes for this run alone and that has no way
/// out (see [`CONTAINED_SH`]): even a broken driver's host sockets reach
/// only the counting server on its loopback or the sink. Returns the
/// output and the server's log of peers.
fn contained(
    args: &[&str],
    child_script: &str,
    port: u16,
    probe: Option<(&Path, &str)>,
) -> (std::process::Output, String) {
    assert!(
        is_root(),
        "this test makes a network namespace as root: run the tests as root"
    );
    let dir = user_temp_dir("gvcontained");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", child_script]);
    let cmd = rootlesskit(&all);
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", CONTAINED_SH, "contained.sh"])
        .arg(port.to_string())
        .arg(&dir)
        .arg(script("server.py", COUNTING_SERVER))
        .arg(probe.map_or("-".into(), |p| p.0.display().to_string()))
        .arg(probe.map_or("-", |p| p.1))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let served = std::fs::read_to_string(dir.join("served")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (out, served)
}

#[test]
fn forbidden_destinations_are_never_connected_while_the_gateway_still_works() {
    // Contained: a namespace of its own with only lo and a sink (see
    // `contained`); nothing here can reach the machine's real network.
    let port = 18080;
    let (out, served) = contained(
        &[NET],
        &format!("python3 {} {port}", script("forbidden.py", FORBIDDEN)),
        port,
        None,
    );
    let text = expect_success(&out);
    // The gateway still maps to the host's 127.0.0.1, for TCP and UDP.
    assert!(text.contains("tcp 10.0.2.1 connected reply: k"), "{text}");
    assert!(text.contains("udp 10.0.2.1 answered reply: u"), "{text}");
    // 0.1.2.3 fails at once ("No route to host"), over TCP and UDP.
    let line = text.lines().find(|l| l.starts_with("tcp 0.1.2.3")).unwrap();
    assert!(line.contains("EHOSTUNREACH"), "{text}");
    let ms: u64 = line
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches("ms")
        .parse()
        .unwrap();
    assert!(ms < 1000, "refusing 0.1.2.3 took {ms} ms");
    assert!(text.contains("udp 0.1.2.3 EHOSTUNREACH"), "{text}");
    // Broadcast and multicast: dropped, no answer.
    assert!(text.contains("udp 224.0.0.1 timeout"), "{text}");
    assert!(text.contains("udp 255.255.255.255 timeout"), "{text}");
    // Hand-made frames: every martian is answered "prohibited" for each
    // protocol, broadcast and multicast get nothing, nothing connects.
    assert!(text.contains("raw frames sent 24"), "{text}");
    for dst in ["127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "240.0.0.1"] {
        for proto in ["tcp", "udp", "icmp"] {
            let want = format!("prohibited {proto} {dst} code 13");
            assert!(text.contains(&want), "no {want:?}: {text}");
        }
    }
    for dst in ["255.255.255.255", "10.0.2.255", "224.0.0.1"] {
        assert!(!text.contains(&format!(" {dst} code")), "{text}");
    }
    assert!(!text.contains("OTHER"), "{text}");
    // The host side saw exactly the two gateway connections, from its
    // loopback, and routed nothing towards the outside.
    assert_eq!(
        served.lines().filter(|l| l.starts_with("tcp")).count(),
        1,
        "{served}"
    );
    assert!(
        served.lines().all(|l| l.ends_with(" 127.0.0.1")),
        "{served}"
    );
    assert!(served.contains("udp 127.0.0.1"), "{served}");
    assert_eq!(field(&text, "sink_packets"), "0", "{text}");
}

#[test]
fn disable_host_loopback_keeps_every_frame_off_the_hosts_loopback() {
    // Contained as above.
    let port = 18081;
    let (out, served) = contained(
        &[NET, "--disable-host-loopback"],
        &format!("python3 {} {port}", script("forbidden.py", FORBIDDEN)),
        port,
        None,
    );
    let text = expect_success(&out);
    assert!(text.contains("tcp 10.0.2.1 ECONNREFUSED"), "{text}");
    assert!(text.contains("udp 10.0.2.1 ECONNREFUSED"), "{text}");
    assert!(text.contains("prohibited tcp 127.0.0.1 code 13"), "{text}");
    assert!(!text.contains("OTHER"), "{text}");
    assert!(
        served.is_empty(),
        "the host's loopback was reached: {served}"
    );
    assert_eq!(field(&text, "sink_packets"), "0", "{text}");
}

/// `peer_server.py PORT`, inside the child: TCP and UDP on 0.0.0.0:PORT,
/// answering `inside=DATA from=CLIENT_IP` (UDP: to every datagram).
const PEER_SERVER: &str = r#"
import socket, sys, threading
port = int(sys.argv[1])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(('0.0.0.0', port))
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('0.0.0.0', port)); l.listen(64)
def udp():
    while True:
        data, peer = u.recvfrom(65535)
        if data.startswith(b'big'):
            u.sendto(b'inside=big%d from=%s\n' % (len(data), peer[0].encode()), peer)
        else:
            u.sendto(b'inside=%s from=%s\n' % (data.strip(), peer[0].encode()), peer)
def tcp():
    while True:
        c, peer = l.accept()
        c.settimeout(5)
        try:
            c.sendall(b'inside=%s from=%s\n' % (c.recv(100).strip(), peer[0].encode()))
        except OSError:
            pass
        c.close()
threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
print('ready', flush=True)
threading.Event().wait(60)
"#;

/// Sends `msg` from a fresh socket bound to `from` to `to` until an answer
/// comes (a few tries: the first datagram may beat the port's set-up).
fn udp_roundtrip(from: &str, to: &str, msg: &[u8]) -> Option<String> {
    let s = UdpSocket::bind(from).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = vec![0u8; 70000];
    for _ in 0..5 {
        s.send_to(msg, to).unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    None
}

#[test]
fn port_driver_forwards_udp_both_ways_with_builtins_protocols() {
    let udp = closed_udp_port("127.0.0.1");
    let udp4 = closed_udp_port("127.0.0.1");
    let udp6 = UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp6 = TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut child, _out) = start_sh(
        &[
            NET,
            // Its own pid namespace: killing rootlesskit ends the servers inside.
            "--pidns",
            "--disable-host-loopback",
            "--port-driver=gvisor-tap-vsock",
            &format!("--publish=127.0.0.1:{udp}:5300/udp"),
            &format!("--publish=127.0.0.1:{udp4}:5300/udp4"),
            &format!("--publish=[::1]:{udp6}:5300/udp6"),
            &format!("--publish=[::1]:{tcp6}:5300/tcp6"),
        ],
        &format!("python3 {} 5300", script("peer_server.py", PEER_SERVER)),
    );
    // A client on the host's loopback appears as the gateway, which is the
    // host's loopback inside.
    let got = udp_roundtrip("127.0.0.1:0", &format!("127.0.0.1:{udp}"), b"one\n");
    assert_eq!(got.as_deref(), Some("inside=one from=10.0.2.1"));
    let got = udp_roundtrip("127.0.0.1:0", &format!("127.0.0.1:{udp4}"), b"four\n");
    assert_eq!(got.as_deref(), Some("inside=four from=10.0.2.1"));
    let got = udp_roundtrip("[::1]:0", &format!("[::1]:{udp6}"), b"six\n");
    assert_eq!(got.as_deref(), Some("inside=six from=10.0.2.1"));
    // A datagram far over the MTU of a frame is fragmented and reassembled.
    let big = [b"big".as_slice(), &[b'x'; 30000]].concat();
    let got = udp_roundtrip("127.0.0.1:0", &format!("127.0.0.1:{udp}"), &big);
    assert_eq!(got.as_deref(), Some("inside=big30003 from=10.0.2.1"));
    // Many clients at once each get their own answers.
    let handles: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                udp_roundtrip(
                    "127.0.0.1:0",
                    &format!("127.0.0.1:{udp}"),
                    format!("c{i}\n").as_bytes(),
                )
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(
            h.join().unwrap(),
            Some(format!("inside=c{i} from=10.0.2.1"))
        );
    }
    // A burst from one client: the stack's queue is never overrun (the
    // rest waits in the host socket's buffer).
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for i in 0..200 {
        s.send_to(format!("b{i}\n").as_bytes(), ("127.0.0.1", udp))
            .unwrap();
    }
    let mut answers = 0;
    let mut buf = [0u8; 100];
    while s.recv(&mut buf).is_ok() {
        answers += 1;
        if answers == 200 {
            break;
        }
    }
    assert!(answers >= 190, "{answers} of 200 datagrams answered");
    // tcp6: the host listens on IPv6 only, the guest is IPv4.
    let mut s = std::net::TcpStream::connect(("::1", tcp6)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, b"over6\n").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got.trim(), "inside=over6 from=10.0.2.1");
    terminate(&mut child);
}

#[test]
fn port_driver_udp_port_can_be_removed_and_published_again() {
    let port = closed_udp_port("127.0.0.1");
    let dir = user_temp_dir("gvudpctl");
    let ctl = bin_dir().join("rootlessctl");
    let (mut child, _out) = start_sh(
        &[
            NET,
            // Its own pid namespace: killing rootlesskit ends the servers inside.
            "--pidns",
            "--port-driver=gvisor-tap-vsock",
            &format!("--state-dir={}/state", dir.display()),
        ],
        &format!("python3 {} 5300", script("peer_server.py", PEER_SERVER)),
    );
    let sock = format!("--socket={}/state/api.sock", dir.display());
    let spec = format!("127.0.0.1:{port}:5300/udp");
    for round in 0..3 {
        let add = as_test_user(ctl.to_str().unwrap())
            .args([sock.as_str(), "add-ports", spec.as_str()])
            .output()
            .unwrap();
        assert!(add.status.success(), "{}", stderr(&add));
        let id = stdout(&add).trim().to_string();
        let got = udp_roundtrip("127.0.0.1:0", &format!("127.0.0.1:{port}"), b"r\n");
        assert_eq!(
            got.as_deref(),
            Some("inside=r from=10.0.2.1"),
            "round {round}"
        );
        let rm = as_test_user(ctl.to_str().unwrap())
            .args([sock.as_str(), "remove-ports", id.as_str()])
            .output()
            .unwrap();
        assert!(rm.status.success(), "{}", stderr(&rm));
        // The port is free again on the host.
        assert!(
            eventually(5, || UdpSocket::bind(("127.0.0.1", port)).is_ok()),
            "round {round}: the host port stayed bound"
        );
    }
    terminate(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn port_driver_shows_the_real_client_address_inside() {
    // Contained (see `contained`): the clients are in the namespace made for
    // this run; 198.51.100.1 is the sink's address there, a local address,
    // so nothing goes anywhere else. The rootlesskit child publishes TCP
    // and UDP on all addresses; root's side connects once from the sink's
    // address and once from 127.0.0.1.
    let port = 18082;
    let dir = user_temp_dir("gvclient");
    let probe = format!(
        "import socket, time\n\
         for src in ('198.51.100.1', '127.0.0.1'):\n\
         \x20   for _ in range(50):\n\
         \x20       try:\n\
         \x20           c = socket.create_connection(('{dst}', {port}), timeout=5, source_address=(src, 0)); break\n\
         \x20       except OSError:\n\
         \x20           time.sleep(0.1)\n\
         \x20   c.sendall(b't\\n'); print('tcp', src, c.recv(100).decode().strip(), flush=True)\n\
         \x20   u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((src, 0)); u.settimeout(1)\n\
         \x20   for _ in range(5):\n\
         \x20       u.sendto(b'u\\n', ('{dst}', {port}))\n\
         \x20       try:\n\
         \x20           print('udp', src, u.recv(100).decode().strip(), flush=True); break\n\
         \x20       except socket.timeout:\n\
         \x20           pass\n",
        dst = "198.51.100.1",
    );
    let probe_path = script("client_probe.py", &probe);
    let (out, _) = contained(
        &[
            NET,
            "--port-driver=gvisor-tap-vsock",
            &format!("--publish=0.0.0.0:{port}:5300/tcp4"),
            &format!("--publish=0.0.0.0:{port}:5300/udp4"),
        ],
        &format!(
            "python3 {srv} 5300 > {d}/srv.out 2>&1 & srv=$!; \
             n=0; while ! grep -q ready {d}/srv.out 2>/dev/null; do sleep 0.05; n=$((n+1)); [ $n -gt 200 ] && exit 9; done; \
             touch {d}/go; n=0; while [ ! -e {d}/done ] && [ $n -lt 300 ]; do sleep 0.05; n=$((n+1)); done; \
             kill $srv",
            srv = script("peer_server.py", PEER_SERVER),
            d = dir.display()
        ),
        // The counting server is not used here; its port must differ.
        port + 1,
        Some((&dir, &probe_path)),
    );
    let text = expect_success(&out);
    assert!(
        text.contains("tcp 198.51.100.1 inside=t from=198.51.100.1"),
        "{text}"
    );
    assert!(
        text.contains("udp 198.51.100.1 inside=u from=198.51.100.1"),
        "{text}"
    );
    assert!(
        text.contains("tcp 127.0.0.1 inside=t from=10.0.2.1"),
        "{text}"
    );
    assert!(
        text.contains("udp 127.0.0.1 inside=u from=10.0.2.1"),
        "{text}"
    );
    assert_eq!(field(&text, "sink_packets"), "0", "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metadata_address_169_254_169_254_is_reached_as_upstream_reaches_it() {
    // Contained (see `contained`): 169.254.169.254 is an address on the lo
    // of the namespace made for this run, where the counting server
    // listens. As in RootlessKit v3.0.1 (gvisor-tap-vsock's
    // Ec2MetadataAccess), the NAT opens a host socket to the same address,
    // for TCP and UDP, with and without --disable-host-loopback.
    for (port, extra) in [(18083, None), (18084, Some("--disable-host-loopback"))] {
        let mut args = vec![NET];
        args.extend(extra);
        let (out, served) = contained(
            &args,
            &format!(
                "echo m | socat -t5 - TCP:169.254.169.254:{port}; \
                 python3 {probe} 169.254.169.254 {port}",
                probe = script("udp_probe.py", UDP_PROBE),
            ),
            port,
            None,
        );
        let text = expect_success(&out);
        assert!(text.contains("reply: m"), "{extra:?}: {text}");
        assert!(text.contains("UDP ANSWERED"), "{extra:?}: {text}");
        assert!(
            served.contains("tcp 169.254.169.254 -> 169.254.169.254"),
            "{extra:?}: {served}"
        );
        assert!(
            served.contains("udp 169.254.169.254"),
            "{extra:?}: {served}"
        );
        assert_eq!(field(&text, "sink_packets"), "0", "{text}");
    }
}

/// `flood.py KIND N TCP_PORT`, inside the child: N hand-made frames on tap0
/// of one kind, as fast as Python sends them: `syn` (SYNs from new source
/// ports to 10.0.2.1:TCP_PORT, closed on the host), `udp` (datagrams from
/// and to new ports of 10.0.2.1, all closed on the host: a new flow each),
/// `ping` (echo requests to 10.0.2.1 with new identifiers), `frag` (first
/// fragments of UDP datagrams to new ports, never completed). Bounded by N.
const FLOOD_FRAMES: &str = r#"
import socket, struct, sys
kind, n, tport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SRC, GW = '10.0.2.100', '10.0.2.1'
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ip4(proto, payload, ident=7, frag=0, total=None):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), ident & 0xffff, frag, 64, proto, 0,
                    socket.inet_aton(SRC), socket.inet_aton(GW))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
pseudo = lambda proto, seg: socket.inet_aton(SRC) + socket.inet_aton(GW) + struct.pack('!BBH', 0, proto, len(seg))
def fix(proto, seg, at):
    return seg[:at] + struct.pack('!H', csum(pseudo(proto, seg))) + seg[at + 2:]
gw = None
for line in open('/proc/net/arp').read().splitlines()[1:]:
    f = line.split()
    if f[0] == GW and f[3] != '00:00:00:00:00:00':
        gw = bytes.fromhex(f[3].replace(':', ''))
assert gw, 'no ARP entry for the gateway'
me = bytes.fromhex(open('/sys/class/net/tap0/address').read().strip().replace(':', ''))
p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
p.bind(('tap0', 0))
head = gw + me + b'\x08\x00'
sent = 0
for i in range(n):
    port = 20000 + i % 40000
    if kind == 'syn':
        seg = struct.pack('!HHIIBBHHH', port, tport, i, 0, 5 << 4, 0x02, 65535, 0, 0)
        frame = ip4(6, fix(6, seg, 16))
    elif kind == 'udp':
        seg = struct.pack('!HHHH', port, 1024 + i % 60000, 9, 0) + b'x'
        frame = ip4(17, fix(17, seg, 6))
    elif kind == 'ping':
        m = struct.pack('!BBHHH', 8, 0, 0, i % 5000, i) + b'flood'
        frame = ip4(1, m[:2] + struct.pack('!H', csum(m)) + m[4:])
    else:
        seg = struct.pack('!HHHH', port, 1024 + i % 60000, 1008, 0) + b'f' * 1000
        frame = ip4(17, seg, ident=i, frag=0x2000)
    try:
        p.send(head + frame); sent += 1
    except OSError:
        pass
print('flood', kind, 'sent', sent, flush=True)
"#;

#[test]
fn floods_from_inside_leave_the_driver_up_with_memory_and_descriptors_bounded() {
    // Every frame goes to the gateway (the host's 127.0.0.1, closed ports):
    // nothing leaves the machine.
    let echo = servers::tcp_echo("127.0.0.1");
    let closed = closed_tcp_port("127.0.0.1");
    let dir = user_temp_dir("gvflood2");
    let n = 20000;
    let flood = script("flood_frames.py", FLOOD_FRAMES);
    let script = format!(
        "D={d}; {WAIT_FOR}; echo x | socat -t5 - TCP:10.0.2.1:{echo} >/dev/null; echo ready; \
         for k in syn udp ping frag; do w go-$k; python3 {flood} $k {n} {closed}; echo done-$k; done; \
         echo after | socat -t5 - TCP:10.0.2.1:{echo}; w bye; echo bye",
        d = dir.display(),
    );
    let (max_tcp, max_udp, max_ping) = (300, 300, 256);
    let (mut child, mut out) = start_sh(
        &[
            NET,
            "--net-opt",
            &format!("max-tcp-flows={max_tcp}"),
            "--net-opt",
            &format!("max-udp-flows={max_udp}"),
        ],
        &script,
    );
    let driver = child_named(child.id(), "rk-gvtap").expect("rk-gvtap is running");
    let (fds0, rss0) = (fd_count(driver), rss_kib(driver));
    let (mut most_fds, mut most_rss) = (fds0, rss0);
    let mut report = format!("before: {fds0} fds, {rss0} KiB\n");
    for kind in ["syn", "udp", "ping", "frag"] {
        touch(&dir, &format!("go-{kind}"));
        let (mut peak_fds, mut peak_rss) = (0, 0);
        let started = Instant::now();
        let reader = std::thread::scope(|s| {
            let h = s.spawn(|| wait_for_line(&mut out, &format!("done-{kind}"), 120));
            while !h.is_finished() {
                peak_fds = peak_fds.max(fd_count(driver));
                peak_rss = peak_rss.max(rss_kib(driver));
                std::thread::sleep(Duration::from_millis(20));
            }
            h.join().unwrap()
        });
        // Let what is queued drain, then look again.
        std::thread::sleep(Duration::from_millis(500));
        peak_fds = peak_fds.max(fd_count(driver));
        peak_rss = peak_rss.max(rss_kib(driver));
        report.push_str(&format!(
            "{kind}: {:?}, peak {peak_fds} fds, {peak_rss} KiB; {}",
            started.elapsed(),
            reader.lines().last().unwrap_or("")
        ));
        report.push('\n');
        assert!(
            Path::new(&format!("/proc/{driver}")).exists(),
            "rk-gvtap died in the {kind} flood\n{report}"
        );
        most_fds = most_fds.max(peak_fds);
        most_rss = most_rss.max(peak_rss);
    }
    eprintln!("{report}");
    // One host socket per flow, never more than the limits allow.
    assert!(
        most_fds <= fds0 + max_tcp + max_udp + max_ping + 8,
        "{most_fds} descriptors\n{report}"
    );
    // The flows' memory is pages their data touched; a flood of new
    // destinations costs a few KiB each at most (debug build).
    assert!(
        most_rss <= rss0 + 8 * 1024,
        "{most_rss} KiB resident\n{report}"
    );
    let seen = wait_for_line(&mut out, "reply: after", 30);
    assert!(seen.contains("reply: after"), "{report}");
    touch(&dir, "bye");
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}\n{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `big_udp.py HOST PORT`: datagrams of 1000 to 65000 bytes to an echo
/// server that answers each with as many bytes; prints `SIZE:GOT` each.
const BIG_UDP: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
r = []
for n in (1000, 3000, 30000, 65000):
    s.send(b'x' * n)
    try:
        r.append('%d:%d' % (n, len(s.recv(70000))))
    except OSError:
        r.append('%d:lost' % n)
print('sizes', ' '.join(r), flush=True)
"#;

/// `upload.py FILE HOST PORT`: sends FILE, then waits for the server to
/// close: the data has arrived before CMD exits (rootlesskit stops the
/// network when CMD exits, and with it what the guest's kernel still had
/// to send, as RootlessKit does).
const UPLOAD: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=60)
with open(sys.argv[1], 'rb') as f:
    s.sendall(f.read())
s.shutdown(socket.SHUT_WR)
s.recv(1)
"#;

/// A UDP server on 127.0.0.1 answering each datagram with as many bytes.
fn udp_size_echo() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 70000];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&vec![b'R'; n], from);
        }
    });
    port
}

#[test]
fn at_mtu_1500_large_datagrams_pings_and_uploads_cross_with_and_without_offloads() {
    let port = udp_size_echo();
    let dir = user_temp_dir("gvupload");
    let sum_file = dir.join("got.sum");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tport = listener.local_addr().unwrap().port();
    for offload in ["true", "false"] {
        let got_file = dir.join("got");
        let receiver = {
            let l = listener.try_clone().unwrap();
            let got_file = got_file.clone();
            std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut f = std::fs::File::create(&got_file).unwrap();
                std::io::copy(&mut s, &mut f).unwrap();
            })
        };
        let opt = format!("offload={offload}");
        let out = expect_success(&run_sh(
            &[NET, "--mtu=1500", "--net-opt", &opt],
            &format!(
                "ping -c2 -s 3000 -W3 10.0.2.1 | grep -o '[0-9]* received'; \
                 python3 {big} 10.0.2.1 {port}; \
                 head -c 50000000 /dev/urandom > {d}/up; sha256sum < {d}/up | cut -d' ' -f1 > {sum}; \
                 python3 {upload} {d}/up 10.0.2.1 {tport}; rm {d}/up",
                upload = script("upload.py", UPLOAD),
                big = script("big_udp.py", BIG_UDP),
                sum = sum_file.display(),
                d = dir.display(),
            ),
        ));
        receiver.join().unwrap();
        let got = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sha256sum < {} | cut -d' ' -f1",
                got_file.display()
            ))
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&got.stdout).trim().to_string();
        assert!(
            out.contains("sizes 1000:1000 3000:3000 30000:30000 65000:65000"),
            "offload={offload}: {out}"
        );
        assert!(out.contains("2 received"), "offload={offload}: {out}");
        let sent = std::fs::read_to_string(&sum_file).unwrap_or_default();
        assert_eq!(got, sent.trim(), "offload={offload}: upload differs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
