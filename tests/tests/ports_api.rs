//! The REST API on api.sock under hostile clients of the same user: idle
//! connections, connections that trickle a request a byte at a time,
//! clients that pipeline requests and never read the answers. The owner's
//! requests (rootlessctl) must keep succeeding promptly, and the parent's
//! descriptors and memory must stay bounded. Also: the answers RootlessKit
//! 2.0.2 gives that clients may depend on (`null` for no ports).

mod ports_support;

use ports_support::*;
use rk_tests::*;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const THEIR_ROOTLESSKIT: &str = "/opt/rk-peers/rootlesskit/usr/bin/rootlesskit";

/// The request the tricklers send, one byte per tick.
const TRICKLED: &[u8] = b"POST /v1/ports HTTP/1.1\r\nHost: rootlesskit\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{\"proto\":\"tcp\",\"parentIP\":\"127.0.0.1\",\"parentPort\":1,\"childPort\":1}";

/// One hostile connection.
enum Kind {
    /// Connects and says nothing.
    Idle,
    /// Sends one byte of a request per tick, never finishing in time.
    Trickle,
    /// Writes requests as fast as the server takes them, never reads.
    Pipeline,
}

struct Hostile {
    kind: Kind,
    stream: Option<UnixStream>,
    sent: usize,
}

