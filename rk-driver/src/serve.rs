//! The driver side of the protocol: a trait to implement and a loop that
//! serves it.

use crate::channel::{Channel, ChannelError};
use crate::protocol::*;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

/// The namespaces a driver is asked to network.
#[derive(Debug)]
pub struct NamespaceFds {
    /// The child's user namespace (`/proc/CHILD/ns/user`).
    pub userns: OwnedFd,
    /// The network namespace to bring up.
    pub netns: OwnedFd,
}

/// A failure the driver reports to the core; the message is shown to the user
/// as it is, so it should name the fix. There is deliberately no
/// `From<std::io::Error>`: a bare `?` would drop what was being done, so
/// errors come in through [`Context::context`] or [`DriverError::new`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

impl DriverError {
    pub fn new(msg: impl Into<String>) -> Self {
        DriverError(msg.into())
    }
}

/// Adds what was being done to an error on its way to the core, so that
/// `failed: Permission denied` becomes `creating tap0: Permission denied`.
pub trait Context<T> {
    fn context(self, what: impl std::fmt::Display) -> Result<T, DriverError>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl std::fmt::Display) -> Result<T, DriverError> {
        self.map_err(|e| DriverError(format!("{what}: {e}")))
    }
}

/// What a network driver implements.
pub trait Driver {
    /// Name, version, capabilities and options.
    fn info(&self) -> DriverInfo;

    /// Brings the network of the given namespaces up and says how the
    /// interface must look.
    fn configure(
        &mut self,
        request: ConfigureRequest,
        namespaces: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError>;

    /// A descriptor that turns readable when the driver's network has died
    /// (e.g. the pidfd of its helper program).
    fn watch(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Called once `watch` turned readable; says what happened.
    fn on_watch(&mut self) -> String {
        "the driver's network stopped".to_owned()
    }

    /// Tears down whatever `configure` started.
    fn shutdown(&mut self) {}

    /// `start_ports`: serve the port driver `port_driver` (only asked of
    /// drivers whose hello announced `port-driver:NAME`).
    fn start_ports(&mut self, port_driver: &str) -> Result<PortDriverOffer, DriverError> {
        Err(DriverError::new(format!(
            "this network driver offers no port driver {port_driver}"
        )))
    }

    /// Starts forwarding `rule`.
    fn add_port(&mut self, rule: &PortRule) -> Result<(), DriverError> {
        Err(DriverError::new(format!(
            "this network driver cannot forward ports (port {})",
            rule.id
        )))
    }

    /// Stops forwarding port `id`.
    fn remove_port(&mut self, id: i64) -> Result<(), DriverError> {
        Err(DriverError::new(format!(
            "this network driver cannot forward ports (port {id})"
        )))
    }

    /// The ports it forwards, for drivers that know better than the core's
    /// table (e.g. ports forwarded automatically).
    fn list_ports(&mut self) -> Result<Vec<PortRule>, DriverError> {
        Err(DriverError::new(
            "this network driver keeps no list of ports",
        ))
    }
}

/// Whether `RK_DRIVER_DEBUG=1` is set (read once).
pub fn debug_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(DRIVER_DEBUG_ENV).as_deref() == Ok("1"))
}

/// Serves `driver` on the socket named by `RK_DRIVER_FD` and exits.
///
/// Run by hand with `--version` it prints the driver's name and version.
pub fn serve<D: Driver>(mut driver: D) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-v") {
        let info = driver.info();
        // A closed stdout (`| head -0`) is not worth a panic.
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout(),
            "rk-{} {} (commit {}, driver protocol v{PROTOCOL_VERSION})",
            info.driver,
            info.version,
            crate::GIT_COMMIT
        );
        std::process::exit(0);
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let name = driver.info().driver;
    crate::logger::init(&name);
    let channel = match Channel::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rk-{name}: {e}");
            std::process::exit(2)
        }
    };
    let code = match run(&mut driver, &channel) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rk-{name}: {e}");
            1
        }
    };
    driver.shutdown();
    // Closing the socket only now tells the core that tear-down is done.
    drop(channel);
    std::process::exit(code)
}

/// The driver's info with the build's commit, unless it named one itself.
fn with_commit(mut info: DriverInfo) -> DriverInfo {
    if info.commit.is_none() {
        info.commit = Some(crate::GIT_COMMIT.to_owned());
    }
    info
}

