//! Confining a whole process once its set-up is over: `no_new_privs`, a
//! Landlock ruleset (where the kernel has Landlock) and a seccomp
//! **allow-list** installed on every thread at once (TSYNC), so that no
//! thread of the process runs unfiltered.
//!
//! A process states what it still needs, as groups of system calls
//! ([`Calls`]), the socket families it may still open, and the paths it may
//! still read, write or execute; everything else is refused. The core,
//! every driver and every helper of ours uses this one module, each with
//! its own policy (docs/security.md lists them).
//!
//! Landlock restricts only the thread that applies it and the threads it
//! starts afterwards: call [`Confinement::apply`] before starting threads.
//! seccomp is synchronised to all threads, so threads started earlier are
//! covered by the system-call filter in any case.
//!
//! `RK_SANDBOX=off` in the environment turns confinement off (for
//! debugging and for measuring its cost); `--debug` shows what applied.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod calls;
pub mod probe;

use calls::calls_of;
pub use probe::run_confined;

/// Set to `off` to run without confinement (debugging, benchmarks).
pub const SANDBOX_ENV: &str = "RK_SANDBOX";

/// Groups of system calls a process may keep after set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Calls {
    /// Memory, threads, time, signals, reading and writing descriptors it
    /// holds, polling, pipes and event descriptors: what any Rust program
    /// needs to keep running.
    Base,
    /// Opening, inspecting and removing files and directories (Landlock
    /// says which).
    Files,
    /// Sockets of the allowed families: create, connect, listen, accept,
    /// send and receive (with descriptors), options, splice.
    Sockets,
    /// Starting and waiting for processes (fork, exec, wait, pidfd, kill).
    Spawn,
    /// Joining and creating namespaces (setns, unshare).
    Namespaces,
    /// ioctl (tun/tap set-up, FIONREAD, terminal queries).
    Ioctl,
    /// Killing (through a pidfd) and reaping the helper programs it
    /// started, and nothing else of [`Calls::Spawn`].
    Supervise,
}

/// What a refused system call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnViolation {
    /// The whole process dies at once (SIGSYS): for processes that parse
    /// hostile input, where a refused call means something is wrong.
    Kill,
    /// The call fails with EPERM: where a clean error message matters more
    /// than stopping at once.
    Deny,
}

/// What confinement a process asked for and what the kernel gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub seccomp: bool,
    pub no_new_privs: bool,
    /// `None`: Landlock not requested; `Some(abi)`: enforced with that ABI
    /// (0: the kernel has none).
    pub landlock_abi: Option<i32>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seccomp {}, no_new_privs {}, landlock {}",
            if self.seccomp { "on" } else { "off" },
            if self.no_new_privs { "on" } else { "off" },
            match self.landlock_abi {
                None => "not used".to_owned(),
                Some(0) => "unsupported by this kernel".to_owned(),
                Some(abi) => format!("on (ABI {abi})"),
            }
        )
    }
}

/// Why confinement could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("installing the seccomp filter on every thread: {0}")]
    Install(String),
    #[error("Landlock: {0}")]
    Landlock(String),
}

/// What a process may still do below a path (Landlock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAccess {
    Read,
    /// Create, change and remove files.
    Write,
    /// Read and execute.
    Exec,
    /// Remove (empty) directories, nothing else.
    RemoveDirs,
}

/// A process's policy, built with the methods below and applied once.
#[derive(Debug, Clone)]
pub struct Confinement {
    calls: Vec<Calls>,
    extra: Vec<i64>,
    families: Vec<i32>,
    /// Landlock: what it may still do below each path.
    paths: Vec<(PathAccess, PathBuf)>,
    landlock: bool,
    no_new_privs: bool,
    on_violation: OnViolation,
}

impl Default for Confinement {
    fn default() -> Self {
        Self::new()
    }
}

impl Confinement {
    /// The base calls only, no files, no sockets; violations denied.
    pub fn new() -> Self {
        Confinement {
            calls: vec![Calls::Base],
            extra: Vec::new(),
            families: Vec::new(),
            paths: Vec::new(),
            landlock: true,
            no_new_privs: true,
            on_violation: OnViolation::Deny,
        }
    }

