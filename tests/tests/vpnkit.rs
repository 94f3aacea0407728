//! `--net=vpnkit` end to end, unprivileged. vpnkit itself is not packaged
//! here; gvproxy (gvisor-tap-vsock) serves the same ethernet protocol, with a
//! DHCP server, DNS and a gateway at 192.168.127.1, and maps 192.168.127.254
//! to the host's 127.0.0.1. `tests/fixtures/vpnkit-shim/vpnkit` is a `vpnkit`
//! command that runs gvproxy; the tests put it first in PATH.

use rk_tests::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

const GATEWAY: &str = "192.168.127.1";
/// gvproxy's address for the host's loopback.
const HOST: &str = "192.168.127.254";
const RUN_LIMIT: Duration = Duration::from_secs(40);

/// A directory the test user can read holding the fixture `FIXTURE` as
/// `vpnkit` (the checkout itself may not be readable by that user); one per
/// fixture and test process.
fn shim_dir(fixture: &'static str) -> PathBuf {
    static DIRS: Mutex<Vec<(&str, PathBuf)>> = Mutex::new(Vec::new());
    let mut dirs = DIRS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, d)) = dirs.iter().find(|(f, _)| *f == fixture) {
        return d.clone();
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/vpnkit-shim")
        .join(fixture);
    let dir = user_temp_dir("vpnkit-shim");
    std::fs::copy(&source, dir.join("vpnkit"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
    chmod(&dir.join("vpnkit"), 0o755);
    chmod(&dir, 0o755);
    dirs.push((fixture, dir.clone()));
    dir
}

/// `rootlesskit ARGS` as the test user with the gvproxy shim as `vpnkit`.
fn rootlesskit_vpnkit(args: &[&str], extra_env: &[(&str, &str)]) -> Command {
    let shim = shim_dir("vpnkit");
    let path = format!("{}:/usr/bin:/bin", shim.display());
    let mut env = vec![("PATH", path.as_str())];
    env.extend_from_slice(extra_env);
    rootlesskit_with_env(args, &env)
}

fn with_script<'a>(args: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--", "sh", "-c", script]);
    all
}

/// Asserts that no process mentions `needle` (killing stragglers) and that
/// the state directory holds no vpnkit socket; then removes the test's
/// directory (the state directory's parent).
#[track_caller]
fn assert_nothing_left(needle: &str, state_dir: &Path) {
    let left = wait_until_gone(needle, 3);
    for (pid, _) in &left {
        // SAFETY: kill with a pid and a signal number.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "left running: {left:?}");
    let socket = state_dir.join("vpnkit-ethernet.sock");
    assert!(!socket.exists(), "{} left behind", socket.display());
    if let Some(parent) = state_dir.parent() {
        let _ = std::fs::remove_dir_all(parent);
    }
}

/// A state directory for one run; its path names that run's vpnkit in `ps`.
fn state_dir(tag: &str) -> (PathBuf, String) {
    let dir = user_temp_dir(tag).join("state");
    let arg = format!("--state-dir={}", dir.display());
    (dir, arg)
}

#[test]
fn address_gateway_dns_and_mtu_come_from_vpnkit() {
    let (dir, sd) = state_dir("vpnkit-addr");
    let script = "echo addr=$(ip -4 -o addr show tap0 | awk '{print $4}'); \
                  echo route=$(ip route show default); \
                  echo dns=$(grep nameserver /etc/resolv.conf); \
                  echo mtu=$(cat /sys/class/net/tap0/mtu); \
                  echo mac=$(cat /sys/class/net/tap0/address); \
                  echo ping=$(ping -c1 -W5 192.168.127.1 >/dev/null && echo ok)";
    let args = [
        "--net=vpnkit",
        "--copy-up=/etc",
        "--disable-host-loopback",
        &sd,
    ];
    let out = output_within(
        rootlesskit_vpnkit(&with_script(&args, script), &[]),
        RUN_LIMIT,
    );
    let text = expect_success(&out);
    let addr = field(&text, "addr");
    let host: u8 = addr
        .strip_prefix("192.168.127.")
        .and_then(|a| a.strip_suffix("/24"))
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("not a 192.168.127.x/24 lease from gvproxy's DHCP: {text}"));
    assert!((2..254).contains(&host), "{text}");
    assert_eq!(
        field(&text, "route"),
        format!("default via {GATEWAY} dev tap0"),
        "{text}"
    );
    assert_eq!(field(&text, "dns"), format!("nameserver {GATEWAY}"));
    assert_eq!(field(&text, "mtu"), "1500");
    // vpnkit's MAC: unicast, not zero.
    let mac = field(&text, "mac");
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert!(first & 1 == 0 && mac != "00:00:00:00:00:00", "{mac}");
    assert_eq!(
        field(&text, "ping"),
        "ok",
        "the gateway must answer ICMP echo"
    );
    assert_nothing_left(&dir.display().to_string(), &dir);
}

#[test]
fn tcp_and_udp_reach_the_hosts_loopback_through_vpnkits_host_address() {
    let tcp = servers::tcp_echo("127.0.0.1");
    let udp = servers::udp_echo("127.0.0.1");
    let script = format!(
        // `sleep 1` keeps socat from half-closing before the reply: gvproxy
        // would then close the connection both ways.
        "echo tcp=$( (echo via-tcp; sleep 1) | socat -t5 - TCP:{HOST}:{tcp}); \
         echo udp=$(echo via-udp | socat -t5 - UDP:{HOST}:{udp})"
    );
    let (dir, sd) = state_dir("vpnkit-tcp");
    let args = ["--net=vpnkit", &sd];
    let out = output_within(
        rootlesskit_vpnkit(&with_script(&args, &script), &[]),
        RUN_LIMIT,
    );
    let text = expect_success(&out);
    assert_eq!(field(&text, "tcp"), "reply: via-tcp", "{text}");
    assert_eq!(field(&text, "udp"), "reply: via-udp", "{text}");
    assert_nothing_left(&dir.display().to_string(), &dir);
}

/// The bytes of `seq 1 N`.
fn seq_bytes(n: u32) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect()
}

