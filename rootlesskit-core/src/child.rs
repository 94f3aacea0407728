//! The child: runs inside the new namespaces, finishes their set-up as the
//! parent directs, then runs CMD, forwards signals to it and reaps orphans.

use crate::netns;
use crate::settings::Settings;
use crate::sync::{ToChild, ToParent, CHILD_FD_ENV};
use rk_driver::{Channel, NetworkConfig};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Entry point of the re-executed child; returns the exit code.
pub fn main(fd: &str) -> i32 {
    let raw: i32 = match fd.parse() {
        Ok(n) => n,
        Err(_) => {
            log::error!("{CHILD_FD_ENV}={fd:?} is not a descriptor");
            return 1;
        }
    };
    std::env::remove_var(CHILD_FD_ENV);
    // SAFETY: the parent passed this descriptor for exactly this purpose and
    // nothing else in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: F_SETFD on a descriptor we own; keeps it out of CMD.
    unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
    let channel = Channel::from_fd(owned);
    match set_up(&channel) {
        Ok(run) => {
            drop(channel);
            if run.pidns {
                crate::supervise::run_command(&run)
            } else {
                // Without a PID namespace nothing needs this process any
                // more: CMD takes its place, and the parent (a subreaper)
                // reaps orphans. One process less to keep resident.
                crate::supervise::exec_command(&run)
            }
        }
        Err(message) => {
            let _ = channel.send(&ToParent::Failed { message }, &[]);
            1
        }
    }
}

/// What the child runs once set-up is done.
pub struct CommandToRun {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub pidns: bool,
    /// `LISTEN_PID` must name CMD (see [`crate::activation`]).
    pub socket_activation: bool,
}

fn set_up(channel: &Channel) -> Result<CommandToRun, String> {
    let (msg, _) = channel
        .recv::<ToChild>(None)
        .map_err(|e| format!("waiting for the parent: {e}"))?;
    let ToChild::Start {
        settings,
        state_dir,
        parent_euid,
        parent_egid,
    } = msg
    else {
        return Err("protocol error: expected start".into());
    };
    crate::mounts::set_propagation(settings.propagation)?;

    let userns = std::fs::File::open("/proc/self/ns/user")
        .map(OwnedFd::from)
        .map_err(|e| format!("opening /proc/self/ns/user: {e}"))?;
    // With --detach-netns the network namespace is a separate one, pinned
    // by a bind mount, and this process stays where it was.
    let detached = if settings.detach_netns {
        Some(netns::create_detached(
            &state_dir.join(crate::statedir::NETNS),
        )?)
    } else {
        None
    };
    let netns_fd = match (&detached, settings.net.new_netns()) {
        (Some(d), _) => Some(d.try_clone().map_err(|e| e.to_string())?),
        (None, true) => Some(netns::current()?),
        (None, false) => None,
    };
    let mut fds: Vec<BorrowedFd<'_>> = vec![userns.as_fd()];
    if let Some(n) = &netns_fd {
        fds.push(n.as_fd());
    }
    channel
        .send(&ToParent::Namespaces, &fds)
        .map_err(|e| format!("sending namespaces: {e}"))?;

    let (msg, _) = channel
        .recv::<ToChild>(None)
        .map_err(|e| format!("waiting for the network: {e}"))?;
    let ToChild::Network { config } = msg else {
        return Err("protocol error: expected network".into());
    };
    if settings.net.new_netns() {
        configure_network(
            netns::borrow(&detached),
            config.as_ref(),
            &settings.net_name,
        )?;
    }
    if settings.net.new_netns() && !settings.detach_netns {
        crate::mounts::mount_sysfs_for_netns()?;
    }
    if settings.pidns {
        crate::mounts::mount_proc()?;
    }
    for dir in &settings.copy_up {
        crate::copyup::copy_up(dir)?;
    }
    if let Some(cfg) = &config {
        write_etc_files(cfg, &settings, &state_dir)?;
    }
    let program = settings.command.first().ok_or("no command specified")?;
    crate::supervise::resolve_program(program)?;
    channel
        .send(&ToParent::Ready, &[])
        .map_err(|e| format!("reporting readiness: {e}"))?;
    match channel.recv::<ToChild>(None) {
        Ok((ToChild::Go, _)) => {}
        Ok(_) => return Err("protocol error: expected go".into()),
        Err(e) => return Err(format!("waiting for the parent to start CMD: {e}")),
    }
    let mut env = vec![
        ("ROOTLESSKIT_STATE_DIR".into(), path_str(&state_dir)),
        ("ROOTLESSKIT_PARENT_EUID".into(), parent_euid.to_string()),
        ("ROOTLESSKIT_PARENT_EGID".into(), parent_egid.to_string()),
    ];
    if settings.socket_activation && !settings.pidns {
        // CMD replaces this process, so it keeps this pid.
        env.push(crate::activation::listen_pid_for_self());
    }
    Ok(CommandToRun {
        argv: settings.command.clone(),
        env,
        pidns: settings.pidns,
        socket_activation: settings.socket_activation,
    })
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Loopback, ping, and the driver's interface (unless it did that itself);
/// a failure with the interface names the driver (`shown`) that answered.
fn configure_network(
    netns: Option<BorrowedFd<'_>>,
    config: Option<&NetworkConfig>,
    shown: &str,
) -> Result<(), String> {
    crate::netlink::bring_up_loopback(netns).map_err(|e| e.to_string())?;
    if let Err(e) = netns::allow_ping(netns) {
        log::warn!("{e}");
    }
    let Some(cfg) = config else { return Ok(()) };
    let answered = |e: String| format!("network driver {shown}: setting up what it answered: {e}");
    if cfg.configured_by_driver {
        return crate::netlink::bring_up_interface(netns, &cfg.interface, Some(cfg.mtu))
            .map_err(|e| answered(e.to_string()));
    }
    let setup = crate::answer::interface_setup(cfg).map_err(answered)?;
    crate::netlink::configure_interface(netns, &setup).map_err(|e| answered(e.to_string()))
}

/// `$STATE_DIR/resolv.conf` and `$STATE_DIR/hosts` always (RootlessKit
/// documents them), and over `/etc` only when CMD lives in the new network
/// namespace: with `--detach-netns` CMD keeps the host's network, so the
/// host's files stay (the driver's resolver is not reachable from there).
fn write_etc_files(
    cfg: &NetworkConfig,
    settings: &Settings,
    state_dir: &Path,
) -> Result<(), String> {
    let existing = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let hosts = crate::etcfiles::hosts(&existing, &hostname);
    let resolv = (!cfg.dns.is_empty()).then(|| crate::etcfiles::resolv_conf(&cfg.dns));
    crate::etcfiles::write_state_file(state_dir, "hosts", &hosts)?;
    if let Some(r) = &resolv {
        crate::etcfiles::write_state_file(state_dir, "resolv.conf", r)?;
    }
    if settings.detach_netns {
        return Ok(());
    }
    let etc_copied = settings.copy_up.iter().any(|d| d == Path::new("/etc"));
    if let Some(r) = &resolv {
        crate::etcfiles::install("resolv.conf", r, etc_copied, state_dir)?;
    }
    crate::etcfiles::install("hosts", &hosts, etc_copied, state_dir)
}
