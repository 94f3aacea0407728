//! `--net=pasta` end to end: the real pasta, unprivileged, with real
//! traffic to servers on the host's loopback.
//!
//! Traffic rules: everything here reaches only the host's loopback (through
//! pasta's gateway mapping, its DNS forwarder and the implicit port
//! forwarding) or addresses inside the namespaces a test made. What would
//! leave the host otherwise (ICMP, and anything to 10.0.2.2 with
//! --disable-host-loopback: pasta then sends it to that address for real)
//! runs inside a network namespace of its own standing in for the host,
//! with nothing behind its default route.

use rk_tests::dns::LocalResolver;
use rk_tests::servers::{tcp_echo, udp_echo};
use rk_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The recommended way to run it, as in RootlessKit's documentation.
const PASTA: &[&str] = &[
    "--net=pasta",
    "--port-driver=implicit",
    "--copy-up=/etc",
    "--disable-host-loopback",
];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec!["--net=pasta", "--copy-up=/etc"];
    v.extend_from_slice(extra);
    v
}

/// A port free on the host a moment ago for TCP and UDP on every address
/// (implicit forwarding binds 0.0.0.0 and ::).
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        if UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// Starts rootlesskit running `script` and waits for the line `line` (the
/// script prints it once its servers listen); returns the lines before it.
fn start_and_wait_for_line(args: &[&str], script: &str, line: &str) -> (Child, Vec<String>) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", script]);
    let (mut child, mut out) = spawn_reading(rootlesskit(&all));
    let mut before = Vec::new();
    loop {
        let mut got = String::new();
        if out.read_line(&mut got).unwrap_or(0) == 0 {
            let err = finish(child, 0);
            panic!("no {line:?} line; stdout: {before:?}; stderr:\n{err}");
        }
        if got.trim_end() == line {
            break;
        }
        before.push(got.trim_end().to_owned());
    }
    // Keep CMD's later output flowing somewhere.
    child.stdout = Some(out.into_inner());
    (child, before)
}