    pub fn allow(mut self, calls: Calls) -> Self {
        if !self.calls.contains(&calls) {
            self.calls.push(calls);
        }
        self
    }

    /// Single system calls beyond the groups (`libc::SYS_*`).
    pub fn allow_syscalls(mut self, nrs: &[libc::c_long]) -> Self {
        self.extra.extend_from_slice(nrs);
        self
    }

    /// Socket families `socket(2)` and `socketpair(2)` may still create
    /// (`libc::AF_*`); implies [`Calls::Sockets`].
    pub fn socket_families(mut self, families: &[libc::c_int]) -> Self {
        self.families.extend_from_slice(families);
        self.allow(Calls::Sockets)
    }

    /// What it may still do below `path` (Landlock).
    pub fn path(mut self, access: PathAccess, path: impl AsRef<Path>) -> Self {
        self.paths.push((access, path.as_ref().to_path_buf()));
        self
    }

    /// Paths (and what is below them) it may still read.
    pub fn read(self, path: impl AsRef<Path>) -> Self {
        self.path(PathAccess::Read, path)
    }

    /// Paths it may still create, change and remove files in.
    pub fn write(self, path: impl AsRef<Path>) -> Self {
        self.path(PathAccess::Write, path)
    }

    /// Programs it may still execute (read and execute).
    pub fn exec(self, path: impl AsRef<Path>) -> Self {
        self.path(PathAccess::Exec, path)
    }

    /// Directories in which it may still remove (empty) directories, and
    /// nothing else: a state directory's parent, for the clean-up at exit.
    pub fn remove_dirs_in(self, path: impl AsRef<Path>) -> Self {
        self.path(PathAccess::RemoveDirs, path)
    }

    /// Leaves the filesystem to seccomp alone (a process that must still
    /// run a set-user-ID program: Landlock forbids that).
    pub fn without_landlock(mut self) -> Self {
        self.landlock = false;
        self
    }

    /// Leaves `no_new_privs` off: the one documented case is a process
    /// that must still run the set-user-ID lxc-user-nic. seccomp then
    /// needs CAP_SYS_ADMIN, which nobody here has, so such a process gets
    /// no filter either; say so with [`Report`].
    pub fn without_no_new_privs(mut self) -> Self {
        self.no_new_privs = false;
        self
    }

    pub fn on_violation(mut self, action: OnViolation) -> Self {
        self.on_violation = action;
        self
    }

    /// Whether `RK_SANDBOX=off` asks for no confinement.
    pub fn disabled_by_env() -> bool {
        std::env::var(SANDBOX_ENV).is_ok_and(|v| v == "off" || v == "0" || v == "false")
    }

    /// Applies the policy to the calling process: gives back start-up
    /// memory ([`crate::memory`]), then no_new_privs, Landlock (this thread
    /// and the threads it starts later), and the seccomp filter on every
    /// thread.
    pub fn apply(&self) -> Result<Report, ConfineError> {
        // Set-up is over: its code pages need not stay resident (before
        // Landlock, which may hide /proc/self/maps).
        crate::memory::release_startup_memory();
        if Self::disabled_by_env() {
            return Ok(Report {
                seccomp: false,
                no_new_privs: false,
                landlock_abi: None,
            });
        }
        if !self.no_new_privs {
            return Ok(Report {
                seccomp: false,
                no_new_privs: false,
                landlock_abi: None,
            });
        }
        crate::sandbox::no_new_privs().map_err(ConfineError::NoNewPrivs)?;
        let landlock_abi = if self.landlock {
            Some(self.apply_landlock()?)
        } else {
            None
        };
        let program = self.program()?;
        seccompiler::apply_filter_all_threads(&program)
            .map_err(|e| ConfineError::Install(e.to_string()))?;
        Ok(Report {
            seccomp: true,
            no_new_privs: true,
            landlock_abi,
        })
    }

