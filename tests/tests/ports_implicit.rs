//! `--port-driver=implicit` (pasta forwards every port bound inside) with
//! the clients of a port driver: Docker 20.10's `rootlesskit-docker-proxy`
//! (from Debian 12's RootlessKit 1.1.0 package) run as Docker runs it, with
//! Docker's real `docker-proxy` behind it, and rootlessctl.
//!
//! The proxy asks `GET /v1/info`, then `POST /v1/ports` with the same port
//! on both sides, then starts `docker-proxy` inside on `127.0.0.1:PORT`,
//! and on SIGINT stops it and calls `DELETE /v1/ports/ID`. Traffic goes
//! from the host's loopback through pasta's forwarding (rk-pasta's with
//! Debian 12's pasta) and docker-proxy to a server inside.

mod ports_support;

use ports_support::*;
use rk_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the reference programs are unpacked (see .ci/setup-host).
const PROXY_1_1: &[&str] = &[
    "/opt/rk-peers/bookworm/rootlesskit/usr/bin/rootlesskit-docker-proxy",
    "/opt/rk-peers/rootlesskit-1.1.0/usr/bin/rootlesskit-docker-proxy",
    // Where tests/docker/run unpacks it.
    "/var/cache/rk-docker-test/rootlesskit/usr/bin/rootlesskit-docker-proxy",
];
const PROXY_2_0: &str = "/opt/rk-peers/rootlesskit/usr/bin/rootlesskit-docker-proxy";
const DOCKER_PROXY: &[&str] = &[
    "/opt/rk-peers/bookworm/docker.io/usr/sbin/docker-proxy",
    "/opt/rk-peers/docker.io/usr/sbin/docker-proxy",
    "/usr/sbin/docker-proxy",
    "/usr/bin/docker-proxy",
];

fn first_existing(candidates: &[&str], what: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{what} not found in {candidates:?}: unpack it there as root \
                 (apt-get download rootlesskit docker.io; dpkg-deb -x DEB DIR), \
                 or run tests/docker/run once"
            )
        })
}

const PASTA_IMPLICIT: &[&str] = &[
    "--net=pasta",
    "--copy-up=/etc",
    "--disable-host-loopback",
    "--port-driver=implicit",
];

