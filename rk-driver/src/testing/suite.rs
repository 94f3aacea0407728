//! The conformance suite: every check a driver must pass, each on a fresh
//! driver process (and fresh namespaces where it configures).

use super::{grace, FakeCore, Namespaces, RunAs, Violation};
use crate::protocol::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a driver may take to exit after a protocol error or a refused
/// request (the core kills it at once; this only bounds the test).
const EXIT_LIMIT: Duration = Duration::from_secs(5);

/// An option key no driver understands.
pub const UNKNOWN_OPTION: &str = "rk-conformance-no-such-option";

type Check = fn(&Suite) -> Result<(), Violation>;

/// The checks, by name, in the order [`Suite::run`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("--version prints rk-NAME VERSION", Suite::version_flag),
    (
        "hello, then shutdown: exits 0 at once",
        Suite::hello_then_shutdown,
    ),
    ("hello, then EOF: exits 0 at once", Suite::hello_then_eof),
    (
        "a newer core's hello: answered, then exits non-zero",
        Suite::newer_core,
    ),
    (
        "an unknown message type: a protocol error, not a crash",
        Suite::unknown_message,
    ),
    (
        "configure without descriptors: refused with an error",
        Suite::no_descriptors,
    ),
    (
        "configure with an unknown option: refused with an error",
        Suite::unknown_option,
    ),
    (
        "configure, then shutdown: a sane answer, exit within the grace, nothing left",
        Suite::configure_then_shutdown,
    ),
    (
        "configure, then EOF: exit within the grace, nothing left",
        Suite::configure_then_eof,
    ),
];

/// The conformance suite for one driver binary.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The driver executable, named `rk-NAME`.
    pub driver: PathBuf,
    /// Who runs the driver and owns the namespaces (`None`: the caller).
    pub run_as: Option<RunAs>,
    /// Extra environment for the driver (e.g. a `PATH` with its helper).
    pub env: Vec<(String, String)>,
    /// The request for the configure checks (options the driver needs, an
    /// MTU, ...); `child_pid` and `state_dir` are filled in.
    pub request: ConfigureRequest,
    /// Run the checks that bring a network up; `false` for a driver that
    /// cannot be configured outside a real rootlesskit.
    pub configure: bool,
    /// Checks not to run, by the start of their name in [`CHECKS`] (say
    /// why where you skip one: each is a rule of the protocol).
    pub skip: Vec<&'static str>,
}

impl Suite {
    pub fn new(driver: impl Into<PathBuf>) -> Suite {
        Suite {
            driver: driver.into(),
            run_as: None,
            env: Vec::new(),
            request: ConfigureRequest::default(),
            configure: true,
            skip: Vec::new(),
        }
    }

    /// Runs every check; returns each one's name and result.
    pub fn run(&self) -> Vec<(&'static str, Result<(), Violation>)> {
        CHECKS
            .iter()
            .filter(|(name, _)| self.configure || !name.starts_with("configure, then"))
            .filter(|(name, _)| !self.skip.iter().any(|s| name.starts_with(s)))
            .map(|(name, check)| (*name, check(self)))
            .collect()
    }