/// A one-connection-at-a-time HTTP/1.0 server on 127.0.0.1 for the bulk
/// test: `GET` answers with `body`, `POST` answers `same` or `differs` after
/// comparing the request body with `body`. Returns the port.
fn bulk_server(body: Vec<u8>, connections: usize) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((s, _)) = l.accept() else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut request = String::new();
            let mut length = 0usize;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if request.is_empty() {
                    request = line.clone();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut w = s;
            if request.starts_with("POST") {
                let mut got = vec![0u8; length];
                let verdict = match r.read_exact(&mut got) {
                    Ok(()) if got == body => "same",
                    _ => "differs",
                };
                let _ = write!(w, "HTTP/1.0 200 OK\r\n\r\n{verdict}");
            } else {
                let _ = write!(
                    w,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = w.write_all(&body);
            }
        }
    });
    port
}

#[test]
fn bulk_transfers_cross_the_pump_intact_both_ways() {
    // About 7 MB each way, checked byte for byte: the frame splitting and
    // batching must not lose, reorder or corrupt anything. (HTTP rather than
    // a bare stream: gvproxy closes both directions of a TCP connection as
    // soon as the guest half-closes one.)
    const N: u32 = 1_000_000;
    let port = bulk_server(seq_bytes(N), 2);
    let (dir, sd) = state_dir("vpnkit-bulk");
    let files = dir.parent().unwrap().display().to_string();
    let script = format!(
        "seq 1 {N} > {files}/up; tx=/sys/class/net/tap0/statistics/tx_packets; \
         before=$(cat $tx); \
         echo up=$(curl -sS -m 30 --data-binary @{files}/up http://{HOST}:{port}/); \
         echo tx=$(( $(cat $tx) - before )); \
         curl -sS -m 30 -o {files}/down http://{HOST}:{port}/; \
         echo down=$(seq 1 {N} | cmp - {files}/down && echo same)"
    );
    let out = output_within(
        rootlesskit_vpnkit(&with_script(&["--net=vpnkit", &sd], &script), &[]),
        RUN_LIMIT,
    );
    let text = expect_success(&out);
    assert_eq!(field(&text, "up"), "same", "{text}");
    assert_eq!(field(&text, "down"), "same", "{text}");
    // With TCP segmentation offload on the tap, the child's kernel hands
    // the pump super-packets: the 6.9 MB upload takes far fewer packets than
    // the ~4,800 MSS-sized frames vpnkit receives.
    let tx: u32 = field(&text, "tx").parse().unwrap();
    assert!(
        tx < 2500,
        "segmentation offload is off? {tx} packets: {text}"
    );
    assert_nothing_left(&dir.display().to_string(), &dir);
}