fn run<D: Driver>(driver: &mut D, channel: &Channel) -> Result<(), String> {
    let (hello, _): (CoreMessage, _) = channel
        .recv(Some(Duration::from_secs(30)))
        .map_err(|e| format!("waiting for the core's hello: {e}"))?;
    let CoreMessage::Hello {
        protocol_version, ..
    } = hello
    else {
        return Err("the core did not start with hello".to_owned());
    };
    channel
        .send(
            &DriverMessage::Hello {
                protocol_version: PROTOCOL_VERSION,
                info: with_commit(driver.info()),
            },
            &[],
        )
        .map_err(|e| e.to_string())?;
    if protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version mismatch: the core speaks v{protocol_version}, this driver v{PROTOCOL_VERSION}"
        ));
    }
    let mut configured = false;
    loop {
        if !wait_for_message_or_watch(driver, channel)? {
            let message = driver.on_watch();
            let _ = channel.send(
                &DriverMessage::Error {
                    message: message.clone(),
                },
                &[],
            );
            return Err(message);
        }
        let (msg, mut fds): (CoreMessage, Vec<OwnedFd>) = match channel.recv(None) {
            Ok(m) => m,
            Err(ChannelError::Closed) => return Ok(()),
            Err(e) => return Err(format!("reading from the core: {e}")),
        };
        if let Some(reply) = port_request(driver, &msg, configured) {
            channel.send(&reply, &[]).map_err(|e| e.to_string())?;
            continue;
        }
        match msg {
            CoreMessage::Hello { .. } => return Err("hello sent twice".to_owned()),
            CoreMessage::Shutdown => return Ok(()),
            CoreMessage::StartPorts { .. }
            | CoreMessage::AddPort(_)
            | CoreMessage::RemovePort { .. }
            | CoreMessage::ListPorts => unreachable!("answered by port_request"),
            CoreMessage::Configure(req) => {
                if fds.len() != 2 {
                    let message = format!(
                        "configure carried {} descriptors, expected 2 (userns, netns)",
                        fds.len()
                    );
                    let _ = channel.send(
                        &DriverMessage::Error {
                            message: message.clone(),
                        },
                        &[],
                    );
                    return Err(message);
                }
                if configured {
                    let message = "configure sent twice: a driver serves one network".to_owned();
                    let _ = channel.send(
                        &DriverMessage::Error {
                            message: message.clone(),
                        },
                        &[],
                    );
                    return Err(message);
                }
                let netns = fds.pop().expect("two descriptors");
                let userns = fds.pop().expect("two descriptors");
                match driver.configure(req, NamespaceFds { userns, netns }) {
                    Ok(cfg) => {
                        channel
                            .send(&DriverMessage::Configured(cfg), &[])
                            .map_err(|e| e.to_string())?;
                        configured = true;
                    }
                    Err(e) => {
                        // Undo before answering: the core may kill us as soon
                        // as it reads the error.
                        driver.shutdown();
                        let _ = channel.send(&DriverMessage::Error { message: e.0 }, &[]);
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Answers the port messages; `None` for the others.
fn port_request<D: Driver>(
    driver: &mut D,
    msg: &CoreMessage,
    configured: bool,
) -> Option<DriverMessage> {
    let id = match msg {
        CoreMessage::AddPort(rule) => Some(rule.id),
        CoreMessage::RemovePort { id } => Some(*id),
        CoreMessage::StartPorts { .. } | CoreMessage::ListPorts => None,
        _ => return None,
    };
    let failed = |e: DriverError| DriverMessage::PortError { id, message: e.0 };
    if !configured {
        return Some(failed(DriverError::new(
            "port requests are only valid after configure",
        )));
    }
    Some(match msg {
        CoreMessage::StartPorts { port_driver } => driver
            .start_ports(port_driver)
            .map_or_else(failed, DriverMessage::PortDriver),
        CoreMessage::AddPort(rule) => driver
            .add_port(rule)
            .map_or_else(failed, |()| DriverMessage::PortAdded { id: rule.id }),
        CoreMessage::RemovePort { id } => driver
            .remove_port(*id)
            .map_or_else(failed, |()| DriverMessage::PortRemoved { id: *id }),
        CoreMessage::ListPorts => driver
            .list_ports()
            .map_or_else(failed, |ports| DriverMessage::PortList { ports }),
        _ => unreachable!("filtered above"),
    })
}

/// `true` when a message (or EOF) is waiting, `false` when the watch fired.
fn wait_for_message_or_watch<D: Driver>(driver: &D, channel: &Channel) -> Result<bool, String> {
    let Some(watch) = driver.watch() else {
        return Ok(true);
    };
    let mut fds = [
        PollFd::new(std::os::fd::AsFd::as_fd(channel), PollFlags::POLLIN),
        PollFd::new(watch, PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
    let watch_fired = fds[1].revents().is_some_and(|r| !r.is_empty());
    let message_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
    Ok(message_ready || !watch_fired)
}

#[cfg(test)]
mod context_tests {
    use super::*;

    #[test]
    fn context_says_what_was_being_done() {
        let r: Result<(), std::io::Error> = Err(std::io::Error::from_raw_os_error(libc::EACCES));
        let e = r.context("opening /dev/net/tun").unwrap_err();
        assert!(
            e.0.starts_with("opening /dev/net/tun: Permission denied"),
            "{}",
            e.0
        );
    }
}
