//! Port forwarding end to end: the builtin and slirp4netns port drivers
//! carrying real TCP and UDP from the host's loopback to servers inside, the
//! REST API on api.sock (with RootlessKit 2.0.2's own rootlessctl as a
//! client), rootlessctl's output, and bad input.

mod ports_support;

use ports_support::*;
use rk_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn builtin_forwards_tcp_and_udp_published_at_start() {
    let (t, u) = (free_port(), free_port());
    let args = with(
        SLIRP,
        &[
            "--port-driver=builtin",
            &format!("--publish=127.0.0.1:{t}:80/tcp"),
            &format!("--publish=127.0.0.1:{u}:90/udp"),
        ],
    );
    let s = Session::start(&refs(&args), ECHO_SERVERS);
    assert_eq!(tcp_roundtrip(loopback(t), "over tcp\n"), "over tcp\n");
    // Many connections in a row, and a larger transfer both ways.
    let big: String = "0123456789abcdef".repeat(64 * 1024);
    assert_eq!(tcp_roundtrip(loopback(t), &big).len(), big.len());
    for i in 0..20 {
        assert_eq!(
            tcp_roundtrip(loopback(t), &format!("n{i}")),
            format!("n{i}")
        );
    }
    assert_eq!(udp_roundtrip(loopback(u), "over udp"), "over udp");
    let list = String::from_utf8_lossy(&s.ctl(&["list-ports"]).stdout).into_owned();
    assert!(
        list.contains(&format!("1     tcp      127.0.0.1    {t}")),
        "{list}"
    );
    assert!(list.contains("udp"), "{list}");
    s.stop();
}

#[test]
fn rootlesskit_2_rootlessctl_drives_our_api() {
    let (t, u) = (free_port(), free_port());
    let args = with(SLIRP, &["--port-driver=builtin"]);
    let s = Session::start(&refs(&args), ECHO_SERVERS);
    let theirs = |a: &[&str]| s.ctl_with(THEIR_ROOTLESSCTL, a);
    let out = theirs(&[
        "add-ports",
        &format!("127.0.0.1:{t}:80/tcp"),
        &format!("127.0.0.1:{u}:90/udp"),
    ]);
    assert_eq!(expect_success(&out), "1\n2\n");
    assert_eq!(tcp_roundtrip(loopback(t), "theirs\n"), "theirs\n");
    assert_eq!(udp_roundtrip(loopback(u), "theirs udp"), "theirs udp");
    // The same table, printed the same way by both clients.
    let their_list = expect_success(&theirs(&["list-ports"]));
    let our_list = expect_success(&s.ctl(&["list-ports"]));
    assert_eq!(their_list, our_list);
    assert!(
        their_list.starts_with("ID    PROTO    PARENTIP "),
        "{their_list}"
    );
    assert_eq!(
        expect_success(&theirs(&["list-ports", "--json"])),
        expect_success(&s.ctl(&["list-ports", "--json"]))
    );
    assert_eq!(
        expect_success(&theirs(&["info", "--json"])),
        expect_success(&s.ctl(&["info", "--json"]))
    );
    assert_eq!(
        expect_success(&theirs(&["info"])),
        expect_success(&s.ctl(&["info"]))
    );
    let info: serde_json::Value =
        serde_json::from_str(&expect_success(&theirs(&["info", "--json"]))).unwrap();
    assert_eq!(info["apiVersion"], "1.1.1");
    assert_eq!(info["networkDriver"]["driver"], "slirp4netns");
    assert_eq!(info["networkDriver"]["childIP"], "10.0.2.100");
    assert_eq!(info["portDriver"]["driver"], "builtin");
    // Errors come back as RootlessKit's {"message"} and their client shows them.
    let dup = theirs(&["add-ports", &format!("127.0.0.1:{t}:81/tcp")]);
    expect_failure(&dup, "conflict with ID 1");
    expect_failure(&theirs(&["remove-ports", "42"]), "unknown id: 42");
    assert_eq!(expect_success(&theirs(&["remove-ports", "1"])), "1\n");
    assert!(
        try_tcp(loopback(t), "gone").is_err(),
        "port 1 still forwarded"
    );
    let list = expect_success(&theirs(&["list-ports"]));
    assert!(!list.contains("tcp "), "{list}");
    s.stop();
}

