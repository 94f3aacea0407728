//! A fake core for testing a network driver without rootlesskit
//! (feature `testing`).
//!
//! [`FakeCore`] starts a driver binary the way the core does (its own
//! process group, the protocol socket at `RK_DRIVER_FD`, the parent-death
//! signal) and speaks the protocol to it; every step checks what
//! docs/driver-protocol.md requires and returns a [`Violation`] naming the
//! rule when the driver breaks it. [`Namespaces`] makes the child's user
//! and network namespaces to configure. [`Suite`] runs the whole
//! conformance suite; the workspace's own drivers and the Python example
//! pass it (`tests/tests/conformance.rs`).
//!
//! ```no_run
//! // In a test of the driver's crate: env!("CARGO_BIN_EXE_rk-mydriver").
//! let suite = rk_driver::testing::Suite::new("target/debug/rk-mydriver");
//! suite.assert_conformant();
//! ```

mod checks;
mod exit;
mod namespaces;
mod procs;
mod suite;

pub use checks::{check_answer, check_hello};
pub use namespaces::Namespaces;
pub use suite::Suite;

use procs::{describe, in_process_group, note_descendants, start_time};

use crate::protocol::*;
use crate::Channel;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the fake core waits for a hello, as the core does.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the fake core waits for the answer to `configure` (the core
/// waits 120 s; a test should not).
pub const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(60);
/// What a loaded test machine may add to [`SHUTDOWN_GRACE_MS`] before a
/// driver's exit counts as late.
pub const SCHEDULING_ALLOWANCE: Duration = Duration::from_millis(250);

/// A user to run the driver as (and to own the namespaces): as root, the
/// tests should use an unprivileged one, as rootlesskit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// A rule of the protocol the driver broke, or a set-up step of the test
/// that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

impl Violation {
    fn setup(what: String) -> Violation {
        Violation(format!("test set-up: {what}"))
    }
}

/// How a driver ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub status: ExitStatus,
    /// From the request to stop (shutdown, EOF) or the last message to the
    /// driver's exit.
    pub took: Duration,
}

/// A driver process and the core's end of its socket.
pub struct FakeCore {
    path: PathBuf,
    name: String,
    child: Child,
    pidfd: OwnedFd,
    channel: Option<Channel>,
    stderr: Arc<Mutex<Vec<u8>>>,
    state_dir: PathBuf,
    /// Descendants of the driver seen while it ran: (pid, start time),
    /// sampled by a watcher thread and at each step.
    seen: Arc<Mutex<Vec<(u32, u64)>>>,
    /// Ends the watcher thread when dropped.
    _watching: std::sync::mpsc::Sender<()>,
}

