//! Starting slirp4netns with the namespaces as inherited descriptors,
//! waiting until it is ready, and stopping it.

use crate::args::{ChildFds, Invocation};
use crate::plan::Plan;
use crate::probe::SLIRP4NETNS;
use rk_driver::helper::spawn::{our_stderr, pipe};
use rk_driver::helper::{HelperCommand, OutputTail, Progress, Running, StartError};
use rk_driver::plan::RequestedNetwork as Network;
use rk_driver::NamespaceFds;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// How long slirp4netns may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running slirp4netns. Dropping it stops the program.
#[derive(Debug)]
pub struct Slirp {
    /// Closing this makes slirp4netns exit (its `--exit-fd` sees HUP).
    exit_writer: Option<OwnedFd>,
    running: Running,
}

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    pub binary: &'a Path,
    pub network: &'a Network,
    pub plan: &'a Plan,
    pub disable_host_loopback: bool,
    pub api_socket: Option<&'a Path>,
}

impl Launch<'_> {
    /// Starts slirp4netns on `namespaces` and waits until it is ready.
    ///
    /// With the sandbox, slirp4netns is started inside the child's user
    /// namespace: slirp4netns (1.2 and 1.3 alike) ignores `--userns-path`
    /// when it sets the sandbox up, and then fails unprivileged with
    /// "setegid(0)" (slirp4netns#317). Entering the namespace first is what
    /// slirp4netns itself does when given a pid, and makes the sandbox work
    /// with `--detach-netns` too. Its sockets stay in the host's network
    /// namespace either way.
    pub fn start(&self, namespaces: &NamespaceFds) -> Result<Slirp, StartError> {
        let setup = |what| {
            move |source| StartError::Setup {
                name: SLIRP4NETNS.name.to_owned(),
                what,
                source,
            }
        };
        let join_userns = self.plan.sandbox;
        let (ready_reader, ready_writer) = pipe().map_err(setup("ready pipe"))?;
        let (exit_reader, exit_writer) = pipe().map_err(setup("exit pipe"))?;
        let (stderr_reader, stderr_writer) = pipe().map_err(setup("stderr pipe"))?;

        let mut helper = HelperCommand::new(SLIRP4NETNS, self.binary);
        let pass = |helper: &mut HelperCommand, fd: BorrowedFd<'_>, what| {
            helper.pass_fd(fd).map_err(setup(what))
        };
        let fds = ChildFds {
            netns: pass(&mut helper, namespaces.netns.as_fd(), "netns descriptor")?,
            userns: if join_userns {
                None
            } else {
                Some(pass(
                    &mut helper,
                    namespaces.userns.as_fd(),
                    "userns descriptor",
                )?)
            },
            ready: pass(&mut helper, ready_writer.as_fd(), "ready pipe")?,
            exit: pass(&mut helper, exit_reader.as_fd(), "exit pipe")?,
        };
        if join_userns {
            helper
                .join_userns(namespaces.userns.as_fd())
                .map_err(setup("userns descriptor"))?;
        }
        let invocation = Invocation::new(
            self.network,
            self.plan,
            self.disable_host_loopback,
            self.api_socket,
            fds,
        );
        let stdout = if log::log_enabled!(log::Level::Debug) {
            our_stderr().map_err(setup("stdout"))?
        } else {
            Stdio::null()
        };
        helper
            .command()
            .args(invocation.args())
            .stdout(stdout)
            .stderr(Stdio::from(stderr_writer));
        let process = helper.spawn().map_err(StartError::Spawn)?;
        // Our copies of what slirp4netns holds must go, so that its exit
        // shows up as EOF on the ready pipe.
        drop((ready_writer, exit_reader));
        let output = OutputTail::new(stderr_reader, "slirp4netns").map_err(setup("stderr pipe"))?;
        let mut slirp = Slirp {
            exit_writer: Some(exit_writer),
            running: Running::new(process, output),
        };
        // slirp4netns writes "1" to its ready descriptor once it is ready;
        // EOF means it closed it without, on its way out.
        let ready = std::fs::File::from(ready_reader);
        let check = |_| {
            let mut buf = [0u8; 16];
            Ok(match (&ready).read(&mut buf) {
                Ok(0) => Progress::GaveUp("it closed its ready descriptor"),
                Ok(_) => Progress::Ready,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Progress::Waiting,
                Err(e) => return Err(e),
            })
        };
        slirp
            .running
            .wait_ready(self.binary, ready.as_fd(), READY_TIMEOUT, None, check)?;
        Ok(slirp)
    }
}

impl Slirp {
    pub fn pid(&self) -> u32 {
        self.running.pid()
    }

    /// Drains slirp4netns's output on a thread from now on: called once
    /// the driver is confined, so that the thread starts inside its
    /// Landlock domain.
    pub fn follow_output(&mut self) -> io::Result<()> {
        self.running.follow_output()
    }

    /// Readable once slirp4netns has exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.running.exit_fd()
    }

    /// Says how slirp4netns ended, once `exit_fd` turned readable.
    pub fn describe_exit(&mut self) -> String {
        self.running.describe_exit()
    }

    /// Closes the exit descriptor and kills slirp4netns at once: it keeps no
    /// state worth a clean exit, and rootlesskit's own exit waits for this
    /// (slirp4netns takes 10–30 ms to notice its exit descriptor or SIGTERM).
    pub fn stop(&mut self) {
        drop(self.exit_writer.take());
        self.running.kill();
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        self.stop();
    }
}