#[test]
fn builtin_family_matrix_tcp_tcp4_tcp6() {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let args = with(SLIRP, &["--port-driver=builtin"]);
    // A dual-stack echo inside, so that both 127.0.0.1 and ::1 targets answer.
    let s = Session::start(
        &refs(&args),
        "socat TCP6-LISTEN:80,fork,reuseaddr,ipv6only=0 EXEC:cat & ",
    );
    let add = |spec: String| expect_success(&s.ctl(&["add-ports", &spec]));
    add(format!("0.0.0.0:{}:80/tcp", ports[0]));
    add(format!("0.0.0.0:{}:80/tcp4", ports[1]));
    add(format!("[::]:{}:80/tcp6", ports[2]));
    add(format!("[::1]:{}:80/tcp6", ports[3]));
    // tcp on a wildcard listens on both families, as Go's net.Listen does.
    assert_eq!(tcp_roundtrip(loopback(ports[0]), "a"), "a");
    assert_eq!(tcp_roundtrip(loopback6(ports[0]), "b"), "b");
    assert_eq!(tcp_roundtrip(loopback(ports[1]), "c"), "c");
    assert!(
        try_tcp(loopback6(ports[1]), "x").is_err(),
        "tcp4 must not listen on ::1"
    );
    assert_eq!(tcp_roundtrip(loopback6(ports[2]), "d"), "d");
    assert!(
        try_tcp(loopback(ports[2]), "x").is_err(),
        "tcp6 must not listen on 127.0.0.1"
    );
    assert_eq!(tcp_roundtrip(loopback6(ports[3]), "e"), "e");
    s.stop();
}

#[test]
fn api_survives_junk_silent_clients_and_bad_requests() {
    let t = free_port();
    let args = with(SLIRP, &["--port-driver=builtin"]);
    let s = Session::start(&refs(&args), ECHO_SERVERS);
    // A client that connects and says nothing must not block the others.
    let silent = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
    let mut junk = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
    junk.write_all(b"\x00\x01garbage that is not HTTP\r\n\r\n")
        .unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    junk.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    for (body, why) in [
        (
            "{\"proto\":\"tcp\",\"parentPort\":0,\"childPort\":80}",
            "invalid ParentPort",
        ),
        (
            "{\"proto\":\"icmp\",\"parentPort\":1,\"childPort\":80}",
            "unknown proto",
        ),
        ("not json", "not a port spec"),
    ] {
        let mut c = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
        write!(
            c,
            "POST /v1/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        assert!(r.contains(why), "{why}: {r}");
    }
    let mut c = std::os::unix::net::UnixStream::connect(s.socket()).unwrap();
    c.write_all(b"GET /v1/nothing HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    // Still serving, and forwarding.
    assert_eq!(
        expect_success(&s.ctl(&["add-ports", &format!("127.0.0.1:{t}:80/tcp")])),
        "1\n"
    );
    assert_eq!(tcp_roundtrip(loopback(t), "still\n"), "still\n");
    drop(silent);
    let mode = std::fs::metadata(s.socket()).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(
        mode.unwrap(),
        0o600,
        "api.sock must be private to its owner"
    );
    s.stop();
}

#[test]
fn port_errors_are_clear_and_the_api_keeps_serving() {
    let t = free_port();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let args = with(SLIRP, &["--port-driver=builtin"]);
    let s = Session::start(&refs(&args), ECHO_SERVERS);
    expect_failure(
        &s.ctl(&["add-ports", &format!("127.0.0.1:{busy_port}:80/tcp")]),
        "address already in use",
    );
    expect_failure(
        &s.ctl(&["add-ports", "127.0.0.1:80:80/tcp"]),
        "cannot expose privileged port 80",
    );
    expect_failure(
        &s.ctl(&["add-ports", "127.0.0.1:8080:80"]),
        "missing /PROTO",
    );
    expect_failure(&s.ctl(&["remove-ports", "42"]), "unknown id: 42");
    expect_failure(&s.ctl(&["remove-ports", "x"]), "invalid syntax");
    // The failed attempts used no id.
    assert_eq!(
        expect_success(&s.ctl(&["add-ports", &format!("127.0.0.1:{t}:80/tcp")])),
        "1\n"
    );
    assert_eq!(tcp_roundtrip(loopback(t), "ok\n"), "ok\n");
    s.stop();
}

#[test]
fn bad_port_flags_fail_before_anything_starts() {
    ensure_relay();
    let m = marker("badport");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--net=slirp4netns", "--publish=127.0.0.1:8080:80/tcp"],
            "needs a port driver",
        ),
        (&["--port-driver=builtin"], "--net=host"),
        (
            &["--net=slirp4netns", "--port-driver=implicit"],
            "--port-driver=implicit is not one of none, builtin, slirp4netns",
        ),
        (
            &["--net=none", "--port-driver=slirp4netns"],
            "--net=none has none",
        ),
        (
            &[
                "--net=slirp4netns",
                "--port-driver=builtin",
                "--publish=127.0.0.1:x:80/tcp",
            ],
            "not a number",
        ),
        (
            &[
                "--net=slirp4netns",
                "--port-driver=builtin",
                "--publish=127.0.0.1:8080:80/tcp",
                "--publish=127.0.0.1:8080:81/tcp",
            ],
            "published twice",
        ),
        (
            &["--net=slirp4netns", "--port-driver=bogus"],
            "is not one of",
        ),
    ];
    for (args, needle) in cases {
        let mut all = args.to_vec();
        all.extend(["--", "true", &m]);
        let out = rootlesskit(&all).output().unwrap();
        expect_failure(&out, needle);
    }
    // A port in use at start fails the start, and leaves nothing behind.
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = format!(
        "--publish=127.0.0.1:{}:80/tcp",
        busy.local_addr().unwrap().port()
    );
    let out = rootlesskit(&[
        "--net=slirp4netns",
        "--port-driver=builtin",
        &p,
        "--",
        "sleep",
        "30",
        &m,
    ])
    .output()
    .unwrap();
    expect_failure(&out, "failed to expose port");
    assert!(wait_until_gone(&m, 5).is_empty());
}