/// Waits for `path` to hold a line (the proxy's answer on its fd 3).
fn wait_for_file(path: &Path, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.contains('\n') {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nothing in {} after {secs} s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `ID`s of `rootlessctl list-ports --json`, with their specs.
fn listed(s: &Session) -> Vec<serde_json::Value> {
    let out = expect_success(&s.ctl(&["list-ports", "--json"]));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn docker_proxy_publishes_ports_through_pasta() {
    let proxy = first_existing(PROXY_1_1, "rootlesskit-docker-proxy 1.1.0");
    let docker_proxy = first_existing(DOCKER_PROXY, "docker-proxy");
    let (t, u, n, r, v) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    // What dockerd does for `docker run -p T:9000 -p U:9001/udp`, with
    // echo servers standing in for the container (on the namespace's
    // loopback), and for `-p 127.0.0.1:R:9000`, which pasta cannot honour.
    // A newer proxy (RootlessKit 2.0.2's) skips the API for implicit and
    // runs docker-proxy on the host IP Docker gave.
    let script = format!(
        "D=$ROOTLESSKIT_STATE_DIR/..; export PATH={dp}:$PATH; \
         socat TCP-LISTEN:9000,bind=127.0.0.1,fork,reuseaddr EXEC:cat & \
         socat UDP-LISTEN:9001,bind=127.0.0.1,fork,reuseaddr EXEC:cat & \
         sleep 0.2; \
         {proxy} -container-ip 127.0.0.1 -container-port 9000 -host-ip 0.0.0.0 -host-port {t} -proto tcp 3>$D/sig-t & PT=$!; \
         {proxy} -container-ip 127.0.0.1 -container-port 9001 -host-ip 0.0.0.0 -host-port {u} -proto udp 3>$D/sig-u & PU=$!; \
         {proxy} -container-ip 127.0.0.1 -container-port 9000 -host-ip :: -host-port {v} -proto tcp 3>$D/sig-v & PV=$!; \
         {proxy2} -container-ip 127.0.0.1 -container-port 9000 -host-ip 0.0.0.0 -host-port {n} -proto tcp 3>$D/sig-n & PN=$!; \
         {proxy} -container-ip 127.0.0.1 -container-port 9000 -host-ip 127.0.0.1 -host-port {r} -proto tcp 3>$D/sig-r 2>/dev/null; \
         i=0; while [ ! -e $D/stop ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
         kill -INT $PT $PU $PV $PN; wait $PT $PU $PV; echo $? > $D/stopped; ",
        dp = docker_proxy.parent().unwrap().display(),
        proxy = proxy.display(),
        proxy2 = PROXY_2_0,
    );
    let s = Session::start(PASTA_IMPLICIT, &script);
    let dir = s.state.parent().unwrap().to_path_buf();
    // docker-proxy writes "0\n" once it listens; an error is "1\n" + text.
    assert_eq!(wait_for_file(&dir.join("sig-t"), 20), "0\n");
    assert_eq!(wait_for_file(&dir.join("sig-u"), 20), "0\n");
    assert_eq!(wait_for_file(&dir.join("sig-n"), 20), "0\n");
    assert_eq!(wait_for_file(&dir.join("sig-v"), 20), "0\n");
    let refused = wait_for_file(&dir.join("sig-r"), 20);
    assert!(
        refused.starts_with("1\n") && refused.contains("not only on 127.0.0.1"),
        "{refused:?}"
    );
    // The proxy's requests are in the table, as it made them.
    let ports = listed(&s);
    assert_eq!(ports.len(), 3, "{ports:?}");
    let tcp = ports.iter().find(|p| p["spec"]["proto"] == "tcp4").unwrap();
    assert_eq!(tcp["spec"]["parentIP"], "0.0.0.0");
    assert_eq!(tcp["spec"]["parentPort"], t);
    assert_eq!(tcp["spec"]["childIP"], "127.0.0.1");
    assert_eq!(tcp["spec"]["childPort"], t);
    assert!(ports.iter().any(|p| p["spec"]["proto"] == "udp4"));
    let tcp6 = ports.iter().find(|p| p["spec"]["proto"] == "tcp6").unwrap();
    assert_eq!(tcp6["spec"]["parentIP"], "::");
    assert_eq!(tcp6["spec"]["childIP"], "::1");
    // Host loopback -> pasta -> docker-proxy inside -> the server.
    assert_eq!(
        tcp_roundtrip(loopback(t), "via docker-proxy\n"),
        "via docker-proxy\n"
    );
    assert_eq!(
        udp_roundtrip(loopback(u), "udp via docker-proxy"),
        "udp via docker-proxy"
    );
    // IPv6 (`-p [::]:V:9000`): docker-proxy listens on [::1]:V inside.
    assert_eq!(tcp_roundtrip(loopback6(v), "over ipv6\n"), "over ipv6\n");
    assert_eq!(
        tcp_roundtrip(loopback(n), "via the 2.0 proxy\n"),
        "via the 2.0 proxy\n"
    );
    // `docker stop`: the proxies get SIGINT and remove their ports.
    std::fs::write(dir.join("stop"), "").unwrap();
    assert_eq!(wait_for_file(&dir.join("stopped"), 20), "0\n");
    assert_eq!(listed(&s).len(), 0);
    // And pasta stops forwarding once nothing listens inside.
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_tcp(loopback(t), "gone").is_ok_and(|a| !a.is_empty()) {
        assert!(Instant::now() < deadline, "port {t} still answers");
        std::thread::sleep(Duration::from_millis(200));
    }
    s.stop();
}

#[test]
fn implicit_lists_records_and_refuses_what_pasta_cannot_do() {
    let s = Session::start(PASTA_IMPLICIT, "");
    let info: serde_json::Value =
        serde_json::from_str(&expect_success(&s.ctl(&["info", "--json"]))).unwrap();
    assert_eq!(info["portDriver"]["driver"], "implicit");
    assert_eq!(
        info["portDriver"]["protos"],
        serde_json::json!(["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"])
    );
    assert_eq!(info["networkDriver"]["driver"], "pasta");
    let p = free_port();
    // An empty table first, then what is added, until it is removed.
    assert!(listed(&s).is_empty());
    assert_eq!(
        expect_success(&s.ctl(&["add-ports", &format!("0.0.0.0:{p}:{p}/tcp")])),
        "1\n"
    );
    assert_eq!(
        expect_success(&s.ctl(&["add-ports", &format!("[::]:{p}:[::1]:{p}/udp6")])),
        "2\n"
    );
    let table = expect_success(&s.ctl(&["list-ports"]));
    assert!(
        table.contains(&format!("1     tcp      0.0.0.0     {p}")),
        "{table}"
    );
    expect_failure(
        &s.ctl(&["add-ports", &format!("0.0.0.0:{p}:{p}/tcp")]),
        "conflict with ID 1",
    );
    // What pasta cannot do, on a port not in the table.
    let q = free_port();
    for (spec, why) in [
        (
            format!("0.0.0.0:{q}:80/tcp"),
            "publish the same number on both sides",
        ),
        (format!("127.0.0.1:{q}:{q}/tcp"), "not only on 127.0.0.1"),
        (
            format!("0.0.0.0:{q}:10.0.2.100:{q}/tcp"),
            "cannot be pointed at 10.0.2.100",
        ),
        ("0.0.0.0:80:80/tcp".to_owned(), "privileged port 80"),
    ] {
        expect_failure(&s.ctl(&["add-ports", &spec]), why);
    }
    assert_eq!(
        expect_success(&s.ctl(&["remove-ports", "1", "2"])),
        "1\n2\n"
    );
    assert!(listed(&s).is_empty());
    s.stop();
}

#[test]
fn publish_at_start_with_implicit_is_recorded_or_refused_before_cmd() {
    let p = free_port();
    let publish = format!("--publish=0.0.0.0:{p}:{p}/tcp");
    let mut args = PASTA_IMPLICIT.to_vec();
    args.push(&publish);
    let s = Session::start(&args, "");
    let ports = listed(&s);
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["spec"]["parentPort"], p);
    s.stop();
    // A spec pasta cannot honour stops the start, naming why.
    let m = marker("implicit-p");
    let bad = format!("--publish=127.0.0.1:{p}:80/tcp");
    let mut args = PASTA_IMPLICIT.to_vec();
    args.extend([bad.as_str(), "--", "true", &m]);
    let out = rootlesskit(&args).output().unwrap();
    expect_failure(&out, "not to 80: publish the same number on both sides");
    assert!(wait_until_gone(&m, 5).is_empty());
}