    /// Runs every check and panics with the list of failures, if any.
    pub fn assert_conformant(&self) {
        let failed: Vec<String> = self
            .run()
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|v| format!("- {name}:\n  {v}")))
            .collect();
        assert!(
            failed.is_empty(),
            "{} does not follow driver protocol v{PROTOCOL_VERSION}:\n{}",
            self.driver.display(),
            failed.join("\n")
        );
    }

    pub fn start(&self) -> Result<FakeCore, Violation> {
        FakeCore::start(&self.driver, self.run_as, &self.env)
    }

    pub fn namespaces(&self) -> Result<Namespaces, Violation> {
        Namespaces::new(self.run_as)
    }

    /// A started driver that answered the hello.
    fn greeted(&self) -> Result<FakeCore, Violation> {
        let mut core = self.start()?;
        core.hello()?;
        Ok(core)
    }

    /// A driver that brought the network of fresh namespaces up (keep the
    /// namespaces while the driver runs).
    fn configured(&self) -> Result<(FakeCore, Namespaces), Violation> {
        let mut core = self.greeted()?;
        let ns = self.namespaces()?;
        core.configured(&self.request, &ns)?;
        Ok((core, ns))
    }

    pub fn version_flag(&self) -> Result<(), Violation> {
        let mut cmd = Command::new(&self.driver);
        cmd.arg("--version")
            .env_remove(DRIVER_FD_ENV)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        super::run_as_user(&mut cmd, self.run_as);
        let out = cmd.output().map_err(|e| {
            Violation::setup(format!("running {} --version: {e}", self.driver.display()))
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().unwrap_or("");
        let file = self
            .driver
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("");
        let ok = out.status.success()
            && line.starts_with(&format!("{file} "))
            && line.contains(&format!("driver protocol v{PROTOCOL_VERSION}"));
        if !ok {
            return Err(Violation(format!(
                "{} --version exited {} printing {line:?}; expected `{file} VERSION (driver protocol v{PROTOCOL_VERSION})` (section 2)",
                self.driver.display(),
                out.status
            )));
        }
        Ok(())
    }

    pub fn hello_then_shutdown(&self) -> Result<(), Violation> {
        self.greeted()?.shutdown().map(drop)
    }

    pub fn hello_then_eof(&self) -> Result<(), Violation> {
        self.greeted()?.hang_up().map(drop)
    }

    pub fn newer_core(&self) -> Result<(), Violation> {
        let mut core = self.start()?;
        core.hello_with_version(PROTOCOL_VERSION + 1)?;
        let exit = core.expect_exit(EXIT_LIMIT, "after a hello of a newer protocol")?;
        self.require(!exit.status.success(), || {
            format!(
                "exited 0 after a hello of protocol v{}; it exits non-zero when it cannot speak the core's version (section 8)",
                PROTOCOL_VERSION + 1
            )
        })
    }

    pub fn unknown_message(&self) -> Result<(), Violation> {
        let mut core = self.greeted()?;
        core.send_raw(br#"{"type":"rk-conformance-unknown"}"#)?;
        // It MAY say what it got in an `error` (or exit without a word);
        // nothing else.
        let answer = core.recv_or_eof(EXIT_LIMIT, "after an unknown message type")?;
        self.require(
            matches!(answer, None | Some(DriverMessage::Error { .. })),
            || format!("answered an unknown message type with {answer:?}; only an error or nothing is allowed (section 9)"),
        )?;
        let exit = core.expect_exit(EXIT_LIMIT, "after an unknown message type")?;
        self.require(!exit.status.success(), || {
            "exited 0 after a protocol error; it exits non-zero (section 9)".into()
        })
    }

    pub fn no_descriptors(&self) -> Result<(), Violation> {
        let mut core = self.greeted()?;
        let ns = self.namespaces()?;
        let request = ConfigureRequest {
            child_pid: ns.pid() as i32,
            state_dir: core.state_dir().to_string_lossy().into_owned(),
            ..self.request.clone()
        };
        core.send(&CoreMessage::Configure(request), &[])?;
        let answer = core.recv(EXIT_LIMIT, "answering configure without descriptors")?;
        let named = matches!(&answer, DriverMessage::Error { message } if message.contains('0'));
        self.require(named, || {
            format!("answered configure without descriptors with {answer:?}; expected an error naming the count (section 7)")
        })?;
        core.expect_exit(grace(), "after refusing configure")
            .map(drop)
    }

    /// `Err` naming the driver and `what` unless `ok`.
    fn require(&self, ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
        match ok {
            true => Ok(()),
            false => Err(Violation(format!("{}: {}", self.driver.display(), what()))),
        }
    }

    pub fn unknown_option(&self) -> Result<(), Violation> {
        let mut core = self.greeted()?;
        let ns = self.namespaces()?;
        let mut request = self.request.clone();
        request.options.insert(UNKNOWN_OPTION.into(), "1".into());
        let message = core.refused(&request, &ns)?;
        self.require(message.contains(UNKNOWN_OPTION), || {
            format!("refused an unknown option without naming it: {message:?} (section 6.3)")
        })?;
        core.expect_exit(grace(), "after refusing configure")
            .map(drop)
    }

    pub fn configure_then_shutdown(&self) -> Result<(), Violation> {
        let (core, _ns) = self.configured()?;
        core.shutdown().map(drop)
    }

    pub fn configure_then_eof(&self) -> Result<(), Violation> {
        let (core, _ns) = self.configured()?;
        core.hang_up().map(drop)
    }
}