#[test]
fn builtin_works_with_net_none() {
    let t = free_port();
    let p = format!("--publish=127.0.0.1:{t}:80/tcp");
    let s = Session::start(&["--net=none", "--port-driver=builtin", &p], ECHO_SERVERS);
    assert_eq!(tcp_roundtrip(loopback(t), "none\n"), "none\n");
    let info: serde_json::Value =
        serde_json::from_str(&expect_success(&s.ctl(&["info", "--json"]))).unwrap();
    assert!(info.get("networkDriver").is_none(), "{info}");
    s.stop();
}

#[test]
fn stale_state_dir_after_kill_9_still_serves_the_api() {
    let t = free_port();
    let args = with(
        SLIRP,
        &[
            "--port-driver=builtin",
            &format!("--publish=127.0.0.1:{t}:80/tcp"),
        ],
    );
    let first = Session::start(&refs(&args), ECHO_SERVERS);
    assert_eq!(tcp_roundtrip(loopback(t), "1\n"), "1\n");
    let state = first.state.clone();
    let mut first = first;
    // SAFETY: killing our own child.
    unsafe { libc::kill(first.child.id() as i32, libc::SIGKILL) };
    let _ = first.child.wait();
    assert!(wait_until_gone(&first.marker, 5).is_empty());
    assert!(wait_until_gone(&format!("--state-dir={}", state.display()), 5).is_empty());
    assert!(
        state.join("api.sock").exists(),
        "kill -9 leaves the socket (the test needs it stale)"
    );
    // The same state dir again: the stale socket is replaced.
    let again = Session::start_in(&state, &refs(&args), ECHO_SERVERS, &[]);
    assert_eq!(tcp_roundtrip(loopback(t), "2\n"), "2\n");
    assert!(expect_success(&again.ctl(&["list-ports"])).contains(&t.to_string()));
    again.stop();
}

#[test]
fn rootlessctl_needs_a_socket_and_says_so() {
    let out = as_test_user(bin_dir().join("rootlessctl").to_str().unwrap())
        .arg("list-ports")
        .env_remove("ROOTLESSKIT_STATE_DIR")
        .output()
        .unwrap();
    expect_failure(
        &out,
        "please specify --socket or set $ROOTLESSKIT_STATE_DIR",
    );
    let out = as_test_user(bin_dir().join("rootlessctl").to_str().unwrap())
        .args(["--socket=/nonexistent/api.sock", "info"])
        .output()
        .unwrap();
    expect_failure(&out, "/nonexistent/api.sock");
}