    /// [`apply`](Self::apply) for a process that keeps running without a
    /// sandbox when the kernel refuses one: the report as a sentence (for
    /// `--debug` and a driver's `sandbox` info), or `off: REASON` after a
    /// warning on stderr that names `who`.
    pub fn apply_or_warn(&self, who: &str) -> String {
        match self.apply() {
            Ok(report) => report.to_string(),
            Err(e) => {
                eprintln!("{who}: warning: running without a sandbox: {e}");
                format!("off: {e}")
            }
        }
    }

    /// The BPF program of the system-call allow-list.
    pub fn program(&self) -> Result<BpfProgram, ConfineError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for group in &self.calls {
            for nr in calls_of(*group) {
                rules.insert(*nr, Vec::new());
            }
        }
        for nr in &self.extra {
            rules.insert(*nr, Vec::new());
        }
        if self.calls.contains(&Calls::Sockets) {
            let by_family = |f: &i32| -> Result<SeccompRule, ConfineError> {
                let cond =
                    SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *f as u64)
                        .map_err(|e| ConfineError::Build(e.to_string()))?;
                SeccompRule::new(vec![cond]).map_err(|e| ConfineError::Build(e.to_string()))
            };
            for nr in [libc::SYS_socket, libc::SYS_socketpair] {
                let chain = self
                    .families
                    .iter()
                    .map(by_family)
                    .collect::<Result<Vec<_>, _>>()?;
                if chain.is_empty() {
                    rules.remove(&nr);
                } else {
                    rules.insert(nr, chain);
                }
            }
        }
        // Signals to threads: only this process's own (raise, abort), not
        // the user's other processes (unless Spawn allows kill anyway).
        if !self.calls.contains(&Calls::Spawn) && !self.extra.contains(&libc::SYS_tgkill) {
            let own = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u64::from(std::process::id()),
            )
            .map_err(|e| ConfineError::Build(e.to_string()))?;
            let rule =
                SeccompRule::new(vec![own]).map_err(|e| ConfineError::Build(e.to_string()))?;
            rules.insert(libc::SYS_tgkill, vec![rule]);
        }
        let refuse = match self.on_violation {
            OnViolation::Kill => SeccompAction::KillProcess,
            OnViolation::Deny => SeccompAction::Errno(libc::EPERM as u32),
        };
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|e| ConfineError::Build(e.to_string()))?;
        let filter = SeccompFilter::new(rules, refuse, SeccompAction::Allow, arch)
            .map_err(|e| ConfineError::Build(e.to_string()))?;
        filter
            .try_into()
            .map_err(|e: seccompiler::BackendError| ConfineError::Build(e.to_string()))
    }

    /// Restricts the filesystem to the listed paths; returns the ABI used
    /// (0 where the kernel has no Landlock: best effort, as documented).
    fn apply_landlock(&self) -> Result<i32, ConfineError> {
        use landlock::{
            path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr,
            RulesetStatus, Scope, ABI,
        };
        let abi = ABI::V5;
        let err = |e: landlock::RulesetError| ConfineError::Landlock(e.to_string());
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))
            .map_err(err)?
            // Abstract unix sockets made outside the sandbox (another
            // program's, e.g. a desktop session's) cannot be connected to
            // (Landlock ABI 6; ignored below).
            .scope(Scope::AbstractUnixSocket)
            .map_err(err)?
            .create()
            .map_err(err)?;
        for (access, path) in &self.paths {
            let rights = match access {
                PathAccess::Read => AccessFs::from_read(abi),
                PathAccess::Write => AccessFs::from_all(abi),
                PathAccess::Exec => AccessFs::Execute | AccessFs::ReadFile,
                PathAccess::RemoveDirs => AccessFs::RemoveDir.into(),
            };
            ruleset = ruleset
                .add_rules(path_beneath_rules([path], rights))
                .map_err(err)?;
        }
        let status = ruleset.restrict_self().map_err(err)?;
        Ok(match status.ruleset {
            RulesetStatus::NotEnforced => 0,
            _ => kernel_landlock_abi(),
        })
    }
}

/// The kernel's Landlock ABI version (0: none).
pub fn kernel_landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    // only returns the ABI version; it reads no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    i32::try_from(r).unwrap_or(0).max(0)
}

