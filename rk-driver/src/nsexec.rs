//! Doing work inside the child's namespaces from a driver.
//!
//! Joining a user namespace needs a single-threaded process, and whatever a
//! driver must create *inside* the child's network namespace (a tap device,
//! a DHCP socket) is created by a forked helper that joins the user and
//! network namespaces. Sockets and taps keep the namespace they were made in
//! wherever their descriptor goes. Two shapes:
//!
//! - one-shot, [`run_in_namespaces`]: a helper runs a closure there and
//!   sends back the descriptors it returns, then exits;
//! - long-lived, [`Resident`]: a forked process (in the namespaces, or not)
//!   that runs a body until it is done or killed, e.g. to hand out sockets
//!   made inside on request, or to clean up after the driver.
//!
//! Both refuse to fork from a multi-threaded process: only the calling
//! thread survives a fork, and a lock another thread held (the allocator's)
//! would stay locked in the child for ever.

use crate::channel::Channel;
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult, Pid};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// How long a forked helper may take to join the namespaces and answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NsExecError {
    #[error(
        "cannot fork {what}: this process runs {threads} threads and only a single-threaded \
         process may fork into namespaces (start it before any thread, e.g. during configure)"
    )]
    MultiThreaded { what: String, threads: usize },
    #[error("fork: {0}")]
    Fork(nix::Error),
    #[error("in the child's namespaces: {0}")]
    Helper(String),
    #[error("namespace helper: {0}")]
    Channel(#[from] crate::ChannelError),
}

/// The namespaces a helper joins: the child's user namespace (if the
/// driver runs outside it) and its network namespace.
#[derive(Debug, Clone, Copy)]
pub struct Namespaces<'a> {
    pub userns: Option<BorrowedFd<'a>>,
    pub netns: BorrowedFd<'a>,
}

impl<'a> From<&'a crate::NamespaceFds> for Namespaces<'a> {
    fn from(ns: &'a crate::NamespaceFds) -> Self {
        Namespaces {
            userns: Some(ns.userns.as_fd()),
            netns: ns.netns.as_fd(),
        }
    }
}

impl Namespaces<'_> {
    /// setns into the user namespace (first: it grants the capabilities
    /// over the network namespace), then the network namespace. The kernel
    /// refuses a user namespace to a multi-threaded process: call it from
    /// a single-threaded one (a fresh helper, or after [`ensure_single_threaded`]).
    pub fn join(self) -> Result<(), String> {
        if let Some(u) = self.userns {
            setns(u, CloneFlags::CLONE_NEWUSER)
                .map_err(|e| format!("joining the child's user namespace: {e}"))?;
        }
        setns(self.netns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("joining the child's network namespace: {e}"))
    }
}

/// How many threads this process runs (from `/proc/self/status`, else the
/// entries of `/proc/self/task`).
pub fn thread_count() -> usize {
    let from_status = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        });
    from_status
        .unwrap_or_else(|| std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count().max(1)))
}

