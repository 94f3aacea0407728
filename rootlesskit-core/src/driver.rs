//! The core's side of the driver protocol: start `rk-NAME`, greet it,
//! configure the network, shut it down.

use nix::sys::signalfd::SignalFd;
use rk_driver::{
    Channel, ChannelError, ConfigureRequest, CoreMessage, DriverInfo, DriverMessage, NetworkConfig,
    DRIVER_DEBUG_ENV, PROTOCOL_VERSION, SHUTDOWN_GRACE_MS,
};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(120);

/// A running driver process.
#[derive(Debug)]
pub struct DriverProcess {
    path: PathBuf,
    /// The `--net` name as the user typed it, for messages.
    shown: String,
    child: Child,
    /// Readable once the driver has exited.
    pidfd: Option<OwnedFd>,
    channel: Channel,
    pub info: DriverInfo,
}

impl DriverProcess {
    /// Starts the driver at `path` and exchanges hellos. `shown` is the
    /// name the user typed; `signals`, when given, aborts the wait on
    /// SIGINT, SIGTERM, SIGHUP or SIGQUIT.
    pub fn start(
        path: &Path,
        shown: &str,
        debug: bool,
        signals: Option<&SignalFd>,
    ) -> Result<Self, String> {
        let (mut cmd, ours, theirs) =
            Channel::driver_command(path).map_err(|e| format!("socketpair: {e}"))?;
        cmd.stdout(std::io::stderr());
        if debug {
            cmd.env(DRIVER_DEBUG_ENV, "1");
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting driver {}: {e}", path.display()))?;
        drop(theirs);
        let pidfd = rk_driver::process::pidfd_open(child.id()).ok();
        let mut driver = DriverProcess {
            path: path.to_path_buf(),
            shown: shown.to_owned(),
            child,
            pidfd,
            channel: ours,
            info: DriverInfo::new("?", "?"),
        };
        driver.info = driver.hello(signals)?;
        Ok(driver)
        // On a failed hello, `driver` is dropped here, which kills and reaps it.
    }

    fn hello(&mut self, signals: Option<&SignalFd>) -> Result<DriverInfo, String> {
        let hello = CoreMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            core_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        self.channel
            .send(&hello, &[])
            .map_err(|e| self.failure("during the handshake", e))?;
        match self.recv(HELLO_TIMEOUT, "during the handshake", signals)? {
            DriverMessage::Hello {
                protocol_version,
                info,
            } => {
                if protocol_version != PROTOCOL_VERSION {
                    return Err(format!(
                        "driver {} speaks driver protocol v{protocol_version}, this rootlesskit speaks v{PROTOCOL_VERSION}: install matching versions",
                        self.path.display()
                    ));
                }
                if let Some(w) = hello_name_mismatch(&self.path, &info) {
                    log::warn!("{w}");
                }
                Ok(info)
            }
            DriverMessage::Error { message } => Err(self.prefixed(&message)),
            other => Err(format!(
                "driver {} answered the hello with {other:?}: it does not follow the driver protocol",
                self.path.display()
            )),
        }
    }

    /// Asks the driver to bring up the network of the given namespaces.
    pub fn configure(
        &mut self,
        request: &ConfigureRequest,
        userns: BorrowedFd<'_>,
        netns: BorrowedFd<'_>,
        signals: Option<&SignalFd>,
    ) -> Result<NetworkConfig, String> {
        self.channel
            .send(&CoreMessage::Configure(request.clone()), &[userns, netns])
            .map_err(|e| self.failure("while configuring", e))?;
        match self.recv(CONFIGURE_TIMEOUT, "while configuring", signals)? {
            DriverMessage::Configured(cfg) => {
                cfg.check().map_err(|e| self.prefixed(&e))?;
                Ok(cfg)
            }
            DriverMessage::Error { message } => Err(self.prefixed(&message)),
            other => Err(format!(
                "driver {} answered configure with {other:?}",
                self.path.display()
            )),
        }
    }

    fn recv(
        &mut self,
        timeout: Duration,
        when: &str,
        signals: Option<&SignalFd>,
    ) -> Result<DriverMessage, String> {
        if let Some(sig) = signals {
            wait_or_abort(&self.channel, sig, timeout)
                .map_err(|abort| format!("{abort} {when} (network driver {})", self.shown))?;
        }
        match self.channel.recv::<DriverMessage>(Some(timeout)) {
            Ok((m, _fds)) => Ok(m),
            Err(e) => Err(self.failure(when, e)),
        }
    }

    fn prefixed(&self, message: &str) -> String {
        format!("network driver {}: {message}", self.shown)
    }

    /// Turns a channel error into a sentence that says what the driver did.
    fn failure(&mut self, when: &str, e: ChannelError) -> String {
        let path = self.path.display().to_string();
        match e {
            ChannelError::Closed => {
                let status = self.wait_briefly();
                format!("driver {path} exited {when} ({status})")
            }
            ChannelError::Timeout(t) => {
                format!(
                    "driver {path} did not answer {when} within {}s",
                    t.as_secs()
                )
            }
            ChannelError::Decode(d) => decode_failure(&self.shown, &path, when, &d),
            other => format!("driver {path} {when}: {other}"),
        }
    }

    fn wait_briefly(&mut self) -> String {
        for _ in 0..100 {
            match self.child.try_wait() {
                Ok(Some(st)) => return st.to_string(),
                // Already reaped by the parent's subreaper loop.
                Err(_) => return "exited".to_owned(),
                Ok(None) => {}
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        "still running".to_owned()
    }

    /// The socket, for watching for unsolicited messages and EOF.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Reads what the driver says after `configured` (its network died).
    pub fn read_notice(&mut self) -> String {
        match self
            .channel
            .recv::<DriverMessage>(Some(Duration::from_millis(100)))
        {
            Ok((DriverMessage::Error { message }, _)) => self.prefixed(&message),
            Ok((other, _)) => format!("network driver {}: unexpected {other:?}", self.shown),
            Err(e) => self.failure("while CMD was running", e),
        }
    }

    /// Sends shutdown, gives the driver [`SHUTDOWN_GRACE_MS`] to tear down
    /// and exit (woken by its pidfd the moment it does), then kills its
    /// process group; returns once it has been reaped. Helper programs a
    /// driver failed to reap die with it (PDEATHSIG) and, as orphans, come
    /// to the parent (a subreaper), which reaps them.
    pub fn shutdown(mut self) {
        let _ = self.channel.send(&CoreMessage::Shutdown, &[]);
        let exited = match &self.pidfd {
            Some(fd) => rk_driver::process::wait_exit(fd.as_fd(), SHUTDOWN_GRACE_MS),
            None => {
                // No pidfd (old kernel): the closed socket says tear-down is done.
                let _ = self
                    .channel
                    .wait_readable(Duration::from_millis(SHUTDOWN_GRACE_MS.into()));
                false
            }
        };
        if !exited {
            if let Ok(None) = self.child.try_wait() {
                // SAFETY: kill(2) on the process group the driver leads
                // (own_process_group); it is our unreaped child, so the
                // group id cannot have been reused.
                unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for DriverProcess {
    /// A driver given up on (a failed hello, an aborted start) is killed
    /// with its process group and reaped here; after
    /// [`shutdown`](DriverProcess::shutdown) there is nothing left to do.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the process group the driver leads
            // (own_process_group); it is our unreaped child, so the group id
            // cannot have been reused.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Waits until `channel` is readable; `Err` names the signal that aborted
/// the wait. Signals other than the terminating ones are left for later.
fn wait_or_abort(channel: &Channel, signals: &SignalFd, timeout: Duration) -> Result<(), String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [
            PollFd::new(channel.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(_) => return Ok(()),
            Ok(_) => {}
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(());
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT].contains(&signo) {
                let name = nix::sys::signal::Signal::try_from(signo)
                    .map(|s| s.as_str())
                    .unwrap_or("a signal");
                return Err(format!("start-up aborted by {name}"));
            }
        }
    }
}

/// The sentence for an answer that does not decode: a typed field with a
/// bad value (`invalid nameserver "..."`) is named as the driver's mistake;
/// anything else is not the protocol at all.
fn decode_failure(shown: &str, path: &str, when: &str, e: &rk_driver::DecodeError) -> String {
    match e {
        rk_driver::DecodeError::Json(j)
            if j.classify() == serde_json::error::Category::Data
                && j.to_string().starts_with("invalid ") =>
        {
            format!(
                "network driver {shown}: answered an {j} {when} ({path} does not follow driver protocol v{PROTOCOL_VERSION})"
            )
        }
        _ => format!(
            "network driver {shown}: answered garbage {when}: {e} ({path} does not speak driver protocol v{PROTOCOL_VERSION})"
        ),
    }
}

/// A driver should answer to the name it was found under (`rk-NAME`); a
/// renamed copy still works, with a warning.
fn hello_name_mismatch(path: &Path, info: &DriverInfo) -> Option<String> {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let expected = file.strip_prefix("rk-").unwrap_or(file);
    (info.driver != expected).then(|| {
        format!(
            "driver {} calls itself {:?} in its hello, but was found as rk-{expected}: rename the file or fix the driver's name",
            path.display(),
            info.driver
        )
    })
}

/// Writes a line to stdout; a closed stdout (`| head -1`) is not an error
/// worth a panic, and later lines are dropped quietly.
fn out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// One line per driver found: name, version, commit, path and capabilities
/// (or the error of its handshake). Returns whether all answered.
fn describe_drivers(with_capabilities: bool) -> bool {
    let mut all_ok = true;
    for (name, path) in crate::discovery::all_drivers() {
        let shown = crate::discovery::user_name(&name);
        match DriverProcess::start(&path, shown, false, None) {
            Ok(d) => {
                let sandbox = if d.info.capabilities.iter().any(|c| c == "sandbox") {
                    "yes"
                } else {
                    "no"
                };
                let mut line = format!(
                    "{:<18} {:<10} {:<14} {:<8} {:<40}",
                    shown,
                    d.info.version,
                    d.info.commit.as_deref().unwrap_or("-"),
                    sandbox,
                    path.display()
                );
                if with_capabilities {
                    line.push(' ');
                    line.push_str(&d.info.capabilities.join(","));
                }
                out(line.trim_end());
                d.shutdown();
            }
            Err(e) => {
                all_ok = false;
                out(&format!(
                    "{shown:<18} {:<10} {:<14} {:<8} {:<40} error: {e}",
                    "?",
                    "?",
                    "?",
                    path.display()
                ));
            }
        }
    }
    all_ok
}

/// `rootlesskit --list-drivers`: status 1 when a driver found fails its
/// handshake.
pub fn list_drivers() -> i32 {
    if crate::discovery::all_drivers().is_empty() {
        out(&format!(
            "no drivers found in {:?}",
            crate::discovery::search_dirs()
        ));
        return 0;
    }
    out(&format!(
        "{:<18} {:<10} {:<14} {:<8} {:<40} CAPABILITIES",
        "NAME", "VERSION", "COMMIT", "SANDBOX", "PATH"
    ));
    if describe_drivers(true) {
        0
    } else {
        1
    }
}

/// `rootlesskit --version`: RootlessKit's first line, then each driver.
pub fn print_versions() -> i32 {
    out(&format!(
        "rootlesskit version {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        rk_driver::GIT_COMMIT
    ));
    if crate::discovery::all_drivers().is_empty() {
        return 0;
    }
    out(&format!(
        "{:<18} {:<10} {:<14} {:<8} PATH",
        "DRIVER", "VERSION", "COMMIT", "SANDBOX"
    ));
    if describe_drivers(false) {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure_for(answer: &str) -> String {
        let e = rk_driver::decode::<DriverMessage>(answer.as_bytes()).unwrap_err();
        decode_failure("baddns", "/d/rk-baddns", "while configuring", &e)
    }

    #[test]
    fn a_bad_typed_field_is_named_with_the_driver() {
        let m = failure_for(
            r#"{"type":"configured","interface":"lo","mtu":1500,"dns":["10.0.2.3\noptions ndots:15"]}"#,
        );
        assert!(
            m.starts_with(r#"network driver baddns: answered an invalid nameserver "10.0.2.3\noptions ndots:15""#),
            "{m}"
        );
        assert!(m.contains("/d/rk-baddns"), "{m}");
        let m =
            failure_for(r#"{"type":"configured","interface":"lo","mtu":1500,"ipv4":"10.0.2.100"}"#);
        assert!(m.contains("answered an invalid IPv4 address"), "{m}");
    }

    #[test]
    fn garbage_is_named_with_the_driver() {
        for answer in [
            "not json",
            r#"{"type":"configured"}"#,
            r#"{"type":"reboot"}"#,
        ] {
            let m = failure_for(answer);
            assert!(
                m.starts_with("network driver baddns: answered garbage"),
                "{m}"
            );
            assert!(
                m.contains("/d/rk-baddns does not speak driver protocol v1"),
                "{m}"
            );
        }
    }
}