/// Waits up to `secs` for the run to end (its script ends by itself), kills
/// it if it has not, and returns what it printed on stderr (for failure
/// messages; not waiting for a process left behind that holds the pipe).
fn finish(mut child: Child, secs: u64) -> String {
    let stderr = drain(child.stderr.take().unwrap());
    wait_until(&mut child, Instant::now() + Duration::from_secs(secs));
    let bytes = stderr
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A shell command that waits (up to 5 s) until something in the current
/// network namespace listens on TCP `port` (`udp`: has UDP `port` bound),
/// and fails if nothing does; `prefix` runs the check elsewhere (e.g. an
/// nsenter into another namespace).
fn wait_bound(prefix: &str, udp: bool, port: u16) -> String {
    let (table, state) = if udp { ("udp", "07") } else { ("tcp", "0A") };
    let check = format!("{prefix} grep -q ':{port:04X} 00000000:0000 {state}' /proc/net/{table}");
    format!("for i in $(seq 100); do {check} && break; sleep 0.05; done; {check}")
}

/// Connects to the host's 127.0.0.1:`port` until a server answers `hello`
/// with a line, for up to `secs` seconds.
fn tcp_ask(port: u16, secs: u64) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(mut s) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
        {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(b"hello\n");
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            if !got.is_empty() {
                return Some(got);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Sends datagrams to the host's 127.0.0.1:`port` until one is answered,
/// for up to `secs` seconds.
fn udp_ask(port: u16, secs: u64) -> Option<String> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let _ = s.send_to(b"hello\n", ("127.0.0.1", port));
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

/// Quotes `s` for sh.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `cmd` (a rootlesskit command) inside a network namespace of root's
/// that stands in for the host: loopback, a veth pair whose other end is in
/// the same namespace as the "uplink" with the default route pasta needs,
/// and nothing behind it. `setup` runs there first (as root); `teardown`
/// after `cmd`.
fn in_isolated_host_netns(setup: &str, cmd: &Command, teardown: &str) -> Command {
    assert!(is_root(), "this test makes a network namespace as root");
    let mut line = quoted(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quoted(&a.to_string_lossy()));
    }
    let script = format!(
        "set -e\n\
         ip link set lo up\n\
         ip link add uplink0 type veth peer name uplink1\n\
         ip link set uplink1 up\n\
         ip addr add 192.0.2.2/24 dev uplink0\n\
         ip link set uplink0 up\n\
         ip route add default via 192.0.2.1\n\
         echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range\n\
         {setup}\n\
         set +e\n\
         {line}\n\
         rc=$?\n\
         {teardown}\n\
         exit $rc\n"
    );
    let mut c = Command::new("unshare");
    c.args(["--net", "sh", "-c", &script]);
    c.stdin(Stdio::null());
    c
}

/// pasta attaches to a tap made persistent in advance (IFF_PERSIST,
/// 0x0800 in tun_flags), so pasta's exit does not wait for the kernel to
/// unregister it.
#[test]
fn the_tap_is_persistent_so_its_teardown_is_off_the_exit_path() {
    let out = expect_success(&run_sh(
        PASTA,
        "cat /sys/class/net/tap0/tun_flags; cat /sys/class/net/tap0/carrier",
    ));
    let mut lines = out.lines();
    let flags = lines.next().unwrap_or_default();
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("tun_flags {flags:?}: {e}\n{out}"));
    assert_eq!(flags & 0x0800, 0x0800, "not persistent: {out}");
    assert_eq!(lines.next(), Some("1"), "pasta is attached: {out}");
}

#[test]
fn interface_route_mtu_and_resolv_conf_are_as_rootlesskit_sets_them() {
    let out = expect_success(&run_sh(
        PASTA,
        "id -u; ip -o -4 addr show tap0; ip route show default; cat /sys/class/net/tap0/mtu; \
         cat /etc/resolv.conf; ip -o link show lo; ip -o link show tap0; ip -o -6 addr show scope global",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert!(lines[1].contains("inet 10.0.2.100/24"), "{out}");
    assert!(
        lines[2].starts_with("default via 10.0.2.2 dev tap0"),
        "{out}"
    );
    assert_eq!(lines[3], "65520", "{out}");
    assert_eq!(lines[4], "nameserver 10.0.2.3", "{out}");
    assert!(lines[5].contains(",UP"), "{out}");
    assert!(
        lines[6].contains(",UP") && lines[6].contains("mtu 65520"),
        "{out}"
    );
    // IPv4 only unless --ipv6.
    assert_eq!(lines.len(), 7, "{out}");
}

#[test]
fn tcp_and_udp_reach_host_loopback_through_the_gateway() {
    let tcp = tcp_echo("127.0.0.1");
    let udp = udp_echo("127.0.0.1");
    let out = expect_success(&run_sh(
        &args(&[]),
        &format!(
            "echo hello-tcp | socat -t5 - TCP:10.0.2.2:{tcp}; \
             echo hello-udp | socat -t5 - UDP:10.0.2.2:{udp}"
        ),
    ));
    assert!(out.contains("reply: hello-tcp"), "{out}");
    assert!(out.contains("reply: hello-udp"), "{out}");
}

#[test]
fn disable_host_loopback_keeps_the_gateway_away_from_host_loopback() {
    // pasta --no-map-gw sends what goes to 10.0.2.2 to that address for
    // real, so this runs in a stand-in host namespace: its loopback has a
    // server that counts connections, and nothing is behind its uplink.
    let port = 45999;
    let seen = user_temp_dir("nomapgw").join("seen");
    let setup = format!(
        "socat -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork OPEN:{},creat,append &\n\
         server=$!\n\
         for i in $(seq 100); do grep -q ':{port:04X} 00000000:0000 0A' /proc/net/tcp && break; sleep 0.05; done",
        seen.display()
    );
    let script = format!(
        "echo blocked | socat -t2 - TCP:10.0.2.2:{port},connect-timeout=2 && echo REACHED || echo BLOCKED; \
         echo direct | socat -t2 - TCP:127.0.0.1:{port},connect-timeout=2 && echo REACHED || echo BLOCKED"
    );
    let cmd = rootlesskit(&[PASTA, &["--", "sh", "-c", &script]].concat());
    // The server works: what the host itself sends arrives.
    let control =
        format!("echo control | socat -u - TCP:127.0.0.1:{port}; sleep 0.2; kill $server");
    let out = in_isolated_host_netns(&setup, &cmd, &control)
        .output()
        .unwrap();
    let text = expect_success(&out);
    // Neither the gateway nor the namespace's own loopback (pasta's -T
    // mirroring is off) reaches the host's loopback.
    assert_eq!(text.matches("BLOCKED").count(), 2, "{text}");
    let got = std::fs::read_to_string(&seen).unwrap_or_default();
    assert_eq!(
        got, "control\n",
        "only the host's own connection may arrive"
    );
}

#[test]
fn without_disable_host_loopback_the_gateway_is_host_loopback() {
    let tcp = tcp_echo("127.0.0.1");
    let out = expect_success(&run_sh(
        &args(&["--port-driver=implicit"]),
        &format!("echo mapped | socat -t5 - TCP:10.0.2.2:{tcp}"),
    ));
    assert!(out.contains("reply: mapped"), "{out}");
}

#[test]
fn ping_goes_through_pasta_and_is_answered_on_the_host_side() {
    // pasta before 2024_07_26 sends ICMP echo to the gateway address itself
    // (later ones to the host's loopback): the stand-in host namespace has
    // 10.0.2.2 on its loopback so that either way the answer comes from
    // the host side, and nothing leaves.
    let cmd = rootlesskit(&args(&["--", "ping", "-c1", "-W5", "10.0.2.2"]));
    let out = in_isolated_host_netns("ip addr add 10.0.2.2/32 dev lo", &cmd, "")
        .output()
        .unwrap();
    let text = expect_success(&out);
    assert!(text.contains("1 received"), "{text}");
}

#[test]
fn dns_through_10_0_2_3_reaches_the_hosts_resolver() {
    let resolver = LocalResolver::start("127.0.0.83", "pasta.test", "10.9.8.7");
    let cmd = rootlesskit(&[PASTA, &["--", "getent", "hosts", "pasta.test"]].concat());
    let out = in_root_mount_ns("private", &resolver.mount_snippet(), &cmd)
        .output()
        .unwrap();
    let text = expect_success(&out);
    assert!(text.starts_with("10.9.8.7"), "{text}");
}

#[test]
fn implicit_forwards_a_tcp_server_started_inside_and_stops_with_it() {
    let port = free_port();
    let (child, _) = start_and_wait_for_line(
        PASTA,
        &format!(
            "timeout 20 socat TCP-LISTEN:{port},reuseaddr SYSTEM:'read x; echo inside-tcp $x' & \
             {} && echo listening; wait; sleep 3",
            wait_bound("", false, port)
        ),
        "listening",
    );
    let got = tcp_ask(port, 10);
    assert_eq!(got.as_deref(), Some("inside-tcp hello\n"), "port {port}");
    // The server took one connection and exited: the host's port closes.
    let deadline = Instant::now() + Duration::from_secs(3);
    let closed = loop {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = finish(child, 10);
    assert!(
        closed,
        "127.0.0.1:{port} still accepts after the server inside exited; stderr:\n{err}"
    );
}

#[test]
fn implicit_forwards_a_udp_server_started_inside() {
    let port = free_port();
    let (child, _) = start_and_wait_for_line(
        PASTA,
        &format!(
            "timeout 20 socat UDP4-RECVFROM:{port},reuseaddr SYSTEM:'read x; echo inside-udp $x' & \
             {} && echo listening; wait",
            wait_bound("", true, port)
        ),
        "listening",
    );
    let got = udp_ask(port, 10);
    let err = finish(child, 10);
    assert_eq!(got.as_deref(), Some("inside-udp hello\n"), "stderr:\n{err}");
}

#[test]
fn without_implicit_no_port_is_forwarded() {
    let port = free_port();
    let (child, _) = start_and_wait_for_line(
        &args(&["--disable-host-loopback"]),
        &format!(
            "timeout 5 socat TCP-LISTEN:{port},reuseaddr SYSTEM:'echo inside' & \
             {} && echo listening; wait",
            wait_bound("", false, port)
        ),
        "listening",
    );
    // Longer than either pasta's or the driver's scan interval.
    let got = tcp_ask(port, 2);
    finish(child, 10);
    assert_eq!(
        got, None,
        "a port was forwarded without --port-driver=implicit"
    );
}

#[test]
fn detach_netns_keeps_cmd_in_host_netns_and_forwards_from_the_detached_one() {
    let tcp = tcp_echo("127.0.0.1");
    let port = free_port();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let (child, before) = start_and_wait_for_line(
        &args(&["--detach-netns", "--port-driver=implicit"]),
        &format!(
            "readlink /proc/self/ns/net; \
             nsenter --net=$ROOTLESSKIT_STATE_DIR/netns sh -c \
               'ip -o -4 addr show tap0; echo detached | socat -t5 - TCP:10.0.2.2:{tcp}'; \
             timeout 20 nsenter --net=$ROOTLESSKIT_STATE_DIR/netns \
               socat TCP-LISTEN:{port},reuseaddr SYSTEM:'read x; echo from-detached $x' & \
             {} && echo listening; wait",
            wait_bound("nsenter --net=$ROOTLESSKIT_STATE_DIR/netns", false, port)
        ),
        "listening",
    );
    let got = tcp_ask(port, 10);
    let err = finish(child, 10);
    let text = before.join("\n");
    assert_eq!(
        before[0],
        host_net.to_string_lossy(),
        "CMD must stay in the host netns: {text}"
    );
    assert!(text.contains("inet 10.0.2.100/24"), "{text}");
    assert!(text.contains("reply: detached"), "{text}");
    assert_eq!(
        got.as_deref(),
        Some("from-detached hello\n"),
        "stderr:\n{err}"
    );
}

#[test]
fn ipv6_exchange_with_host_loopback_through_the_ipv6_gateway() {
    let listener = TcpListener::bind("[::1]:0").expect("::1 on the host's lo");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = (&s).write_all(format!("v6 reply: {line}").as_bytes());
        }
    });
    let out = expect_success(&run_sh(
        &args(&["--ipv6"]),
        &format!(
            "ip -o -6 addr show tap0 scope global; \
             gw=$(ip -6 route show default | sed -n 's/^default via \\([^ ]*\\).*/\\1/p'); \
             echo gateway $gw; echo six | socat -t5 - TCP6:[$gw]:{port}"
        ),
    ));
    assert!(
        out.contains("inet6 "),
        "no global IPv6 address on tap0: {out}"
    );
    assert!(out.contains("gateway "), "{out}");
    assert!(out.contains("v6 reply: six"), "{out}");
}

#[test]
fn cidr_moves_address_gateway_and_dns() {
    let tcp = tcp_echo("127.0.0.1");
    let out = expect_success(&run_sh(
        &args(&["--cidr=10.0.7.0/24"]),
        &format!(
            "ip -o -4 addr show tap0; ip route show default; cat /etc/resolv.conf; \
             echo via-cidr | socat -t5 - TCP:10.0.7.2:{tcp}"
        ),
    ));
    assert!(out.contains("inet 10.0.7.100/24"), "{out}");
    assert!(out.contains("default via 10.0.7.2"), "{out}");
    assert!(out.contains("nameserver 10.0.7.3"), "{out}");
    assert!(out.contains("reply: via-cidr"), "{out}");
}

#[test]
fn mtu_and_ifname_flags_shape_the_interface() {
    let tcp = tcp_echo("127.0.0.1");
    let out = expect_success(&run_sh(
        &args(&["--mtu=1500", "--ifname=eth7"]),
        &format!(
            "cat /sys/class/net/eth7/mtu; ip route show default; \
             echo small | socat -t5 - TCP:10.0.2.2:{tcp}"
        ),
    ));
    assert!(out.starts_with("1500\n"), "{out}");
    assert!(out.contains("default via 10.0.2.2 dev eth7"), "{out}");
    assert!(out.contains("reply: small"), "{out}");
}

#[test]
fn missing_pasta_is_a_clear_error_and_leaves_nothing() {
    let mark = marker("nopasta");
    let out = run_sh(
        &args(&["--pasta-binary=/nonexistent"]),
        &format!("true {mark}"),
    );
    expect_failure(
        &out,
        "network driver pasta: pasta not found at /nonexistent",
    );
    expect_failure(&out, "--pasta-binary");
    assert!(wait_until_gone(&mark, 2).is_empty());
}

#[test]
fn invalid_options_are_refused_before_pasta_starts() {
    let mark = marker("badopt");
    let out = run_sh(&args(&["--mtu=65521"]), &format!("true {mark}"));
    expect_failure(&out, "--mtu=65521 is out of range: pasta takes 68..65520");
    let out = run_sh(
        &args(&["--net-opt=pasta-bianry=x"]),
        &format!("true {mark}"),
    );
    expect_failure(&out, "unknown option --net-opt=pasta-bianry");
    let out = run_sh(
        &args(&["--pasta-binary=/bin/true"]),
        &format!("true {mark}"),
    );
    expect_failure(&out, "is it pasta (from passt)?");
    assert!(wait_until_gone(&mark, 2).is_empty());
}

#[test]
fn pasta_failing_at_start_is_reported_with_its_words_and_leaves_nothing() {
    let mark = marker("padfail");
    // A unique network, so that a pasta left behind would be recognised.
    let out = run_sh(
        &args(&[
            "--ifname=lo",
            "--cidr=10.77.9.0/24",
            "--port-driver=implicit",
        ]),
        &format!("true {mark}"),
    );
    expect_failure(
        &out,
        "pasta (/usr/bin/pasta) exited before the network was up",
    );
    expect_failure(&out, "Failed to open tun socket in namespace");
    expect_failure(&out, "--ifname must not name an existing interface");
    assert!(wait_until_gone(&mark, 2).is_empty());
    let left = wait_until_gone("--address 10.77.9.100", 2);
    assert!(left.is_empty(), "pasta left behind: {left:?}");
}

/// rk-pasta, pasta and the namespace helper under `pid`.
fn network_processes(pid: u32) -> Vec<(u32, String)> {
    descendants(pid)
        .into_iter()
        .filter(|(_, comm)| {
            comm == "rk-pasta" || comm.starts_with("pasta") || comm.starts_with("passt")
        })
        .collect()
}

fn gone_or_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        }
    }
}