#[test]
fn dns_is_answered_by_vpnkit_and_forwarded_to_the_hosts_resolver() {
    // gvproxy answers host.containers.internal itself and forwards other
    // names to the nameservers of the host's /etc/resolv.conf: here a
    // dnsmasq on a loopback address of its own, seen through a resolv.conf
    // bind-mounted in a private mount namespace.
    let listen = "127.0.0.77";
    let name = format!("{}.test", marker("vpnkitdns"));
    let mut dnsmasq = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            &format!("--listen-address={listen}"),
            "--bind-interfaces",
            "--port=53",
            &format!("--address=/{name}/10.9.8.7"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting dnsmasq (package dnsmasq-base)");
    let result = std::panic::catch_unwind(|| {
        let tmp = user_temp_dir("vpnkit-dns");
        let resolv = tmp.join("resolv.conf");
        std::fs::write(&resolv, format!("nameserver {listen}\n")).unwrap();
        chmod(&resolv, 0o644);
        let script = format!(
            "echo local=$(getent ahostsv4 host.containers.internal | head -n1 | cut -d' ' -f1); \
             echo forwarded=$(getent ahostsv4 {name} | head -n1 | cut -d' ' -f1)"
        );
        let (dir, sd) = state_dir("vpnkit-dns");
        let args = ["--net=vpnkit", "--copy-up=/etc", &sd];
        let inner = rootlesskit_vpnkit(&with_script(&args, &script), &[]);
        let cmd = in_root_mount_ns(
            "private",
            &format!("mount --bind {} /etc/resolv.conf", resolv.display()),
            &inner,
        );
        let out = output_within(cmd, RUN_LIMIT);
        let text = expect_success(&out);
        assert_eq!(field(&text, "local"), HOST, "{text}");
        assert_eq!(field(&text, "forwarded"), "10.9.8.7", "{text}");
        assert_nothing_left(&dir.display().to_string(), &dir);
        let _ = std::fs::remove_dir_all(tmp);
    });
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn disable_host_loopback_and_mtu_reach_vpnkits_command_line() {
    let dir = user_temp_dir("vpnkit-args");
    let log = dir.join("shim.log");
    let log_env = log.to_str().unwrap();
    let sd = format!("--state-dir={}", dir.join("state").display());
    let out = output_within(
        rootlesskit_vpnkit(
            &with_script(
                &["--net=vpnkit", "--disable-host-loopback", "--mtu=4000", &sd],
                "cat /sys/class/net/tap0/mtu",
            ),
            &[("RK_VPNKIT_SHIM_LOG", log_env)],
        ),
        RUN_LIMIT,
    );
    assert_eq!(expect_success(&out).trim(), "4000");
    assert!(
        stderr(&out).contains("MTU other than 1500"),
        "no MTU warning:\n{}",
        stderr(&out)
    );
    let out = output_within(
        rootlesskit_vpnkit(
            &with_script(&["--net=vpnkit", &sd], "true"),
            &[("RK_VPNKIT_SHIM_LOG", log_env)],
        ),
        RUN_LIMIT,
    );
    expect_success(&out);
    let socket = dir.join("state/vpnkit-ethernet.sock");
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            format!(
                "vpnkit --ethernet {} --mtu 4000 --host-ip 0.0.0.0",
                socket.display()
            ),
            format!("vpnkit --ethernet {} --mtu 1500", socket.display()),
        ]
    );
    assert!(!socket.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn detached_netns_gets_the_tap_and_the_command_stays_outside() {
    let (dir, sd) = state_dir("vpnkit-detach");
    let tcp = servers::tcp_echo("127.0.0.1");
    let script = format!(
        "echo outside=$(ip -o link show tap0 2>/dev/null | wc -l); \
         n=$ROOTLESSKIT_STATE_DIR/netns; \
         echo inside=$(nsenter --net=$n ip -4 -o addr show tap0 | awk '{{print $4}}'); \
         echo tcp=$( (echo detached; sleep 1) | nsenter --net=$n socat -t5 - TCP:{HOST}:{tcp})"
    );
    let out = output_within(
        rootlesskit_vpnkit(
            &with_script(&["--net=vpnkit", "--detach-netns", &sd], &script),
            &[],
        ),
        RUN_LIMIT,
    );
    let text = expect_success(&out);
    assert_eq!(field(&text, "outside"), "0", "{text}");
    assert!(field(&text, "inside").starts_with("192.168.127."), "{text}");
    assert_eq!(field(&text, "tcp"), "reply: detached", "{text}");
    assert_nothing_left(&dir.display().to_string(), &dir);
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `rootlesskit --net=vpnkit ... -- sh -c 'echo ready; sleep 60'` and
/// returns it with the pids of its driver and of gvproxy.
fn start_long_run(sd: &str) -> (Child, mpsc::Receiver<Vec<u8>>, u32, u32) {
    let mut cmd = rootlesskit_vpnkit(
        &with_script(&["--net=vpnkit", sd], "echo ready; exec sleep 60"),
        &[],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let err = drain(child.stderr.take().unwrap());
    let mut buf = [0u8; 16];
    let n = stdout.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ready\n", "rootlesskit did not start CMD");
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    // setpriv execs, so the spawned pid is rootlesskit's.
    let driver = wait_for("rk-vpnkit", || child_named(child.id(), "rk-vpnkit"));
    let gvproxy = wait_for("gvproxy", || child_named(driver, "gvproxy"));
    (child, err, driver, gvproxy)
}

fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
            {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn vpnkit_dying_mid_run_is_reported_and_the_driver_exits() {
    let (dir, sd) = state_dir("vpnkit-die");
    let (mut child, err, driver, gvproxy) = start_long_run(&sd);
    // SAFETY: kill with a pid and a signal number.
    unsafe { libc::kill(gvproxy as libc::pid_t, libc::SIGKILL) };
    assert!(
        gone_within(driver, Duration::from_secs(5)),
        "the driver outlived vpnkit"
    );
    // The core reports it at once and keeps CMD running; end CMD.
    let cmd = child_named(child.id(), "sleep").expect("CMD is running");
    // SAFETY: as above.
    unsafe { libc::kill(cmd as libc::pid_t, libc::SIGKILL) };
    let status = child.wait().unwrap();
    let text =
        String::from_utf8_lossy(&err.recv_timeout(Duration::from_secs(10)).unwrap()).into_owned();
    assert!(!status.success());
    // A killed peer closes its socket, or resets it when our frames were
    // still unread in its buffer: both are reported, in these words.
    assert!(
        ["closed", "reset"].iter().any(|how| text.contains(&format!(
            "network driver vpnkit: the vpnkit connection ended: vpnkit {how} the connection"
        ))),
        "{text}"
    );
    assert!(text.contains("exited: signal: 9"), "{text}");
    assert_nothing_left(&dir.display().to_string(), &dir);
}

/// `(thread name, Seccomp mode, NoNewPrivs)` of each thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let get = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        out.push((get("Name:"), get("Seccomp:"), get("NoNewPrivs:")));
    }
    out.sort();
    out
}

#[test]
fn killing_rootlesskit_takes_the_driver_and_vpnkit_with_it() {
    let (dir, sd) = state_dir("vpnkit-kill");
    let (mut child, _err, driver, gvproxy) = start_long_run(&sd);
    // While it runs: no_new_privs everywhere, and both pump threads under
    // their seccomp filter (mode 2).
    let t = threads(driver);
    let pump: Vec<_> = t
        .iter()
        .filter(|(name, _, _)| name == "tap-to-vpnkit" || name == "vpnkit-to-tap")
        .collect();
    assert_eq!(pump.len(), 2, "{t:?}");
    assert!(pump.iter().all(|(_, seccomp, _)| seccomp == "2"), "{t:?}");
    assert!(t.iter().all(|(_, _, nnp)| nnp == "1"), "{t:?}");
    // SAFETY: kill with a pid and a signal number.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(
        gone_within(driver, Duration::from_secs(5)),
        "rk-vpnkit survived"
    );
    assert!(
        gone_within(gvproxy, Duration::from_secs(5)),
        "gvproxy survived"
    );
    assert_nothing_left(&dir.display().to_string(), &dir);
}

#[test]
fn a_peer_with_the_wrong_greeting_is_a_clear_error() {
    let bad = shim_dir("bad-handshake/vpnkit");
    let binary = format!("--vpnkit-binary={}", bad.join("vpnkit").display());
    let (dir, sd) = state_dir("vpnkit-bad");
    let out = output_within(
        rootlesskit(&with_script(&["--net=vpnkit", &binary, &sd], "echo ran")),
        RUN_LIMIT,
    );
    expect_failure(&out, "network driver vpnkit: vpnkit handshake on");
    expect_failure(&out, "does not speak the vpnkit ethernet protocol");
    expect_failure(&out, "\"HTTP/\"");
    assert!(!stdout(&out).contains("ran"), "CMD ran without a network");
    assert_nothing_left(&dir.display().to_string(), &dir);
}

#[test]
fn a_missing_vpnkit_binary_names_the_flag() {
    let (dir, sd) = state_dir("vpnkit-missing");
    let out = output_within(
        rootlesskit(&with_script(
            &["--net=vpnkit", "--vpnkit-binary=/nonexistent", &sd],
            "echo ran",
        )),
        RUN_LIMIT,
    );
    expect_failure(
        &out,
        "vpnkit binary /nonexistent not found (--vpnkit-binary)",
    );
    assert!(!stdout(&out).contains("ran"));
    assert_nothing_left(&dir.display().to_string(), &dir);
    // Without the shim, the default `vpnkit` is not on the test user's PATH.
    let (dir, sd) = state_dir("vpnkit-missing");
    let out = output_within(
        rootlesskit_with_env(
            &with_script(&["--net=vpnkit", &sd], "echo ran"),
            &[("PATH", "/usr/bin:/bin")],
        ),
        RUN_LIMIT,
    );
    expect_failure(
        &out,
        "vpnkit binary \"vpnkit\" not found in $PATH (--vpnkit-binary)",
    );
    assert_nothing_left(&dir.display().to_string(), &dir);
}

#[test]
fn unsupported_flags_are_refused_before_vpnkit_starts() {
    // The core refuses a flag the driver does not announce; the driver
    // itself refuses it as well (for other cores).
    for (flag, name) in [("--cidr=10.0.3.0/24", "--cidr"), ("--ipv6", "--ipv6")] {
        let dir = user_temp_dir("vpnkit-flags");
        let log = dir.join("shim.log");
        let sd = format!("--state-dir={}", dir.join("state").display());
        let out = output_within(
            rootlesskit_vpnkit(
                &with_script(&["--net=vpnkit", flag, &sd], "echo ran"),
                &[("RK_VPNKIT_SHIM_LOG", log.to_str().unwrap())],
            ),
            RUN_LIMIT,
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{flag}: {err}");
        assert!(
            err.contains(&format!("does not support {name}"))
                || err.contains(&format!("{name} is not supported by --net=vpnkit")),
            "{flag}: {err}"
        );
        assert!(!log.exists(), "{flag}: vpnkit was started");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Issue 11 point 4: with an empty or `.` entry in PATH, `execvp` would run
/// a `vpnkit` from the current directory. The driver looks programs up in
/// absolute PATH entries only.
#[test]
fn a_vpnkit_in_the_current_directory_is_never_run() {
    let cwd = user_temp_dir("vpnkit-cwd");
    chmod(&cwd, 0o755);
    let ran = cwd.join("ran");
    std::fs::write(
        cwd.join("vpnkit"),
        format!("#!/bin/sh\ntouch {}\nexit 1\n", ran.display()),
    )
    .unwrap();
    chmod(&cwd.join("vpnkit"), 0o755);
    chmod(&cwd, 0o777);
    for path in [":/usr/bin:/bin", ".:/usr/bin:/bin", "/usr/bin::/bin"] {
        let (dir, sd) = state_dir("vpnkit-cwd-run");
        let mut cmd = rootlesskit_with_env(
            &with_script(&["--net=vpnkit", &sd], "echo ran"),
            &[("PATH", path)],
        );
        cmd.current_dir(&cwd);
        let out = output_within(cmd, RUN_LIMIT);
        expect_failure(
            &out,
            "vpnkit binary \"vpnkit\" not found in $PATH (--vpnkit-binary)",
        );
        assert!(!ran.exists(), "PATH={path}: ./vpnkit was run");
        assert_nothing_left(&dir.display().to_string(), &dir);
    }
    let _ = std::fs::remove_dir_all(cwd);
}

/// Issue 11 point 8: when rootlesskit returns, the driver and vpnkit are
/// gone, reaped, not zombies waiting for init.
#[test]
fn nothing_of_the_driver_is_left_when_rootlesskit_returns() {
    let (dir, sd) = state_dir("vpnkit-reaped");
    let mut rk = rootlesskit_vpnkit(
        &with_script(&["--net=vpnkit", &sd], "echo ready; read x; true"),
        &[],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut buf = [0u8; 6];
    rk.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    let ours: Vec<(u32, String)> = descendants(rk.id())
        .into_iter()
        .filter(|(_, comm)| comm == "rk-vpnkit" || comm == "gvproxy")
        .collect();
    assert_eq!(ours.len(), 2, "driver and vpnkit expected: {ours:?}");
    drop(rk.stdin.take());
    let out = rk.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let left: Vec<&(u32, String)> = ours
        .iter()
        .filter(|(pid, _)| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    assert!(
        left.is_empty(),
        "still there after rootlesskit returned: {left:?}"
    );
    assert_nothing_left(&dir.display().to_string(), &dir);
}

/// Issue 13: the driver confines its whole process before the pump starts,
/// with a filter that kills it on any call outside its list. A run with
/// traffic and an orderly shutdown (stop the pump, kill and reap vpnkit)
/// must get through without one: the driver reports its shutdown, which
/// a SIGSYS would cut short, and rootlesskit exits 0.
#[test]
fn the_confined_driver_pumps_and_shuts_down_without_tripping_its_filter() {
    let (dir, sd) = state_dir("vpnkit-sandbox");
    let script = "ping -c2 -W5 192.168.127.1 >/dev/null && echo ping=ok";
    let args = ["--net=vpnkit", "--debug", &sd];
    let out = output_within(
        rootlesskit_vpnkit(&with_script(&args, script), &[]),
        RUN_LIMIT,
    );
    let text = expect_success(&out);
    assert_eq!(field(&text, "ping"), "ok", "{text}");
    let err = stderr(&out);
    assert!(
        err.contains("rk-vpnkit: debug: sandbox: seccomp on, no_new_privs on, landlock "),
        "the driver must report its confinement:\n{err}"
    );
    assert!(
        err.contains("driver sandbox: seccomp on"),
        "the core must show the driver's report:\n{err}"
    );
    assert!(
        err.contains("rk-vpnkit: debug: frames to vpnkit") && err.contains("killed and reaped"),
        "the confined driver's shutdown did not run to its end:\n{err}"
    );
    assert!(!err.contains("driver died"), "{err}");
    assert_nothing_left(&dir.display().to_string(), &dir);

    // RK_SANDBOX=off is the one switch that turns it off.
    let (dir, sd) = state_dir("vpnkit-sandbox-off");
    let args = ["--net=vpnkit", "--debug", &sd];
    let out = output_within(
        rootlesskit_vpnkit(&with_script(&args, "true"), &[("RK_SANDBOX", "off")]),
        RUN_LIMIT,
    );
    expect_success(&out);
    assert!(
        stderr(&out).contains("rk-vpnkit: debug: sandbox: seccomp off, no_new_privs off"),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&dir.display().to_string(), &dir);
}