#[test]
fn rootlessctl_inside_uses_rootlesskit_state_dir() {
    ensure_relay();
    let ctl = bin_dir().join("rootlessctl");
    let out = expect_success(&run_sh(
        &["--net=none", "--port-driver=builtin"],
        &format!("{} info; {} list-ports", ctl.display(), ctl.display()),
    ));
    assert!(out.contains("- Port Driver: builtin"), "{out}");
    assert!(out.contains("ID    PROTO"), "{out}");
}

#[test]
fn slirp4netns_port_driver_forwards_tcp_and_udp() {
    let (t, u) = (free_port(), free_port());
    let args = with(
        // UDP answers are lost with --disable-host-loopback (libslirp drops
        // the guest's datagrams to 10.0.2.2; RootlessKit 2.0.2 alike).
        &["--net=slirp4netns", "--copy-up=/etc"],
        &[
            "--port-driver=slirp4netns",
            &format!("--publish=127.0.0.1:{t}:80/tcp"),
        ],
    );
    let s = Session::start(&refs(&args), ECHO_SERVERS);
    assert_eq!(tcp_roundtrip(loopback(t), "via slirp\n"), "via slirp\n");
    assert_eq!(
        expect_success(&s.ctl(&["add-ports", &format!("127.0.0.1:{u}:90/udp")])),
        "2\n"
    );
    assert_eq!(udp_roundtrip(loopback(u), "slirp udp"), "slirp udp");
    let info: serde_json::Value =
        serde_json::from_str(&expect_success(&s.ctl(&["info", "--json"]))).unwrap();
    assert_eq!(info["portDriver"]["driver"], "slirp4netns");
    assert_eq!(info["portDriver"]["disallowLoopbackChildIP"], true);
    assert_eq!(
        info["portDriver"]["protos"],
        serde_json::json!(["tcp", "tcp4", "udp", "udp4"])
    );
    // What slirp4netns cannot do is refused clearly.
    expect_failure(
        &s.ctl(&["add-ports", "[::1]:9999:80/tcp6"]),
        "unsupported protocol",
    );
    expect_failure(
        &s.ctl(&["add-ports", "127.0.0.1:9998:127.0.0.1:80/tcp"]),
        "loopback child IP",
    );
    assert_eq!(expect_success(&s.ctl(&["remove-ports", "1"])), "1\n");
    assert!(
        try_tcp(loopback(t), "gone").is_err(),
        "removed forward still answers"
    );
    s.stop();
}

#[test]
fn builtin_works_with_pasta() {
    let t = free_port();
    let p = format!("--publish=127.0.0.1:{t}:80/tcp");
    let s = Session::start(
        &[
            "--net=pasta",
            "--copy-up=/etc",
            "--disable-host-loopback",
            "--port-driver=builtin",
            &p,
        ],
        ECHO_SERVERS,
    );
    assert_eq!(tcp_roundtrip(loopback(t), "over pasta\n"), "over pasta\n");
    s.stop();
}

