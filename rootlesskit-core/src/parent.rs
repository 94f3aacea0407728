//! The parent: validates, creates the child in new namespaces, maps ids,
//! starts the network driver, then waits for CMD while forwarding signals.

use crate::driver::DriverProcess;
use crate::idmap::IdMaps;
use crate::settings::{NetMode, Settings};
use crate::statedir::StateDir;
use crate::sync::{ToChild, ToParent};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rk_driver::{Channel, ConfigureRequest, NetworkConfig};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs rootlesskit; returns the exit code.
pub fn run(settings: Settings) -> Result<i32, String> {
    let driver_path: Option<PathBuf> = match &settings.net {
        NetMode::Driver(name) => Some(crate::discovery::find(name, &settings.net_name)?),
        _ => None,
    };
    // The builtin port driver's relay, before any namespace exists.
    crate::ports::find_relay(&settings)?;
    let idmaps = IdMaps::lookup(&settings.subid_source)?;
    let state = StateDir::open(settings.state_dir.as_deref())?;
    log::debug!("state dir {}", state.path().display());
    let result = run_in_state_dir(&settings, driver_path, &idmaps, &state);
    state.cleanup();
    result
}

/// The child while it is being set up: killed if we give up on it.
struct ChildGuard {
    pid: Pid,
    done: bool,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

fn run_in_state_dir(
    settings: &Settings,
    driver_path: Option<PathBuf>,
    idmaps: &IdMaps,
    state: &StateDir,
) -> Result<i32, String> {
    let signals = crate::signals::take_signals()?;
    // Orphans come to us to be reaped: CMD's (it replaces the child without
    // --pidns) and the helpers of a driver that had to be killed.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        ));
    }
    // The driver first: what it announces decides which flags work, and
    // a flag it cannot honour must fail before any namespace exists.
    let mut driver_process = None;
    if let Some(path) = &driver_path {
        let d = DriverProcess::start(path, &settings.net_name, settings.debug, Some(&signals))?;
        log::debug!(
            "driver {} {} at {}: {}",
            d.info.driver,
            d.info.version,
            path.display(),
            d.info.capabilities.join(",")
        );
        for w in crate::capabilities::check(settings, &d.info)? {
            log::warn!("{w}");
        }
        driver_process = Some(d);
    }
    let (ours, theirs) = Channel::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs: OwnedFd = theirs.into_fd();
    let pid = crate::spawn::spawn_child(crate::spawn::clone_flags(settings), &theirs)?;
    drop(theirs);
    let mut guard = ChildGuard { pid, done: false };
    log::debug!("child {pid} cloned");
    idmaps.apply(pid.as_raw())?;
    log::debug!("id maps written");
    if let Some(group) = &settings.evacuate_cgroup2 {
        for w in crate::cgroup2::evacuate(group)? {
            log::warn!("{w}");
        }
        log::debug!("cgroup2 evacuated into {group}");
    }
    crate::spawn::release_child(&ours)?;
    ours.send(
        &ToChild::Start {
            settings: Box::new(settings.clone()),
            state_dir: state.path().to_path_buf(),
            parent_euid: idmaps.uid,
            parent_egid: idmaps.gid,
        },
        &[],
    )
    .map_err(|e| child_gone(&e))?;
    let fds = expect_namespaces(&ours)?;
    log::debug!("namespaces received");
    // The builtin port driver's workers join these namespaces later.
    let port_namespaces = match (settings.port_driver.as_str(), fds.as_slice()) {
        ("builtin", [userns, netns]) => Some((
            userns.try_clone().map_err(|e| format!("dup: {e}"))?,
            netns.try_clone().map_err(|e| format!("dup: {e}"))?,
        )),
        _ => None,
    };