/// Refuses (with an error that says why and what to do) unless the
/// process is single-threaded; `what` names the helper to be forked.
pub fn ensure_single_threaded(what: &str) -> Result<(), NsExecError> {
    match thread_count() {
        1 => Ok(()),
        threads => Err(NsExecError::MultiThreaded {
            what: what.to_owned(),
            threads,
        }),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Outcome {
    error: Option<String>,
}

/// Forks a helper that joins `userns` (if given) and `netns`, runs `work`
/// there, and returns the descriptors `work` produced. The process must be
/// single-threaded.
pub fn run_in_namespaces<F>(
    userns: Option<BorrowedFd<'_>>,
    netns: BorrowedFd<'_>,
    work: F,
) -> Result<Vec<OwnedFd>, NsExecError>
where
    F: FnOnce() -> Result<Vec<OwnedFd>, String>,
{
    ensure_single_threaded("a helper into the child's namespaces")?;
    let ns = Namespaces { userns, netns };
    let (ours, theirs) = Channel::pair()?;
    // SAFETY: the process is single-threaded (checked above); the child
    // only joins namespaces, runs `work`, sends the result and calls _exit.
    match unsafe { fork() }.map_err(NsExecError::Fork)? {
        ForkResult::Child => {
            drop(ours);
            let result = ns.join().and_then(|()| work());
            let (outcome, fds) = match result {
                Ok(fds) => (Outcome { error: None }, fds),
                Err(e) => (Outcome { error: Some(e) }, Vec::new()),
            };
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            let code = i32::from(theirs.send(&outcome, &borrowed).is_err());
            // SAFETY: _exit skips destructors and atexit handlers that belong
            // to the parent's copy of the process state.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let got = ours.recv::<Outcome>(Some(ANSWER_TIMEOUT));
            if got.is_err() {
                let _ = kill(child, Signal::SIGKILL);
            }
            let _ = waitpid(child, None);
            let (outcome, fds) = got?;
            match outcome.error {
                Some(e) => Err(NsExecError::Helper(e)),
                None => Ok(fds),
            }
        }
    }
}

/// A long-lived forked process. Dropping it kills and reaps it, so that
/// nothing of the driver outlives it, not even a zombie.
#[derive(Debug)]
pub struct Resident {
    pid: Pid,
    /// Opened at once: a confined driver signals it only through this.
    pidfd: Option<OwnedFd>,
    reaped: bool,
}

/// Written by a resident once it is in its namespaces.
const JOINED: u8 = b'+';

impl Resident {
    /// Forks a process that joins `namespaces` (if given) and runs `body`;
    /// its return value is the exit status. With `die_with_parent` the
    /// process gets SIGKILL when the driver dies (`PR_SET_PDEATHSIG`);
    /// without, it outlives the driver (a guard that cleans up after it).
    ///
    /// Returns once the process is in its namespaces, or with the reason it
    /// could not join them. Descriptors `body` owns are closed in the
    /// driver (the closure is dropped there) and live on in the process.
    /// The process must be single-threaded; `what` names the resident in
    /// errors.
    pub fn spawn<F>(
        what: &str,
        namespaces: Option<Namespaces<'_>>,
        die_with_parent: bool,
        body: F,
    ) -> Result<Resident, NsExecError>
    where
        F: FnOnce() -> i32,
    {
        ensure_single_threaded(what)?;
        let (status_r, status_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| NsExecError::Helper(format!("pipe: {e}")))?;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the process is single-threaded (checked above), so the
        // child may run ordinary code; it ends with _exit.
        match unsafe { fork() }.map_err(NsExecError::Fork)? {
            ForkResult::Child => {
                drop(status_r);
                if die_with_parent {
                    // SAFETY: prctl and getppid with integer arguments.
                    let orphaned = unsafe {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                        libc::getppid() != parent
                    };
                    if orphaned {
                        // SAFETY: see below.
                        unsafe { libc::_exit(1) }
                    }
                }
                let joined = namespaces.map_or(Ok(()), |ns| ns.join());
                let report = match &joined {
                    Ok(()) => vec![JOINED],
                    Err(e) => e.as_bytes().to_vec(),
                };
                let _ = nix::unistd::write(&status_w, &report);
                drop(status_w);
                let code = match joined {
                    Ok(()) => body(),
                    Err(_) => 1,
                };
                // SAFETY: _exit skips destructors and atexit handlers that
                // belong to the driver's copy of the process state.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(status_w);
                drop(body);
                let resident = Resident {
                    pid: child,
                    pidfd: crate::process::pidfd_open(child.as_raw() as u32).ok(),
                    reaped: false,
                };
                let mut report = [0u8; 512];
                let ready = crate::fdio::wait_readable(status_r.as_fd(), ANSWER_TIMEOUT);
                let n = match ready {
                    Ok(true) => nix::unistd::read(status_r.as_fd(), &mut report).unwrap_or(0),
                    _ => 0,
                };
                match &report[..n] {
                    [JOINED] => Ok(resident),
                    [] => {
                        resident.kill();
                        Err(NsExecError::Helper(format!(
                            "{what} ended (or hung) before it was ready"
                        )))
                    }
                    text => Err(NsExecError::Helper(format!(
                        "{what}: {}",
                        String::from_utf8_lossy(text)
                    ))),
                }
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Sends SIGKILL (through the pidfd when there is one); [`Drop`] or
    /// [`Resident::finish`] reaps it.
    pub fn kill(&self) {
        if self.reaped {
            return;
        }
        match &self.pidfd {
            Some(fd) => {
                let _ = crate::process::pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
            }
            None => {
                let _ = kill(self.pid, Signal::SIGKILL);
            }
        }
    }

    /// Waits up to `timeout` for the process to end by itself, kills it if
    /// it did not, and reaps it; `true` if it ended by itself. Without a
    /// pidfd (kernels before 5.3) this waits without a limit.
    pub fn finish(mut self, timeout: Duration) -> bool {
        let ms = timeout.as_millis().min(u128::from(u16::MAX)) as u16;
        let exited = match &self.pidfd {
            Some(fd) => crate::process::wait_exit(fd.as_fd(), ms),
            None => true,
        };
        if !exited {
            self.kill();
        }
        self.reap();
        exited
    }

    fn reap(&mut self) {
        if !self.reaped {
            while let Err(nix::Error::EINTR) = waitpid(self.pid, None) {}
            self.reaped = true;
        }
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        self.kill();
        self.reap();
    }
}

/// Closes every descriptor of this process except `keep`. For a resident
/// that must not hold on to the driver's descriptors (its protocol socket
/// above all: the core would not see the driver go).
pub fn close_other_fds(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().filter_map(|&f| u32::try_from(f).ok()).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 0u32;
    for k in keep.iter().copied().chain([u32::MAX]) {
        if k > from {
            let to = if k == u32::MAX { u32::MAX } else { k - 1 };
            close_range(from, to);
        }
        from = k.saturating_add(1);
    }
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range on descriptor numbers of this process; the caller
    // uses none of them again.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r == 0 {
        return;
    }
    // Kernels before 5.9: close the open ones one by one.
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if (first..=last).contains(&(fd as u32)) {
            // SAFETY: as above (the listing's own descriptor is closed
            // already; closing it again fails harmlessly).
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Runs `probe` in a forked child in new user and network namespaces
    /// (as root inside them); returns its exit status. Test-only: the test
    /// harness is multi-threaded, and the child only makes system calls.
    pub(crate) fn in_new_user_and_net_namespace(probe: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child runs `probe` and leaves with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code =
                    match nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
                    {
                        Ok(()) => probe(),
                        Err(_) => 99,
                    };
                // SAFETY: leaves the forked copy without running destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                nix::sys::wait::WaitStatus::Exited(_, code) => code,
                other => panic!("probe ended with {other:?}"),
            },
        }
    }

    #[test]
    fn this_test_process_has_threads_and_forking_helpers_is_refused() {
        // The harness's main thread and this test's.
        let _other = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
        assert!(thread_count() >= 2);
        let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
        let e = run_in_namespaces(None, netns.as_fd(), || Ok(Vec::new())).unwrap_err();
        assert!(matches!(e, NsExecError::MultiThreaded { .. }), "{e}");
        assert!(e.to_string().contains("single-threaded"), "{e}");
        let e = Resident::spawn("a test resident", None, true, || 0).unwrap_err();
        assert!(e.to_string().contains("cannot fork a test resident"), "{e}");
    }

    #[test]
    fn helpers_forked_from_a_single_threaded_process_work_in_the_namespace() {
        // The forked child is single-threaded, as a driver is at set-up.
        let code = in_new_user_and_net_namespace(|| {
            let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
            let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
            let ns = Namespaces {
                userns: None,
                netns: netns.as_fd(),
            };
            let fds = run_in_namespaces(None, netns.as_fd(), || {
                std::fs::File::open("/proc/self/ns/net")
                    .map(|f| vec![OwnedFd::from(f)])
                    .map_err(|e| e.to_string())
            });
            match fds {
                Ok(v) if v.len() == 1 => {}
                _ => return 10,
            }
            match run_in_namespaces(None, netns.as_fd(), || Err("no".into())) {
                Err(NsExecError::Helper(e)) if e == "no" => {}
                _ => return 11,
            }
            let Ok(resident) = Resident::spawn("a test resident", Some(ns), true, || loop {
                // SAFETY: pause has no preconditions; the test kills us.
                unsafe { libc::pause() };
            }) else {
                return 12;
            };
            let pid = resident.pid();
            if std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != Some(ours) {
                return 13;
            }
            drop(resident);
            if waitpid(Pid::from_raw(pid), None) != Err(nix::Error::ECHILD) {
                return 14;
            }
            // A descriptor that is no namespace: the reason comes back.
            let (not_ns, _w) = nix::unistd::pipe().unwrap();
            let bad = Namespaces {
                userns: None,
                netns: not_ns.as_fd(),
            };
            match Resident::spawn("a test resident", Some(bad), true, || 0) {
                Err(e)
                    if e.to_string()
                        .contains("joining the child's network namespace") => {}
                _ => return 15,
            }
            let finished = Resident::spawn("a test resident", None, false, || 3).unwrap();
            if !finished.finish(Duration::from_secs(5)) {
                return 16;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_resident_that_dies_with_its_parent_does_and_a_guard_outlives_it() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let code = in_new_user_and_net_namespace(|| {
            let sleep = || loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
            };
            let dies = Resident::spawn("a test resident", None, true, sleep).unwrap();
            let outlives = Resident::spawn("a test guard", None, false, sleep).unwrap();
            let pids = [dies.pid(), outlives.pid()].map(i32::to_ne_bytes).concat();
            let _ = nix::unistd::write(&w, &pids);
            // Leaves without dropping either (as a killed driver would).
            std::mem::forget((dies, outlives));
            0
        });
        assert_eq!(code, 0);
        drop(w);
        let mut pids = [0u8; 8];
        nix::unistd::read(r.as_fd(), &mut pids).unwrap();
        let pid = |i: usize| i32::from_ne_bytes(pids[i * 4..i * 4 + 4].try_into().unwrap());
        // Gone, or a zombie waiting for init to reap it.
        let alive = |p: i32| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid(0)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let guard_alive = alive(pid(1));
        let _ = kill(Pid::from_raw(pid(1)), Signal::SIGKILL);
        assert!(!alive(pid(0)), "the resident outlived its parent");
        assert!(guard_alive, "the guard died with its parent");
    }

    #[test]
    fn close_other_fds_keeps_only_the_named_ones() {
        let code = in_new_user_and_net_namespace(|| {
            let (a, b) = nix::unistd::pipe().unwrap();
            let (c, _d) = nix::unistd::pipe().unwrap();
            close_other_fds(&[a.as_raw_fd(), c.as_raw_fd()]);
            let open = |fd: RawFd| {
                // SAFETY: F_GETFD on a descriptor number.
                unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
            };
            let ok = open(a.as_raw_fd()) && open(c.as_raw_fd()) && !open(b.as_raw_fd());
            std::mem::forget((a, b, c, _d));
            i32::from(!ok)
        });
        assert_eq!(code, 0);
    }
}
