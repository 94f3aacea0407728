//! The core's side of the driver protocol: start `rk-NAME`, greet it,
//! configure the network, shut it down.

use rk_driver::process::kill_with_parent;
use rk_driver::{
    Channel, ChannelError, ConfigureRequest, CoreMessage, DriverInfo, DriverMessage, NetworkConfig,
    DRIVER_DEBUG_ENV, DRIVER_FD_ENV, PROTOCOL_VERSION,
};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(120);

/// A running driver process.
#[derive(Debug)]
pub struct DriverProcess {
    path: PathBuf,
    child: Child,
    channel: Channel,
    pub info: DriverInfo,
}

impl DriverProcess {
    /// Starts the driver at `path` and exchanges hellos.
    pub fn start(path: &Path, debug: bool) -> Result<Self, String> {
        let (ours, theirs) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
        let theirs = theirs.into_fd();
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(path);
        cmd.env(DRIVER_FD_ENV, fd.to_string())
            .stdin(Stdio::null())
            .stdout(std::io::stderr());
        if debug {
            cmd.env(DRIVER_DEBUG_ENV, "1");
        }
        kill_with_parent(&mut cmd);
        rk_driver::process::own_process_group(&mut cmd);
        // SAFETY: fcntl is async-signal-safe; it makes the driver's end of
        // the socket survive exec in the child only.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting driver {}: {e}", path.display()))?;
        drop(theirs);
        let mut driver = DriverProcess {
            path: path.to_path_buf(),
            child,
            channel: ours,
            info: DriverInfo::new("?", "?"),
        };
        driver.info = driver.hello()?;
        Ok(driver)
        // On a failed hello, `driver` is dropped here, which kills and reaps it.
    }

    fn hello(&mut self) -> Result<DriverInfo, String> {
        let hello = CoreMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            core_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        self.channel
            .send(&hello, &[])
            .map_err(|e| self.failure("during the handshake", e))?;
        match self.recv(HELLO_TIMEOUT, "during the handshake")? {
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
    ) -> Result<NetworkConfig, String> {
        self.channel
            .send(&CoreMessage::Configure(request.clone()), &[userns, netns])
            .map_err(|e| self.failure("while configuring", e))?;
        match self.recv(CONFIGURE_TIMEOUT, "while configuring")? {
            DriverMessage::Configured(cfg) => Ok(cfg),
            DriverMessage::Error { message } => Err(self.prefixed(&message)),
            other => Err(format!(
                "driver {} answered configure with {other:?}",
                self.path.display()
            )),
        }
    }

    fn recv(&mut self, timeout: Duration, when: &str) -> Result<DriverMessage, String> {
        match self.channel.recv::<DriverMessage>(Some(timeout)) {
            Ok((m, _fds)) => Ok(m),
            Err(e) => Err(self.failure(when, e)),
        }
    }

    fn prefixed(&self, message: &str) -> String {
        format!("network driver {}: {message}", self.info.driver)
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
                format!("driver {path} did not answer {when} within {}s", t.as_secs())
            }
            ChannelError::Decode(d) => format!(
                "driver {path} answered garbage {when}: {d} (it does not speak driver protocol v{PROTOCOL_VERSION})"
            ),
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
            Ok((other, _)) => format!("network driver {}: unexpected {other:?}", self.info.driver),
            Err(e) => self.failure("while CMD was running", e),
        }
    }

    /// Sends shutdown and waits up to a second for the driver to finish its
    /// tear-down, which it signals by closing the socket. Its process may
    /// still be exiting then; it dies with us in any case (PDEATHSIG).
    pub fn shutdown(mut self) {
        let _ = self.channel.send(&CoreMessage::Shutdown, &[]);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.channel.recv_raw(Some(left)) {
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        if let Ok(None) = self.child.try_wait() {
            // Done with us: let it exit on its own, not killed by our drop.
            std::mem::forget(self);
        }
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `rootlesskit --list-drivers`.
pub fn list_drivers() -> i32 {
    let drivers = crate::discovery::all_drivers();
    if drivers.is_empty() {
        println!("no drivers found in {:?}", crate::discovery::search_dirs());
        return 0;
    }
    println!(
        "{:<18} {:<10} {:<40} CAPABILITIES",
        "NAME", "VERSION", "PATH"
    );
    for (name, path) in drivers {
        match DriverProcess::start(&path, false) {
            Ok(d) => {
                println!(
                    "{:<18} {:<10} {:<40} {}",
                    name,
                    d.info.version,
                    path.display(),
                    d.info.capabilities.join(",")
                );
                d.shutdown();
            }
            Err(e) => println!("{name:<18} {:<10} {:<40} error: {e}", "?", path.display()),
        }
    }
    0
}