/// `Seccomp:` and `NoNewPrivs:` of every task of process `pid`, from
/// /proc (for tests and `--debug`): (tid, seccomp mode, no_new_privs).
pub fn task_status(pid: u32) -> Vec<(u32, u32, u32)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        out.push((tid, field("Seccomp:"), field("NoNewPrivs:")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::probe::{self, run_confined, KILLED};
    use super::*;

    #[test]
    fn base_alone_refuses_files_exec_ptrace_and_namespaces() {
        let base = Confinement::new();
        assert_eq!(run_confined(&base, probe::open_a_file), libc::EPERM);
        assert_eq!(run_confined(&base, probe::exec_true), libc::EPERM);
        assert_eq!(run_confined(&base, probe::ptrace_parent), libc::EPERM);
        assert_eq!(run_confined(&base, probe::setns_net), libc::EPERM);
        assert_eq!(run_confined(&base, probe::udp_socket), libc::EPERM);
    }

    #[test]
    fn landlock_limits_files_to_the_listed_paths() {
        if kernel_landlock_abi() == 0 {
            // Best effort below ABI 1 is the documented behaviour; this
            // machine's kernel has Landlock, so this branch is not taken here.
            return;
        }
        let only_proc = Confinement::new().allow(Calls::Files).read("/proc");
        assert_eq!(run_confined(&only_proc, probe::open_a_file), libc::EACCES);
        let etc = Confinement::new().allow(Calls::Files).read("/etc");
        assert_eq!(run_confined(&etc, probe::open_a_file), 0);
    }

    #[test]
    fn only_the_listed_socket_families_are_allowed() {
        let policy = Confinement::new().socket_families(&[libc::AF_UNIX]);
        assert_eq!(run_confined(&policy, || probe::socket_of(libc::AF_UNIX)), 0);
        assert_eq!(
            run_confined(&policy, || probe::socket_of(libc::AF_INET)),
            libc::EPERM
        );
    }

    #[test]
    fn supervising_signals_only_through_a_pidfd() {
        let policy = Confinement::new().allow(Calls::Supervise);
        assert_eq!(probe::signal_helpers(&policy).unwrap(), (0, libc::EPERM));
        let unsupervised = Confinement::new();
        assert_eq!(
            probe::signal_helpers(&unsupervised).unwrap(),
            (libc::EPERM, libc::EPERM)
        );
    }

    #[test]
    fn signals_to_other_processes_are_refused_but_raise_works() {
        fn tgkill_parent_then_self() -> i32 {
            // SAFETY: tgkill with signal 0 only checks permission.
            let other =
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getppid(), libc::getppid(), 0) };
            let e = probe::errno_if_negative(other);
            // SAFETY: signal 0 to our own thread.
            let own = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), 0) };
            if own != 0 {
                return 200;
            }
            e
        }
        assert_eq!(
            run_confined(&Confinement::new(), tgkill_parent_then_self),
            libc::EPERM
        );
    }

    #[test]
    fn kill_mode_kills_the_process_on_a_refused_call() {
        let policy = Confinement::new().on_violation(OnViolation::Kill);
        assert_eq!(run_confined(&policy, probe::open_a_file), KILLED);
    }

    #[test]
    fn the_filter_covers_threads_started_before_it() {
        fn thread_then_filter() -> i32 {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<i32>();
            std::thread::spawn(move || {
                let _ = rx.recv();
                let _ = done_tx.send(probe::open_a_file());
            });
            if Confinement::new().apply().is_err() {
                return 100;
            }
            let _ = tx.send(());
            done_rx.recv().unwrap_or(101)
        }
        // The probe applies the policy itself, after its thread exists.
        assert_eq!(probe::run_forked(thread_then_filter), libc::EPERM);
    }

    #[test]
    fn task_status_reads_every_thread() {
        let me = std::process::id();
        let tasks = task_status(me);
        assert!(tasks.iter().any(|(tid, _, _)| *tid == me), "{tasks:?}");
        // The test harness runs unconfined.
        assert!(
            tasks.iter().all(|(_, seccomp, _)| *seccomp == 0),
            "{tasks:?}"
        );
    }
}