#[test]
fn kill_9_of_the_parent_leaves_no_process_behind() {
    let mark = marker("kill9");
    // A state directory of the test's own (removed at exit): SIGKILL
    // leaves rootlesskit no chance to remove one it made.
    let state = format!("--state-dir={}/sd", user_temp_dir("pastakill").display());
    let args = [PASTA, &[state.as_str()]].concat();
    let (mut child, _) =
        start_and_wait_for_line(&args, &format!("echo ready; sleep 100 # {mark}"), "ready");
    let procs = network_processes(child.id());
    // The driver, its namespace helper and pasta.
    assert!(
        procs.iter().filter(|(_, c)| c == "rk-pasta").count() == 2,
        "{procs:?}"
    );
    assert!(procs.iter().any(|(_, c)| c.starts_with("pas")), "{procs:?}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(wait_until_gone(&mark, 3).is_empty(), "CMD left behind");
    let deadline = Instant::now() + Duration::from_secs(3);
    let left = loop {
        let left: Vec<_> = procs.iter().filter(|(p, _)| !gone_or_zombie(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            break format!("{left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(left, "[]", "left behind");
}

#[test]
fn pasta_dying_while_cmd_runs_is_reported() {
    let (mut child, _) = start_and_wait_for_line(
        &args(&["--disable-host-loopback"]),
        "echo ready; sleep 2; echo cmd-finished",
        "ready",
    );
    // pasta itself; its short-lived helpers linger as zombies.
    let pasta: Vec<_> = network_processes(child.id())
        .into_iter()
        .filter(|(p, c)| c.starts_with("pas") && !gone_or_zombie(*p))
        .collect();
    assert_eq!(pasta.len(), 1, "{pasta:?}");
    // SAFETY: signalling a process of the test user's, by pid.
    unsafe { libc::kill(pasta[0].0 as i32, libc::SIGKILL) };
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(err.contains("network driver pasta: pasta (pid"), "{err}");
    assert!(err.contains("exited unexpectedly (signal: 9"), "{err}");
    assert!(err.contains("the network inside is gone"), "{err}");
    assert!(rest.contains("cmd-finished"), "CMD goes on: {rest}");
    assert!(status.success(), "CMD's status counts: {err}");
}

/// Starts rootlesskit (`env` added to its environment) running `script`;
/// CMD's stdout lines arrive on the receiver as they come.
fn start_with_lines(
    args: &[&str],
    env: &[(&str, &str)],
    script: &str,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", script]);
    let mut child = rootlesskit_with_env(&all, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits up to `secs` for the line `want`; returns the lines before it, or
/// `Err` with everything seen.
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    want: &str,
    secs: u64,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == want => return Ok(seen),
            Ok(line) => seen.push(line),
            Err(_) => return Err(seen),
        }
    }
}

/// The rk-pasta processes under `pid` that are alive (not zombies).
fn live_drivers(pid: u32) -> Vec<u32> {
    network_processes(pid)
        .into_iter()
        .filter(|(p, c)| c == "rk-pasta" && !gone_or_zombie(*p))
        .map(|(p, _)| p)
        .collect()
}

// Issue 10: a UDP port forwarded by rk-pasta going away woke its receiving
// thread with shutdown(SHUT_RD); std's recv_from then asserted on the zero
// address length and the release build (panic = abort) killed rk-pasta,
// pasta with it, and the network. With debug binaries std happens to
// report an error instead; run the tests with RK_BIN_DIR=target/release to
// see the abort without the fix.
#[test]
fn a_udp_server_inside_going_away_leaves_the_driver_network_and_other_ports_up() {
    let (udp, tcp) = (free_port(), free_port());
    let host_tcp = tcp_echo("127.0.0.1");
    let script = format!(
        "timeout 30 socat UDP4-RECVFROM:{udp},reuseaddr,fork SYSTEM:'echo inside-udp' & u=$!; \
         timeout 30 socat TCP-LISTEN:{tcp},reuseaddr,fork SYSTEM:'read x; echo inside-tcp $x' & \
         {} && {} && echo listening; \
         read go < /dev/null; sleep 2; kill $u; \
         for i in $(seq 100); do grep -q ':{udp:04X} 00000000:0000 07' /proc/net/udp || break; sleep 0.05; done; \
         sleep 1.5; echo udp-gone; \
         echo after | socat -t5 - TCP:10.0.2.2:{host_tcp}; \
         sleep 3; echo done",
        wait_bound("", true, udp),
        wait_bound("", false, tcp)
    );
    let (child, rx) = start_with_lines(&["--net=pasta", "--port-driver=implicit"], &[], &script);
    let pid = child.id();
    let before = wait_line(&rx, "listening", 20);
    assert!(before.is_ok(), "{before:?}: {}", finish(child, 0));
    assert_eq!(udp_ask(udp, 5).as_deref(), Some("inside-udp\n"));
    let gone = wait_line(&rx, "udp-gone", 20);
    assert!(gone.is_ok(), "{gone:?}: {}", finish(child, 0));
    // The driver is alive, the other forward works, and so does the network.
    let drivers = live_drivers(pid);
    let other = tcp_ask(tcp, 5);
    let rest = wait_line(&rx, "done", 20).unwrap_or_else(|seen| seen);
    let err = finish(child, 10);
    assert_eq!(
        drivers.len(),
        2,
        "rk-pasta and its helper: {drivers:?}\n{err}"
    );
    assert_eq!(other.as_deref(), Some("inside-tcp hello\n"), "{err}");
    assert!(rest.iter().any(|l| l == "reply: after"), "{rest:?}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("exited while CMD was running"), "{err}");
}

// The fault injection (RK_PASTA_TEST_PANIC) exists in debug builds only.
#[test]
fn a_panic_in_the_forwarding_thread_is_reported_and_forwarding_resumes() {
    if !has_fault_injection() {
        eprintln!("skipped: a release build of rk-pasta has no fault injection");
        return;
    }
    let port = free_port();
    let script = format!(
        "socat TCP-LISTEN:{port},reuseaddr,fork SYSTEM:'read x; echo inside $x' & s=$!; \
         {} && echo listening; sleep 6; kill $s",
        wait_bound("", false, port)
    );
    let (child, rx) = start_with_lines(PASTA, &[("RK_PASTA_TEST_PANIC", "port-forward")], &script);
    let pid = child.id();
    let before = wait_line(&rx, "listening", 20);
    assert!(before.is_ok(), "{before:?}: {}", finish(child, 0));
    let got = tcp_ask(port, 10);
    let drivers = live_drivers(pid);
    let err = finish(child, 15);
    assert_eq!(got.as_deref(), Some("inside hello\n"), "{err}");
    assert_eq!(drivers.len(), 2, "{drivers:?}\n{err}");
    assert!(
        err.contains("rk-pasta: internal error (please report it): thread 'port-forward' panicked")
            && err.contains("RK_PASTA_TEST_PANIC=port-forward")
            && err.contains("the network stays up")
            && err.contains("rk-pasta: warning: port forwarding starts again"),
        "{err}"
    );
}

// A panic while the driver serves the core is an error the core shows, not
// a dead driver (debug builds, where it can be unwound; release builds
// report it and abort, which the core reports as the driver gone).
#[test]
fn a_panic_while_configuring_is_reported_as_an_error_and_leaves_nothing() {
    if !has_fault_injection() {
        eprintln!("skipped: a release build of rk-pasta has no fault injection");
        return;
    }
    let mark = marker("cfgpanic");
    let cmd = rootlesskit_with_env(
        &[
            &args(&["--cidr=10.77.8.0/24"])[..],
            &["--", "sh", "-c", &format!("true {mark}")],
        ]
        .concat(),
        &[("RK_PASTA_TEST_PANIC", "configure")],
    );
    let out = output_within(cmd, Duration::from_secs(30));
    expect_failure(
        &out,
        "rk-pasta: internal error (please report it): thread 'main' panicked",
    );
    expect_failure(
        &out,
        "network driver pasta: internal error while setting up the network (see the message above)",
    );
    assert!(wait_until_gone(&mark, 2).is_empty());
    assert!(wait_until_gone("--address 10.77.8.100", 2).is_empty());
}

/// Whether the rk-pasta under test has the debug builds' fault injection.
fn has_fault_injection() -> bool {
    let driver = std::fs::read(bin_dir().join("rk-pasta")).unwrap();
    driver.windows(19).any(|w| w == b"RK_PASTA_TEST_PANIC")
}

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// Issue 11: two threads per forwarded connection (5000 connections made
// 6665 threads and 1670 failures). One event loop now.
#[test]
fn many_concurrent_connections_through_implicit_forwarding_need_no_thread_each() {
    const CONNECTIONS: usize = 1000;
    let port = free_port();
    // One process serving every connection inside: echoes each line.
    let server = format!(
        "import selectors, socket\n\
         sel = selectors.DefaultSelector()\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('127.0.0.1', {port})); l.listen(4096); l.setblocking(False)\n\
         sel.register(l, selectors.EVENT_READ)\n\
         print('listening', flush=True)\n\
         while True:\n\
         \x20   for key, _ in sel.select(30) or exit(0):\n\
         \x20       if key.fileobj is l:\n\
         \x20           c, _ = l.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)\n\
         \x20       else:\n\
         \x20           d = key.fileobj.recv(4096)\n\
         \x20           if d: key.fileobj.send(d)\n\
         \x20           else: sel.unregister(key.fileobj); key.fileobj.close()\n"
    );
    let dir = user_temp_dir("manyconn");
    let file = dir.join("server.py");
    std::fs::write(&file, server).unwrap();
    let script = format!("ulimit -n 4096; exec python3 {}", file.display());
    let (child, rx) = start_with_lines(PASTA, &[], &script);
    let pid = child.id();
    let before = wait_line(&rx, "listening", 20);
    assert!(before.is_ok(), "{before:?}: {}", finish(child, 0));
    // Wait until the host's port is forwarded.
    assert!(
        tcp_connect_within(port, 10).is_some(),
        "port {port} not forwarded: {}",
        finish(child, 0)
    );
    let mut conns = Vec::new();
    let mut failures = 0;
    for _ in 0..CONNECTIONS {
        match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)) {
            Ok(s) => conns.push(s),
            Err(_) => failures += 1,
        }
    }
    for (i, s) in conns.iter_mut().enumerate() {
        if s.write_all(format!("c{i}\n").as_bytes()).is_err() {
            failures += 1;
        }
    }
    let mut answered = 0;
    for (i, s) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let want = format!("c{i}\n");
        let mut got = vec![0u8; want.len()];
        if s.read_exact(&mut got).is_ok() && got == want.as_bytes() {
            answered += 1;
        }
    }
    let driver = network_processes(pid)
        .into_iter()
        .find(|(_, c)| c == "rk-pasta")
        .map(|(p, _)| p)
        .unwrap();
    // Every connection is still open here.
    let driver_threads = threads(driver);
    drop(conns);
    let err = finish(child, 0);
    assert_eq!(failures, 0, "{err}");
    assert_eq!(answered, CONNECTIONS, "{err}");
    // The main thread, pasta's log reader and the forwarder.
    assert!(driver_threads <= 4, "rk-pasta has {driver_threads} threads");
}

/// A connection to the host's 127.0.0.1:`port` within `secs`.
fn tcp_connect_within(port: u16, secs: u64) -> Option<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(s) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
        {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

// Issue 11: root inside the child could ptrace rk-pasta's namespace
// helper (it joined the child's user namespace) and so reach the driver's
// sockets. Every rk-pasta process must refuse it.
#[test]
fn root_inside_cannot_ptrace_the_drivers_processes_or_open_their_memory() {
    let script = "sleep 0.5; n=0; \
        for p in /proc/[0-9]*; do \
          [ \"$(cat $p/comm 2>/dev/null)\" = rk-pasta ] || continue; \
          [ \"$(stat -c %U $p 2>/dev/null)\" != root ] || [ -r $p/stat ] || continue; \
          n=$((n+1)); pid=${p#/proc/}; \
          if (: < $p/mem) 2>/dev/null; then echo \"mem-opened $pid\"; else echo \"mem-denied $pid\"; fi; \
          timeout 3 strace -o /dev/null -e trace=none -p $pid 2>&1 | head -1; \
        done; echo found $n";
    let out = expect_success(&run_sh(PASTA, script));
    assert!(!out.contains("mem-opened"), "{out}");
    assert!(!out.contains("attached"), "{out}");
    // At least the driver and its namespace helper were tried.
    let denied = out.matches("mem-denied").count();
    assert!(denied >= 2, "{out}");
    assert!(out.matches("Operation not permitted").count() >= 2, "{out}");
}

/// `rootlesskit ARGS` as the test user under a hard and soft open-file
/// limit of `n`.
fn rootlesskit_with_file_limit(n: u32, args: &[&str]) -> Command {
    let mut c = as_test_user("sh");
    c.arg("-c")
        .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
        .arg(bin_dir().join("rootlesskit"))
        .args(args)
        .stdin(Stdio::null());
    c
}

// Issue 11: pasta fills its socket pools up to the open-file limit before
// it opens its --pid file, so with a hard limit of 64 it failed ("PID file
// open: Too many open files"); RootlessKit, which passes no --pid, worked.
#[test]
fn a_hard_open_file_limit_of_64_still_gives_a_working_network() {
    let tcp = tcp_echo("127.0.0.1");
    let script = format!(
        "ulimit -Hn; ip -o -4 addr show tap0; ip route show default; \
         echo limited | socat -t5 - TCP:10.0.2.2:{tcp}"
    );
    let cmd = rootlesskit_with_file_limit(
        64,
        &["--net=pasta", "--copy-up=/etc", "--", "sh", "-c", &script],
    );
    let out = output_within(cmd, Duration::from_secs(30));
    let text = expect_success(&out);
    assert!(text.starts_with("64\n"), "{text}");
    assert!(text.contains("inet 10.0.2.100/24"), "{text}");
    assert!(text.contains("default via 10.0.2.2"), "{text}");
    assert!(text.contains("reply: limited"), "{text}");
}

/// A core written for this test (from docs/driver-protocol.md): starts
/// `rk-pasta` for a user+network namespace of its own, configures it with
/// implicit forwarding, notes every process under the driver, sends
/// `shutdown`, reaps the driver and reports how long that took and which
/// of the noted processes were still there (a child the driver left
/// unreaped is reparented to init, which here reaps it only after 1-2 s).
const FAKE_CORE: &str = r#"
import array, json, os, socket, subprocess, sys, tempfile, time
driver = sys.argv[1]
child = subprocess.Popen(["unshare", "-Urn", "sleep", "60"])
for _ in range(500):
    if os.readlink(f"/proc/{child.pid}/ns/user") != os.readlink("/proc/self/ns/user"):
        break
    time.sleep(0.01)
userns = os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY)
netns = os.open(f"/proc/{child.pid}/ns/net", os.O_RDONLY)
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
env = dict(os.environ, RK_DRIVER_FD=str(theirs.fileno()))
drv = subprocess.Popen([driver], env=env, pass_fds=[theirs.fileno()])
theirs.close()
def send(msg, fds=()):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    ours.sendmsg([json.dumps(msg).encode()], anc)
def recv():
    return json.loads(ours.recv(65536))
def tree(root):
    parents = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            parents[int(p)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, todo = [], [root]
    while todo:
        x = todo.pop()
        kids = [p for p, pp in parents.items() if pp == x]
        found += kids
        todo += kids
    return found
send({"type": "hello", "protocol_version": 1, "core_version": "test"})
print("hello", recv()["type"])
state = tempfile.mkdtemp()
send({"type": "configure", "child_pid": child.pid, "state_dir": state,
      "options": {"port-driver": "implicit"}}, [userns, netns])
print("configure", recv()["type"])
time.sleep(0.3)
under = tree(drv.pid)
print("under", len(under))
started = time.monotonic()
send({"type": "shutdown"})
drv.wait()
print("exit_ms %.1f" % ((time.monotonic() - started) * 1000))
left = [p for p in under if os.path.exists(f"/proc/{p}")]
print("left", left)
child.kill()
child.wait()
"#;

// Issue 11 point 8: on shutdown the driver stops pasta and its helper
// processes and reaps them before it exits, quickly.
#[test]
fn shutdown_reaps_every_process_of_the_driver_before_it_exits() {
    let dir = user_temp_dir("fakecore");
    let script = dir.join("core.py");
    std::fs::write(&script, FAKE_CORE).unwrap();
    let driver = bin_dir().join("rk-pasta");
    let mut c = as_test_user("python3");
    c.arg(&script).arg(&driver).stdin(Stdio::null());
    let out = output_within(c, Duration::from_secs(30));
    let text = stdout(&out);
    let err = stderr(&out);
    assert!(out.status.success(), "{text}\n{err}");
    assert!(text.contains("configure configured"), "{text}\n{err}");
    // The driver's helper and pasta at least.
    let under: usize = field_after(&text, "under ").parse().unwrap();
    assert!(under >= 2, "{text}");
    assert!(text.contains("left []"), "left behind: {text}\n{err}");
    let ms: f64 = field_after(&text, "exit_ms ").parse().unwrap();
    assert!(ms < 500.0, "shutdown took {ms} ms");
    eprintln!("rk-pasta: shutdown to exit {ms} ms");
}

/// The rest of the first line starting with `key`.
fn field_after<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{text}"))
}

/// A field of /proc/PID/status (or of a task's), as text.
fn status_field(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

// Issue 13: while CMD runs, every thread of the driver and its namespace
// helper is confined (seccomp filter, no_new_privs), and the helper, which
// joined the child's user namespace and so got every capability there,
// holds none: the sockets it makes carry no capability to the driver.
#[test]
fn the_driver_and_its_helper_run_confined_and_the_helper_holds_no_capability() {
    let (mut child, rx) = start_with_lines(PASTA, &[], "echo ready; sleep 30");
    let seen = wait_line(&rx, "ready", 20);
    std::thread::sleep(Duration::from_millis(300));
    let drivers = live_drivers(child.id());
    let mut rows = Vec::new();
    for pid in &drivers {
        let cap = status_field(&format!("/proc/{pid}/status"), "CapEff:");
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let status = t.path().join("status");
            let status = status.to_string_lossy();
            rows.push((
                *pid,
                t.file_name().to_string_lossy().into_owned(),
                status_field(&status, "Seccomp:"),
                status_field(&status, "NoNewPrivs:"),
                cap.clone(),
            ));
        }
    }
    terminate(&mut child);
    assert!(seen.is_ok(), "CMD did not start: {seen:?}");
    assert!(
        drivers.len() >= 2,
        "expected the driver and its helper: {rows:?}"
    );
    // The driver, its log and forwarding threads, and the helper.
    assert!(rows.len() >= 4, "{rows:?}");
    for r in &rows {
        assert_eq!(
            (r.2.as_str(), r.3.as_str()),
            ("2", "1"),
            "not confined: {r:?} of {rows:?}"
        );
        assert_eq!(r.4, "0000000000000000", "holds capabilities: {r:?}");
    }
}