impl FakeCore {
    /// Starts the driver at `path` as `run_as` with extra environment.
    pub fn start(
        path: &Path,
        run_as: Option<RunAs>,
        env: &[(String, String)],
    ) -> Result<FakeCore, Violation> {
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let name = file
            .strip_prefix("rk-")
            .ok_or_else(|| Violation(format!("{file:?} is not named rk-NAME (section 2)")))?
            .to_owned();
        let state_dir = make_state_dir(&name, run_as)?;
        let (mut cmd, ours, theirs) = Channel::driver_command(path)
            .map_err(|e| Violation::setup(format!("socketpair: {e}")))?;
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_as_user(&mut cmd, run_as);
        let mut child = spawn_retrying_busy_text(&mut cmd)
            .map_err(|e| Violation::setup(format!("starting {}: {e}", path.display())))?;
        drop(theirs);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            collect(pipe, stderr.clone());
        }
        let pidfd = crate::process::pidfd_open(child.id())
            .map_err(|e| Violation::setup(format!("pidfd_open: {e}")))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (watching, stop) = std::sync::mpsc::channel();
        let (root, into) = (child.id(), seen.clone());
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stop.recv_timeout(Duration::from_millis(20))
            {
                note_descendants(root, &into);
            }
        });
        Ok(FakeCore {
            path: path.to_owned(),
            name,
            child,
            pidfd,
            channel: Some(ours),
            stderr,
            state_dir,
            seen,
            _watching: watching,
        })
    }

    /// NAME of `rk-NAME`: what the driver must call itself.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The state directory made for this driver (removed on drop).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// What the driver wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    fn channel(&self) -> Result<&Channel, Violation> {
        self.channel
            .as_ref()
            .ok_or_else(|| Violation("the fake core already hung up".into()))
    }

    fn fail(&self, what: String) -> Violation {
        let out = self.output();
        let out = out.trim_end();
        if out.is_empty() {
            Violation(format!("{}: {what}", self.path.display()))
        } else {
            Violation(format!(
                "{}: {what}\n--- its output ---\n{out}",
                self.path.display()
            ))
        }
    }

    /// Sends a message with descriptors.
    pub fn send(&self, msg: &CoreMessage, fds: &[BorrowedFd<'_>]) -> Result<(), Violation> {
        self.channel()?
            .send(msg, fds)
            .map_err(|e| self.fail(format!("sending {msg:?}: {e}")))
    }

    /// Sends bytes as they are (to test how a driver takes garbage).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), Violation> {
        self.channel()?
            .send_raw(bytes, &[])
            .map_err(|e| self.fail(format!("sending raw bytes: {e}")))
    }

    /// The driver's next message; a decode error is a violation.
    pub fn recv(&mut self, timeout: Duration, when: &str) -> Result<DriverMessage, Violation> {
        self.recv_or_eof(timeout, when)?
            .ok_or_else(|| self.fail(format!("{when}: the driver closed the socket")))
    }

    /// Like [`recv`](Self::recv), with `None` for EOF (the driver exited
    /// or closed the socket).
    pub fn recv_or_eof(
        &mut self,
        timeout: Duration,
        when: &str,
    ) -> Result<Option<DriverMessage>, Violation> {
        self.note_descendants();
        match self.channel()?.recv::<DriverMessage>(Some(timeout)) {
            Ok((m, fds)) if fds.is_empty() => Ok(Some(m)),
            Ok((m, fds)) => Err(self.fail(format!(
                "{when}: {m:?} carried {} descriptors; driver messages carry none (section 6)",
                fds.len()
            ))),
            Err(crate::ChannelError::Closed) => Ok(None),
            Err(e) => Err(self.fail(format!("{when}: {e}"))),
        }
    }

    /// Sends the core's hello (`protocol_version` as given) and returns
    /// the driver's, checked with [`check_hello`].
    pub fn hello_with_version(&mut self, protocol_version: u32) -> Result<DriverInfo, Violation> {
        self.send(
            &CoreMessage::Hello {
                protocol_version,
                core_version: "rk-driver-testing".into(),
            },
            &[],
        )?;
        match self.recv(HELLO_TIMEOUT, "answering hello")? {
            DriverMessage::Hello {
                protocol_version,
                info,
            } => {
                if protocol_version != PROTOCOL_VERSION {
                    return Err(self.fail(format!(
                        "answered hello with protocol_version {protocol_version}, expected {PROTOCOL_VERSION} (section 8)"
                    )));
                }
                check_hello(&self.name, &info).map_err(|v| self.fail(v.0))?;
                Ok(info)
            }
            other => Err(self.fail(format!(
                "answered hello with {other:?}, expected hello (section 7)"
            ))),
        }
    }

    /// [`hello_with_version`](Self::hello_with_version) with this crate's
    /// version.
    pub fn hello(&mut self) -> Result<DriverInfo, Violation> {
        self.hello_with_version(PROTOCOL_VERSION)
    }

    /// Sends `configure` for `ns` (filling in `child_pid` and `state_dir`)
    /// and returns the answer as it is.
    pub fn configure(
        &mut self,
        request: &ConfigureRequest,
        ns: &Namespaces,
    ) -> Result<DriverMessage, Violation> {
        let request = self.complete(request, ns);
        self.send(
            &CoreMessage::Configure(request),
            &[ns.userns.as_fd(), ns.netns.as_fd()],
        )?;
        self.recv(CONFIGURE_TIMEOUT, "answering configure")
    }

    fn complete(&self, request: &ConfigureRequest, ns: &Namespaces) -> ConfigureRequest {
        ConfigureRequest {
            child_pid: ns.pid() as i32,
            state_dir: self.state_dir.to_string_lossy().into_owned(),
            ..request.clone()
        }
    }

    /// `configure` that must succeed: the answer is checked with
    /// [`check_answer`], and its interface must exist in `ns`.
    pub fn configured(
        &mut self,
        request: &ConfigureRequest,
        ns: &Namespaces,
    ) -> Result<NetworkConfig, Violation> {
        let cfg = match self.configure(request, ns)? {
            DriverMessage::Configured(cfg) => cfg,
            DriverMessage::Error { message } => {
                return Err(self.fail(format!("refused configure: {message}")))
            }
            other => {
                return Err(self.fail(format!("answered configure with {other:?} (section 7)")))
            }
        };
        check_answer(&self.complete(request, ns), &cfg).map_err(|v| self.fail(v.0))?;
        let present = ns.interfaces()?;
        if !present.contains(&cfg.interface) {
            return Err(self.fail(format!(
                "answered interface {:?}, but the namespace has only {present:?} (section 6.4: it MUST exist when configured is sent)",
                cfg.interface
            )));
        }
        Ok(cfg)
    }

    /// `configure` that must be refused: returns the `error` message.
    pub fn refused(
        &mut self,
        request: &ConfigureRequest,
        ns: &Namespaces,
    ) -> Result<String, Violation> {
        match self.configure(request, ns)? {
            DriverMessage::Error { message } if !message.trim().is_empty() => Ok(message),
            other => Err(self.fail(format!(
                "answered {other:?}; expected an error with a message (sections 6.3, 6.5)"
            ))),
        }
    }
}

/// Makes `cmd` run as `run_as` (nothing for `None`).
fn run_as_user(cmd: &mut Command, run_as: Option<RunAs>) {
    if let Some(who) = run_as {
        cmd.uid(who.uid).gid(who.gid);
    }
}

/// The documented grace plus the allowance for a loaded machine.
pub fn grace() -> Duration {
    Duration::from_millis(SHUTDOWN_GRACE_MS.into()) + SCHEDULING_ALLOWANCE
}

fn make_state_dir(name: &str, run_as: Option<RunAs>) -> Result<PathBuf, Violation> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "rk-driver-testing-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Violation::setup(format!("creating {}: {e}", dir.display())))?;
    if let Some(who) = run_as {
        std::os::unix::fs::chown(&dir, Some(who.uid), Some(who.gid))
            .map_err(|e| Violation::setup(format!("chown {}: {e}", dir.display())))?;
    }
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    Ok(dir)
}

/// Reads `pipe` to its end into `into`, on a thread of its own.
fn collect(mut pipe: Box<dyn Read + Send>, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]);
        }
    });
}

/// Spawns `cmd`, retrying while the kernel says ETXTBSY (another test
/// thread forked while a copy of the binary was still open for writing).
fn spawn_retrying_busy_text(cmd: &mut Command) -> std::io::Result<Child> {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            result => return result,
        }
    }
    cmd.spawn()
}
