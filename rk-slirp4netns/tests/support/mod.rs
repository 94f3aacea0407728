//! A minimal core for driving `rk-slirp4netns` in tests: namespaces held by
//! a sleeping process, and the driver started on a protocol socket.

#![allow(dead_code)]

use rk_driver::{
    Channel, ConfigureRequest, CoreMessage, DriverInfo, DriverMessage, NetworkConfig,
    DRIVER_FD_ENV, PROTOCOL_VERSION,
};
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A user id and group id to run as; `None` means the test's own.
pub type Owner = Option<(u32, u32)>;

/// The unprivileged identity for tests that must not run as root: `nobody`
/// when the tests run as root, else the tests' own user.
pub fn unprivileged() -> Owner {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } == 0).then_some((65534, 65534))
}

fn ids(owner: Owner) -> (u32, u32) {
    // SAFETY: geteuid and getegid have no preconditions.
    owner.unwrap_or_else(|| unsafe { (libc::geteuid(), libc::getegid()) })
}

/// A sleeping process in a new user and network namespace, with its root
/// mapped to `owner`, like rootlesskit's child.
pub struct Namespaces {
    holder: Child,
    pub userns: File,
    pub netns: File,
}

impl Namespaces {
    pub fn new(owner: Owner) -> Self {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        // SAFETY: unshare and prctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let holder = cmd.spawn().expect("creating a user and network namespace");
        let pid = holder.id();
        let (uid, gid) = ids(owner);
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1")).unwrap();
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").unwrap();
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1")).unwrap();
        Namespaces {
            userns: File::open(format!("/proc/{pid}/ns/user")).unwrap(),
            netns: File::open(format!("/proc/{pid}/ns/net")).unwrap(),
            holder,
        }
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// A second network namespace in the same user namespace, held by its
    /// own process, like `--detach-netns`.
    pub fn detached_netns(&self) -> Holder {
        let userns = self.userns.as_raw_fd();
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        // SAFETY: setns, unshare and prctl are async-signal-safe; `userns`
        // stays open while `self` lives.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::setns(userns, libc::CLONE_NEWUSER) != 0
                    || libc::unshare(libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = cmd.spawn().expect("creating a second network namespace");
        let netns = File::open(format!("/proc/{}/ns/net", child.id())).unwrap();
        Holder { child, netns }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

pub struct Holder {
    child: Child,
    pub netns: File,
}

impl Holder {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Network interfaces of the network namespace `pid` is in.
/// The nameservers of a driver's answer, as text.
pub fn dns_strings(config: &NetworkConfig) -> Vec<String> {
    config.dns.iter().map(ToString::to_string).collect()
}

pub fn interfaces(pid: u32) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    text.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The driver binary, copied where `owner` can run it.
fn driver_exe(owner: Owner) -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_rk-slirp4netns"));
    if owner.is_none() {
        return built;
    }
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        remove_copies_of_finished_runs();
        let dir = std::env::temp_dir().join(format!("{COPY_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("rk-slirp4netns");
        std::fs::copy(&built, &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    })
    .clone()
}

/// Spawns `cmd`, retrying while the kernel says ETXTBSY: a test thread that
/// forks while another copies the binary holds a writable descriptor of the
/// copy until its child execs.
fn spawn_retrying_busy_text(cmd: &mut Command) -> Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            result => return result.expect("starting rk-slirp4netns"),
        }
    }
    panic!("starting rk-slirp4netns: text file busy for a second");
}

const COPY_PREFIX: &str = "rk-s4-tests-";

/// Copies are per test process (`rk-s4-tests-PID`); those of processes
/// that are gone are removed.
fn remove_copies_of_finished_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(COPY_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A running driver and the core's end of its socket.
pub struct DriverProcess {
    child: Child,
    channel: Option<Channel>,
}

impl DriverProcess {
    pub fn start(owner: Owner) -> Self {
        Self::start_with(owner, false)
    }

    /// `debug` sets `RK_DRIVER_DEBUG=1`. The driver's stderr is collected.
    pub fn start_with(owner: Owner, debug: bool) -> Self {
        let (ours, theirs) = Channel::pair().unwrap();
        let fd = theirs.as_fd().as_raw_fd();
        let mut cmd = Command::new(driver_exe(owner));
        cmd.env(DRIVER_FD_ENV, fd.to_string())
            .env_remove("RK_DRIVER_DEBUG")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if debug {
            cmd.env("RK_DRIVER_DEBUG", "1");
        }
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        // `fd` is open until `theirs` drops after spawn.
        rk_driver::process::keep_across_exec(&mut cmd, vec![fd]);
        let child = spawn_retrying_busy_text(&mut cmd);
        drop(theirs);
        DriverProcess {
            child,
            channel: Some(ours),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn channel(&self) -> &Channel {
        self.channel.as_ref().expect("channel still open")
    }

    pub fn hello(&self) -> DriverInfo {
        self.channel()
            .send(
                &CoreMessage::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    core_version: "test".into(),
                },
                &[],
            )
            .unwrap();
        match self.recv(Duration::from_secs(10)) {
            DriverMessage::Hello {
                protocol_version,
                info,
            } => {
                assert_eq!(protocol_version, PROTOCOL_VERSION);
                info
            }
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// Hello, then configure with the namespaces; returns the answer.
    pub fn configure(
        &self,
        request: ConfigureRequest,
        userns: &File,
        netns: &File,
    ) -> DriverMessage {
        self.hello();
        self.channel()
            .send(
                &CoreMessage::Configure(request),
                &[userns.as_fd(), netns.as_fd()],
            )
            .unwrap();
        self.recv(Duration::from_secs(30))
    }

    /// Like [`configure`](Self::configure) but expects success.
    pub fn configured(
        &self,
        request: ConfigureRequest,
        userns: &File,
        netns: &File,
    ) -> NetworkConfig {
        match self.configure(request, userns, netns) {
            DriverMessage::Configured(config) => config,
            other => panic!("expected configured, got {other:?}"),
        }
    }

    /// Like [`configure`](Self::configure) but expects an error message.
    pub fn refused(&self, request: ConfigureRequest, userns: &File, netns: &File) -> String {
        match self.configure(request, userns, netns) {
            DriverMessage::Error { message } => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    pub fn recv(&self, timeout: Duration) -> DriverMessage {
        self.channel().recv(Some(timeout)).unwrap().0
    }

    /// Closes the core's end, as a core that exits does.
    pub fn hang_up(&mut self) {
        self.channel = None;
    }

    /// Everything the driver (and what it started) wrote to stderr; call
    /// once it has exited.
    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut text).unwrap();
        }
        text
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The slirp4netns the driver started.
    pub fn slirp4netns(&self) -> Process {
        let me = self.pid();
        let found: Vec<Process> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .map(Process)
            .filter(|p| {
                p.stat()
                    .is_some_and(|(comm, _, ppid)| ppid == me && comm == "slirp4netns")
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "slirp4netns children of the driver: {found:?}"
        );
        found[0]
    }
}

impl Drop for DriverProcess {
    /// Hangs up like a core that exits, so the driver stops and reaps
    /// slirp4netns itself; kills it only if it lingers.
    fn drop(&mut self) {
        self.hang_up();
        if self.wait_exit(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A process by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process(pub u32);

impl Process {
    /// (comm, state, ppid)
    fn stat(&self) -> Option<(String, char, u32)> {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).ok()?;
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text[open + 1..close].to_owned();
        let mut rest = text[close + 1..].split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        Some((comm, state, ppid))
    }

    pub fn alive(&self) -> bool {
        self.stat()
            .is_some_and(|(_, state, _)| state != 'Z' && state != 'X')
    }

    pub fn args(&self) -> Vec<String> {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    pub fn status_field(&self, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.0)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    /// Waits until the process is gone (or a zombie nobody waits for yet).
    pub fn gone_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        !self.alive()
    }

    pub fn kill(&self) {
        // SAFETY: sending a signal to a pid.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}

/// Configures the interface inside `pid`'s namespaces the way the core
/// would, then connects from there to a listener on the host's 127.0.0.1
/// through the gateway: proves that slirp4netns forwards traffic. Runs as
/// `owner`, the namespace's root, so that capabilities survive the exec.
pub fn assert_reaches_host_loopback(owner: Owner, pid: u32, config: &NetworkConfig) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dev = &config.interface;
    let gateway = config.gateway4.unwrap();
    let script = format!(
        "ip link set lo up && ip link set {dev} mtu {mtu} up && \
         ip addr add {addr} dev {dev} && ip route add default via {gateway} && \
         exec 3<>/dev/tcp/{gateway}/{port} && echo through-slirp4netns >&3",
        mtu = config.mtu,
        addr = config.ipv4.unwrap(),
    );
    let mut nsenter = Command::new("nsenter");
    nsenter
        .args([
            "--target",
            &pid.to_string(),
            "--user",
            "--net",
            "--preserve-credentials",
        ])
        .args(["bash", "-c", &script]);
    if let Some((uid, gid)) = owner {
        nsenter.uid(uid).gid(gid);
    }
    let status = nsenter.status().expect("running nsenter");
    assert!(
        status.success(),
        "configuring and connecting inside: {status}"
    );
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut conn, _) = loop {
        match listener.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("no connection through slirp4netns: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "through-slirp4netns\n");
}

pub fn request() -> ConfigureRequest {
    ConfigureRequest {
        child_pid: 0,
        state_dir: std::env::temp_dir().display().to_string(),
        ..Default::default()
    }
}

pub fn with_options(mut request: ConfigureRequest, pairs: &[(&str, &str)]) -> ConfigureRequest {
    for (k, v) in pairs {
        request.options.insert(k.to_string(), v.to_string());
    }
    request
}