/// What a server answers a client bound to `from` (socat on the host).
fn ask_from(proto: &str, from: &str, to: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("socat")
            .args(["-t2", "-T3", "-", &format!("{proto}:{to},bind={from}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(b"who am i\n")?;
                c.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !text.is_empty() {
            return text;
        }
        assert!(Instant::now() < deadline, "no {proto} answer from {to}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Servers inside that answer with the address they see.
const PEER_SERVERS: &str = "socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo $SOCAT_PEERADDR' & \
     socat UDP-LISTEN:90,fork,reuseaddr SYSTEM:'echo $SOCAT_PEERADDR' & ";

#[test]
fn servers_inside_see_the_clients_address() {
    let (t, u) = (free_port(), free_port());
    let args = with(
        SLIRP,
        &[
            "--port-driver=builtin",
            &format!("--publish=0.0.0.0:{t}:80/tcp4"),
            &format!("--publish=0.0.0.0:{u}:90/udp4"),
        ],
    );
    let s = Session::start(&refs(&args), PEER_SERVERS);
    assert_eq!(ask_from("TCP4", "127.0.0.7", loopback(t)), "127.0.0.7");
    assert_eq!(ask_from("UDP4", "127.0.0.9", loopback(u)), "127.0.0.9");
    // A client that is not on loopback (lxcbr0's 10.0.3.1, made by
    // .ci/setup-host): IP_TRANSPARENT inside plus a route back to it.
    let bridge = |port| SocketAddr::from(([10, 0, 3, 1], port));
    assert_eq!(ask_from("TCP4", "10.0.3.1", bridge(t)), "10.0.3.1");
    assert_eq!(ask_from("UDP4", "10.0.3.1", bridge(u)), "10.0.3.1");
    // Again, after the first connection's route was taken down.
    assert_eq!(ask_from("TCP4", "10.0.3.1", bridge(t)), "10.0.3.1");
    s.stop();
    // And without: the relay's own address.
    let mut args = args;
    args.push("--source-ip-transparent=false".into());
    let s = Session::start(&refs(&args), PEER_SERVERS);
    assert_eq!(ask_from("TCP4", "127.0.0.7", loopback(t)), "127.0.0.1");
    s.stop();
}

/// An echo server inside that holds many connections (asyncio, one process).
const MANY_ECHO: &str = "python3 -c '
import asyncio, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def echo(r, w):
    while True:
        d = await r.read(4096)
        if not d:
            break
        w.write(d)
        await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(echo, \"127.0.0.1\", 80, backlog=4096)
    await s.serve_forever()
asyncio.run(main())
' & ";

fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

#[test]
fn ten_thousand_concurrent_tcp_connections_through_builtin() {
    const N: usize = 10_000;
    let limit = raise_nofile();
    assert!(
        limit as usize > N + 500,
        "the test needs {N} descriptors, the limit is {limit}"
    );
    let t = free_port();
    let p = format!("--publish=127.0.0.1:{t}:80/tcp");
    let s = Session::start(&["--net=none", "--port-driver=builtin", &p], MANY_ECHO);
    assert_eq!(tcp_roundtrip(loopback(t), "warm-up"), "warm-up");
    let started = Instant::now();
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let c = TcpStream::connect(loopback(t)).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        conns.push(c);
    }
    // Every one of them open at once, and each carries its own bytes.
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("{i:05}").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(&buf, format!("{i:05}").as_bytes());
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(45),
        "{N} connections took {took:?}"
    );
    drop(conns);
    // Still serving afterwards.
    assert_eq!(tcp_roundtrip(loopback(t), "after"), "after");
    eprintln!("{N} concurrent connections: {took:?}");
    s.stop();
}

#[test]
fn beyond_the_cap_new_connections_are_refused_and_old_ones_kept() {
    // 8 workers of 40 connections each: 320 at most.
    const CAP: usize = 320;
    raise_nofile();
    let t = free_port();
    let p = format!("--publish=127.0.0.1:{t}:80/tcp");
    let s = Session::start_in(
        &state_dir("ports"),
        &["--net=none", "--port-driver=builtin", &p],
        MANY_ECHO,
        &[("ROOTLESSKIT_PORT_CONNECTIONS_PER_WORKER", "40")],
    );
    assert_eq!(tcp_roundtrip(loopback(t), "warm-up"), "warm-up");
    let echo = |c: &mut TcpStream, text: &[u8]| -> std::io::Result<Vec<u8>> {
        c.write_all(text)?;
        let mut buf = vec![0u8; text.len()];
        c.read_exact(&mut buf)?;
        Ok(buf)
    };
    let mut kept = Vec::new();
    for i in 0..CAP {
        let mut c = TcpStream::connect(loopback(t)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let got = echo(&mut c, b"held");
        assert!(
            matches!(&got, Ok(b) if b == b"held"),
            "connection {i}: {got:?}"
        );
        kept.push(c);
    }
    // Past the cap: refused at once (reset or closed), not left hanging.
    for i in 0..10 {
        let mut c = TcpStream::connect(loopback(t)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let got = echo(&mut c, b"more");
        assert!(got.is_err(), "connection {i} past the cap was served");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refusal took {:?}",
            started.elapsed()
        );
    }
    // The ones already open still work.
    for c in kept.iter_mut().step_by(16) {
        assert_eq!(echo(c, b"still").unwrap(), b"still");
    }
    // Room again once some close.
    kept.truncate(CAP - 20);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tcp_roundtrip(loopback(t), "room"), "room");
    drop(kept);
    s.stop();
}

#[test]
fn builtin_with_detach_netns_relays_into_the_detached_namespace() {
    let t = free_port();
    let p = format!("--publish=127.0.0.1:{t}:80/tcp");
    let args = with(SLIRP, &["--detach-netns", "--port-driver=builtin", &p]);
    // CMD stays in the host's network; the server runs in the detached one.
    let s = Session::start(
        &refs(&args),
        "nsenter --net=$ROOTLESSKIT_STATE_DIR/netns socat TCP-LISTEN:80,fork,reuseaddr EXEC:cat & ",
    );
    assert_eq!(tcp_roundtrip(loopback(t), "detached\n"), "detached\n");
    s.stop();
}

#[test]
fn a_killed_relay_worker_is_replaced_and_ports_keep_working() {
    let (t, u) = (free_port(), free_port());
    let args = with(
        SLIRP,
        &[
            "--port-driver=builtin",
            &format!("--publish=127.0.0.1:{t}:80/tcp"),
            &format!("--publish=127.0.0.1:{u}:90/udp"),
        ],
    );
    let s = Session::start(&refs(&args), ECHO_SERVERS);
    assert_eq!(tcp_roundtrip(loopback(t), "before\n"), "before\n");
    let workers = processes_matching(&format!("--state-dir={}", s.state.display()));
    let workers: Vec<u32> = workers
        .iter()
        .filter(|(_, cmd)| cmd.contains(&format!("/{RELAY} ")))
        .map(|(pid, _)| *pid)
        .collect();
    assert_eq!(workers.len(), 1, "{workers:?}");
    // SAFETY: killing a process of the test user's session.
    unsafe { libc::kill(workers[0] as i32, libc::SIGKILL) };
    assert_eq!(tcp_roundtrip(loopback(t), "after\n"), "after\n");
    assert_eq!(udp_roundtrip(loopback(u), "after udp"), "after udp");
    let out = s.stop();
    assert!(
        stderr(&out).contains("port relay worker"),
        "the replacement is reported: {}",
        stderr(&out)
    );
}

/// Two servers inside on port 80 that say which loopback they were reached on.
const V4_AND_V6_SERVERS: &str =
    "socat TCP4-LISTEN:80,bind=127.0.0.1,fork,reuseaddr SYSTEM:'echo v4' & \
     socat TCP6-LISTEN:80,bind=[::1],ipv6only=1,fork,reuseaddr SYSTEM:'echo v6' & ";

/// docs/port-forwarding.md: with parent `::` and no child IP, builtin dials
/// `::1` inside, as RootlessKit ≥ 2.3.2 (3.x) does (it dials the parent IP
/// `::` itself, which Linux delivers to ::1), where 2.0.2 dials 127.0.0.1.
/// Both measured here: ours, and RootlessKit 2.0.2 with the same servers.
#[test]
fn builtin_parent_v6_wildcard_without_child_ip_goes_to_v6_loopback() {
    let (p, q, r) = (free_port(), free_port(), free_port());
    let args = with(SLIRP, &["--port-driver=builtin"]);
    let s = Session::start(&refs(&args), V4_AND_V6_SERVERS);
    for spec in [
        format!("[::]:{p}:80/tcp"),
        format!("0.0.0.0:{q}:80/tcp"),
        format!("[::1]:{r}:80/tcp6"),
    ] {
        expect_success(&s.ctl(&["add-ports", &spec]));
    }
    let ask = |addr| tcp_roundtrip(addr, "").trim().to_owned();
    // `::` (dual stack on the host): IPv6 loopback inside, from either family.
    assert_eq!(ask(loopback6(p)), "v6");
    assert_eq!(ask(loopback(p)), "v6");
    // `0.0.0.0`: 127.0.0.1 (both versions); a specific parent IP: itself.
    assert_eq!(ask(loopback(q)), "v4");
    assert_eq!(ask(loopback6(r)), "v6");
    s.stop();

    // RootlessKit 2.0.2: 127.0.0.1 whatever the parent IP.
    let state = state_dir("ports-theirs");
    let m = marker("ports-theirs");
    let mut theirs = as_test_user("/opt/rk-peers/rootlesskit/usr/bin/rootlesskit")
        .args([
            &format!("--state-dir={}", state.display()),
            "--pidns",
            "--net=slirp4netns",
            "--disable-host-loopback",
            "--port-driver=builtin",
            "--",
            "sh",
            "-c",
            &format!("{V4_AND_V6_SERVERS} sleep 30; : {m}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = state.join("api.sock");
    let ctl = |a: &[&str]| {
        let mut c = as_test_user(THEIR_ROOTLESSCTL);
        c.arg(format!("--socket={}", socket.display()));
        c.args(a);
        c.output().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctl(&["info"]).status.success() {
        assert!(Instant::now() < deadline, "RootlessKit 2.0.2 did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_success(&ctl(&["add-ports", &format!("[::]:{p}:80/tcp")]));
    let answer = ask(loopback6(p));
    let _ = theirs.kill();
    let _ = theirs.wait();
    assert!(wait_until_gone(&m, 5).is_empty());
    assert_eq!(answer, "v4");
}

/// The builtin relay's processes under the session's rootlesskit.
fn relay_pids(s: &Session) -> Vec<u32> {
    processes_matching(&format!("--state-dir={}", s.state.display()))
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(&format!("/{RELAY} ")))
        .map(|(pid, _)| pid)
        .collect()
}

/// (Seccomp, NoNewPrivs) of every task of `pid`.
fn task_modes(pid: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let field = |k: &str| -> u32 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(99)
        };
        out.push((field("Seccomp:"), field("NoNewPrivs:")));
    }
    out
}

#[test]
fn builtin_relay_is_its_own_confined_executable_also_when_started_late() {
    let t = free_port();
    let p = format!("--publish=127.0.0.1:{t}:80/tcp");
    let s = Session::start_in(
        &state_dir("ports"),
        &["--net=none", "--port-driver=builtin", &p],
        MANY_ECHO,
        &[("ROOTLESSKIT_PORT_CONNECTIONS_PER_WORKER", "4")],
    );
    assert_eq!(tcp_roundtrip(loopback(t), "first\n"), "first\n");
    let first = relay_pids(&s);
    assert_eq!(first.len(), 1, "one relay at start: {first:?}");
    // Busy (3 of 4) makes the confined parent start a second worker: it
    // must still be able to exec the relay and the relay to join the
    // namespaces under the parent's filter.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(loopback(t)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            c
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay_pids(&s).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        relay_pids(&s).len() >= 2,
        "no second relay worker: {:?}",
        relay_pids(&s)
    );
    // Every relay and rootlesskit itself: seccomp filter and no_new_privs
    // on every task.
    let mut pids = relay_pids(&s);
    pids.push(s.child.id());
    std::thread::sleep(Duration::from_millis(200));
    for pid in pids {
        let modes = task_modes(pid);
        assert!(!modes.is_empty());
        assert!(
            modes.iter().all(|m| *m == (2, 1)),
            "pid {pid}: (Seccomp, NoNewPrivs) per task: {modes:?}"
        );
    }
    drop(held);
    assert_eq!(tcp_roundtrip(loopback(t), "after\n"), "after\n");
    s.stop();
}

#[test]
fn builtin_without_its_relay_fails_naming_the_file_and_the_package() {
    // rootlesskit alone in a directory, nothing on the search path.
    let dir = user_temp_dir("lone-rootlesskit");
    link_or_copy(&bin_dir().join("rootlesskit"), &dir.join("rootlesskit"));
    chmod(&dir.join("rootlesskit"), 0o755);
    let env = [("PATH", "/usr/bin:/bin"), ("ROOTLESSKIT_DRIVER_PATH", "")];
    let m = marker("no-relay");
    let lone = dir.join("rootlesskit");
    let run = |args: &[&str]| {
        as_test_user_with_env(lone.to_str().unwrap(), &env)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["--net=none", "--port-driver=builtin", "--", "true", &m]);
    expect_failure(&out, RELAY);
    expect_failure(&out, "package rootlesskit-rs");
    expect_failure(&out, "--port-driver=none");
    // Without --port-driver=builtin nothing of the relay is needed.
    let out = run(&["--net=none", "--port-driver=none", "--", "true", &m]);
    expect_success(&out);
}

#[test]
fn the_relay_is_not_a_network_driver_and_says_what_it_is() {
    ensure_relay();
    let out = rootlesskit(&["--list-drivers"]).output().unwrap();
    let listed = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !listed.contains(RELAY),
        "--list-drivers lists the relay: {listed}"
    );
    let out = as_test_user(bin_dir().join(RELAY).to_str().unwrap())
        .env_remove("RK_DRIVER_FD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("rootlesskit starts it"),
        "{}",
        stderr(&out)
    );
}