/// Keeps `idle + trickle + pipeline` hostile connections open to `socket`
/// on a thread until dropped, reopening each one the server closes.
struct Attack {
    stop: Arc<AtomicBool>,
    reopened: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Attack {
    fn start(socket: &Path, idle: usize, trickle: usize, pipeline: usize) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let reopened = Arc::new(AtomicUsize::new(0));
        let socket = socket.to_path_buf();
        let mut conns: Vec<Hostile> = Vec::new();
        for (n, kind) in [(idle, 0), (trickle, 1), (pipeline, 2)] {
            for _ in 0..n {
                conns.push(Hostile {
                    kind: match kind {
                        0 => Kind::Idle,
                        1 => Kind::Trickle,
                        _ => Kind::Pipeline,
                    },
                    stream: None,
                    sent: 0,
                });
            }
        }
        // All of them open before the test goes on.
        for c in &mut conns {
            c.stream = open(&socket);
            assert!(c.stream.is_some(), "cannot connect to {}", socket.display());
        }
        let thread = {
            let (stop, reopened) = (stop.clone(), reopened.clone());
            std::thread::spawn(move || {
                // Bounded: the test stops it, and it gives up after 120 s.
                let end = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    for c in &mut conns {
                        if tick(c, &socket) {
                            reopened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Attack {
            stop,
            reopened,
            thread: Some(thread),
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(socket: &Path) -> Option<UnixStream> {
    let s = UnixStream::connect(socket).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// True when the server had closed it and it was reopened.
fn tick(c: &mut Hostile, socket: &Path) -> bool {
    let Some(s) = c.stream.as_mut() else {
        c.stream = open(socket);
        c.sent = 0;
        return c.stream.is_some();
    };
    // Whatever the server sent is read only to see whether it closed;
    // the pipeliner never reads.
    let mut closed = false;
    if !matches!(c.kind, Kind::Pipeline) {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => closed = true,
        }
    }
    if !closed {
        let wrote = match c.kind {
            Kind::Idle => Ok(0),
            Kind::Trickle => {
                let byte = TRICKLED[c.sent % TRICKLED.len()];
                s.write(&[byte])
            }
            Kind::Pipeline => {
                s.write(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/ports HTTP/1.1\r\nHost: x\r\n\r\n")
            }
        };
        match wrote {
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => closed = true,
        }
    }
    if closed {
        c.stream = open(socket);
        c.sent = 0;
        return true;
    }
    false
}

/// Open descriptors and resident memory (KiB) of a process.
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// Runs rootlessctl and returns its stdout and how long it took.
fn timed(s: &Session, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let out = s.ctl(args);
    let took = started.elapsed();
    (expect_success(&out), took)
}

#[test]
fn idle_trickling_and_pipelining_clients_cannot_lock_the_api() {
    let s = Session::start(&["--net=none", "--port-driver=builtin"], "");
    let pid = s.child.id();
    let (fds_before, rss_before) = fds_and_rss(pid);
    let attack = Attack::start(&s.socket(), 64, 16, 4);
    // Long enough for the server's own deadlines to pass and the attacker
    // to reconnect: every request of the owner is answered, quickly.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut peak = (0, 0);
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(12) {
        let port = free_port();
        let (id, took) = timed(&s, &["add-ports", &format!("127.0.0.1:{port}:80/tcp")]);
        worst = worst.max(took);
        assert!(took < Duration::from_secs(2), "add-ports took {took:?}");
        let (list, took) = timed(&s, &["list-ports"]);
        worst = worst.max(took);
        assert!(took < Duration::from_secs(2), "list-ports took {took:?}");
        assert!(list.contains(&port.to_string()), "{list}");
        let (_, took) = timed(&s, &["remove-ports", id.trim()]);
        worst = worst.max(took);
        assert!(took < Duration::from_secs(2), "remove-ports took {took:?}");
        let now = fds_and_rss(pid);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        rounds += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let reopened = attack.reopened.load(Ordering::Relaxed);
    drop(attack);
    eprintln!(
        "{rounds} rounds under attack, slowest call {worst:?}; attacker reconnected {reopened} times; \
         parent fds {fds_before} -> peak {}, RSS {rss_before} KiB -> peak {} KiB",
        peak.0, peak.1
    );
    // The tricklers' requests never complete: the server closes them by
    // its deadline, however many bytes they send.
    assert!(reopened >= 16, "tricklers were never cut off ({reopened})");
    // A bounded number of connections held at once, and bounded memory.
    assert!(
        peak.0 <= fds_before + 70,
        "descriptors grew from {fds_before} to {}",
        peak.0
    );
    assert!(
        peak.1 <= rss_before + 8 * 1024,
        "resident memory grew from {rss_before} KiB to {} KiB",
        peak.1
    );
    // And everything is let go once the clients are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds_and_rss(pid).0 > fds_before + 2 {
        assert!(
            Instant::now() < deadline,
            "connections still held: {} fds, {fds_before} before",
            fds_and_rss(pid).0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.stop();
}

#[test]
fn a_trickled_request_is_cut_off_by_its_deadline() {
    let s = Session::start(&["--net=none", "--port-driver=builtin"], "");
    let mut c = UnixStream::connect(s.socket()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // One byte every 200 ms: the request would take 20 s to arrive.
    for byte in TRICKLED.iter().cycle().take(100) {
        if c.write_all(&[*byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        took < Duration::from_secs(10),
        "a trickling client kept its connection for {took:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    eprintln!("trickled request cut off after {took:?}");
    s.stop();
}

/// `GET /v1/ports` over a raw connection: the body.
fn get_ports(socket: &Path) -> String {
    let mut c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /v1/ports HTTP/1.1\r\nHost: rootlesskit\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    r.split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never answered",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn no_ports_is_null_as_in_rootlesskit() {
    // What RootlessKit 2.0.2 itself answers, measured here.
    let state: PathBuf = state_dir("ports-null");
    let m = marker("ports-null");
    let mut theirs = as_test_user(THEIR_ROOTLESSKIT)
        .args([
            &format!("--state-dir={}", state.display()),
            // 2.0.2 has no --net=none; --pidns: nothing outlives it.
            "--pidns",
            "--net=slirp4netns",
            "--port-driver=builtin",
            "--",
            "sh",
            "-c",
            &format!("sleep 30; : {m}"),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_socket(&state.join("api.sock"));
    let their_body = get_ports(&state.join("api.sock"));
    let _ = theirs.kill();
    let _ = theirs.wait();
    assert!(wait_until_gone(&m, 5).is_empty());
    assert_eq!(their_body, "null");
    // Ours: the same, before any port and after the last one is removed.
    let s = Session::start(&["--net=none", "--port-driver=builtin"], "");
    assert_eq!(get_ports(&s.socket()), "null");
    let port = free_port();
    expect_success(&s.ctl(&["add-ports", &format!("127.0.0.1:{port}:80/tcp")]));
    assert!(get_ports(&s.socket()).starts_with("[{\"id\":1,"));
    expect_success(&s.ctl(&["remove-ports", "1"]));
    assert_eq!(get_ports(&s.socket()), "null");
    // Both clients read it as an empty table.
    let ours = expect_success(&s.ctl(&["list-ports"]));
    let their_ctl = expect_success(&s.ctl_with(THEIR_ROOTLESSCTL, &["list-ports"]));
    assert_eq!(ours, their_ctl);
    s.stop();
}