    let mut driver = None;
    let mut config: Option<NetworkConfig> = None;
    if let Some(mut d) = driver_process {
        let [userns, netns] = <[OwnedFd; 2]>::try_from(fds)
            .map_err(|_| "the child sent no network namespace".to_owned())?;
        let request = configure_request(settings, pid, state);
        match d.configure(&request, userns.as_fd(), netns.as_fd(), Some(&signals)) {
            Ok(c) => {
                log::debug!("network: {c:?}");
                log::debug!(
                    "driver sandbox: {}",
                    c.info.get("sandbox").map_or("not reported", String::as_str)
                );
                config = Some(c);
                driver = Some(d);
            }
            Err(e) => {
                d.shutdown();
                return Err(e);
            }
        }
    }
    // Listening before CMD starts, so that CMD can call the API at once;
    // requests wait in the backlog until the loop below serves them.
    let api = crate::ports::bind_api(state)?;
    let network_info = crate::ports::network_info(settings, driver.as_ref(), config.as_ref());
    ours.send(&ToChild::Network { config }, &[])
        .map_err(|e| child_gone(&e))?;
    match ours.recv::<ToParent>(Some(SETUP_TIMEOUT)) {
        Ok((ToParent::Ready, _)) => {}
        Ok((ToParent::Failed { message }, _)) => return Err(message),
        Ok((other, _)) => return Err(format!("child: unexpected {other:?}")),
        Err(e) => return Err(child_gone(&e)),
    }
    log::debug!("child ready");
    let ports = crate::ports::start(settings, state, driver.as_ref(), port_namespaces)?;
    let mut service = rk_ports::service::Service::new(
        api,
        env!("CARGO_PKG_VERSION"),
        &state.path().to_string_lossy(),
        pid.as_raw().into(),
        network_info,
        ports,
    );
    for spec in &settings.publish {
        let st = service.publish(spec.clone())?;
        log::debug!("published port {st:?}");
    }
    state.write_child_pid(pid.as_raw())?;
    ours.send(&ToChild::Go, &[]).map_err(|e| child_gone(&e))?;
    guard.done = true;
    if let Some(report) = crate::confinement::confine_parent(state) {
        log::debug!("sandbox: {report}");
    }
    let code = wait_for_child(pid, &signals, driver.as_mut(), &mut service);
    log::debug!("command exited ({code})");
    drop(service);
    if let Some(d) = driver {
        d.shutdown();
        log::debug!("driver stopped");
    }
    reap_exited();
    Ok(code)
}

fn expect_namespaces(ours: &Channel) -> Result<Vec<OwnedFd>, String> {
    match ours.recv::<ToParent>(Some(SETUP_TIMEOUT)) {
        Ok((ToParent::Namespaces, fds)) => Ok(fds),
        Ok((ToParent::Failed { message }, _)) => Err(message),
        Ok((other, _)) => Err(format!("child: unexpected {other:?}")),
        Err(e) => Err(child_gone(&e)),
    }
}

fn child_gone(e: &rk_driver::ChannelError) -> String {
    format!("the child process failed during set-up: {e}")
}

fn configure_request(settings: &Settings, pid: Pid, state: &StateDir) -> ConfigureRequest {
    ConfigureRequest {
        child_pid: pid.as_raw(),
        state_dir: state.path().to_string_lossy().into_owned(),
        mtu: settings.mtu,
        cidr: settings.cidr,
        ifname: settings.ifname.clone(),
        disable_host_loopback: settings.disable_host_loopback,
        ipv6: settings.ipv6,
        detach_netns: settings.detach_netns,
        options: settings.driver_options.iter().cloned().collect(),
    }
}

/// Forwards signals to the child until it exits; reports a driver that
/// stops on its own. Returns the exit code.
fn wait_for_child(
    pid: Pid,
    signals: &SignalFd,
    mut driver: Option<&mut DriverProcess>,
    service: &mut rk_ports::service::Service,
) -> i32 {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        if let Some(code) = child_exit(pid) {
            return code;
        }
        let (driver_ready, service_ready) = {
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if let Some(d) = driver.as_deref() {
                fds.push(PollFd::new(d.channel().as_fd(), PollFlags::POLLIN));
            }
            let first_service = fds.len();
            for (fd, write) in service.poll_fds() {
                let mut flags = PollFlags::POLLIN;
                if write {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(fd, flags));
            }
            let timeout = match service.timeout() {
                Some(t) => PollTimeout::try_from(t.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            let woke = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => 0,
                Err(e) => {
                    log::error!("poll: {e}");
                    return 1;
                }
            };
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let driver_ready = first_service > 1 && ready(&fds[1]);
            let service_ready = woke == 0 || fds[first_service..].iter().any(ready);
            (driver_ready, service_ready)
        };
        if service_ready {
            service.on_ready();
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo != libc::SIGCHLD {
                if let Ok(sig) = Signal::try_from(signo) {
                    let _ = kill(pid, sig);
                }
            }
        }
        if driver_ready {
            if let Some(d) = driver.take() {
                log::error!("{}; the network inside is gone", d.read_notice());
            }
        }
    }
}

/// Reaps whatever of ours has exited by now (a killed driver's helpers).
/// Processes still running are CMD's own background processes, which
/// outlive us as RootlessKit's do.
fn reap_exited() {
    while let Ok(st) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if st == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Reaps every exited process: the child (CMD, or the PID-1 child with
/// --pidns), orphans that came to us as subreaper, and the driver (whose
/// handle then sees it as gone). Returns the child's exit code once it ended.
fn child_exit(pid: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return code,
            Ok(status) if status.pid() == Some(pid) => {
                code = crate::waitstatus::exit_code(status).map(|(c, note)| {
                    if let Some(n) = note {
                        log::error!("{n}");
                    }
                    c
                });
            }
            Ok(_) => {}
            Err(nix::Error::ECHILD) => return code.or(Some(1)),
            Err(_) => return code,
        }
    }
}
