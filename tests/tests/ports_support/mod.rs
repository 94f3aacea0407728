//! Helpers shared by the port-forwarding tests (ports.rs, ports_api.rs,
//! ports_implicit.rs): a rootlesskit session with its API socket, round
//! trips over TCP and UDP, free ports.

#![allow(dead_code)]

use rk_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

pub const THEIR_ROOTLESSCTL: &str = "/opt/rk-peers/rootlesskit/usr/bin/rootlessctl";

/// TCP echo on port 80 and UDP echo on port 90, inside.
pub const ECHO_SERVERS: &str = "socat TCP-LISTEN:80,fork,reuseaddr EXEC:cat & \
     socat UDP-LISTEN:90,fork,reuseaddr EXEC:cat & ";

/// A free port on the host's loopback (for both TCP and UDP).
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("::1", port)).is_ok()
        {
            return port;
        }
    }
}

/// A state dir to be: `state` in a fresh temporary directory that the test
/// user may write to, sticky so that rootlesskit accepts it as a parent.
pub fn state_dir(tag: &str) -> PathBuf {
    let dir = user_temp_dir(tag);
    chmod(&dir, 0o1777);
    dir.join("state")
}

/// A rootlesskit running CMD in the background, with its state dir known.
pub struct Session {
    pub child: Child,
    pub state: PathBuf,
    pub marker: String,
}

impl Session {
    pub fn start(args: &[&str], script: &str) -> Session {
        Session::start_in(&state_dir("ports"), args, script, &[])
    }

    pub fn socket(&self) -> PathBuf {
        self.state.join("api.sock")
    }

    pub fn wait_for_api(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.state.join("child_pid").exists() {
            if Instant::now() > deadline || self.child.try_wait().unwrap().is_some() {
                let out = wait_output(&mut self.child, Duration::from_secs(1));
                panic!(
                    "rootlesskit did not start ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `rootlessctl --socket API ARGS` with the given binary, as the test user.
    pub fn ctl_with(&self, binary: &str, args: &[&str]) -> Output {
        let mut c = as_test_user(binary);
        c.arg(format!("--socket={}", self.socket().display()));
        c.args(args);
        c.output().expect("running rootlessctl")
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_with(bin_dir().join("rootlessctl").to_str().unwrap(), args)
    }

    /// Stops rootlesskit (SIGTERM goes to CMD) and checks nothing is left.
    pub fn stop(mut self) -> Output {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let out = wait_output(&mut self.child, Duration::from_secs(10));
        let left = wait_until_gone(&self.marker, 5);
        assert!(left.is_empty(), "left running: {left:?}");
        let workers = wait_until_gone(&format!("--state-dir={}", self.state.display()), 5);
        assert!(workers.is_empty(), "workers left running: {workers:?}");
        assert!(!self.socket().exists(), "api.sock left behind");
        out
    }
}

pub fn wait_output(child: &mut Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout,
        stderr,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a line over TCP and returns what comes back, retrying while the
/// server inside is still starting.
pub fn tcp_roundtrip(addr: SocketAddr, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_tcp(addr, text) {
            Ok(s) if !s.is_empty() => return s,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no TCP answer from {addr}: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

pub fn try_tcp(addr: SocketAddr, text: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(text.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub fn udp_roundtrip(addr: SocketAddr, text: &str) -> String {
    let bind = if addr.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    loop {
        s.send_to(text.as_bytes(), addr).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(Instant::now() < deadline, "no UDP answer from {addr}");
    }
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn loopback6(port: u16) -> SocketAddr {
    "[::1]:0"
        .parse::<SocketAddr>()
        .map(|mut a| {
            a.set_port(port);
            a
        })
        .unwrap()
}

pub const SLIRP: &[&str] = &[
    "--net=slirp4netns",
    "--disable-host-loopback",
    "--copy-up=/etc",
];

pub fn with(base: &[&str], extra: &[&str]) -> Vec<String> {
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

pub fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl Session {
    /// Like [`Session::start`] with a given state dir.
    pub fn start_in(state: &Path, args: &[&str], script: &str, env: &[(&str, &str)]) -> Session {
        ensure_relay();
        let _ = std::fs::remove_file(state.join("child_pid"));
        let marker = marker("ports");
        // --pidns: the servers started in the background die with CMD.
        let mut all: Vec<String> =
            vec![format!("--state-dir={}", state.display()), "--pidns".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(["--".into(), "sh".into(), "-c".into()]);
        all.push(format!("{script} sleep 60; : {marker}"));
        let r: Vec<&str> = all.iter().map(String::as_str).collect();
        let child = rootlesskit_with_env(&r, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut s = Session {
            child,
            state: state.to_path_buf(),
            marker,
        };
        s.wait_for_api();
        s
    }
}

/// The builtin port driver's relay executable.
pub const RELAY: &str = "rootlesskit-port-builtin";

/// Puts the relay next to the tests' copy of rootlesskit (where discovery
/// finds it), if the harness did not copy it there.
pub fn ensure_relay() {
    let to = bin_dir().join(RELAY);
    if to.is_file() {
        return;
    }
    let from = std::env::var("RK_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
                .join("debug")
        })
        .join(RELAY);
    assert!(
        from.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        from.display()
    );
    // Copy then rename: tests run in parallel threads.
    let tmp = bin_dir().join(format!("{RELAY}.{:?}", std::thread::current().id()));
    std::fs::copy(&from, &tmp).unwrap();
    chmod(&tmp, 0o755);
    std::fs::rename(&tmp, &to).unwrap();
}
