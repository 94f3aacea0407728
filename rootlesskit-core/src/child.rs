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
            eprintln!("[rootlesskit:child] error: {CHILD_FD_ENV}={fd:?} is not a descriptor");
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
        configure_network(netns::borrow(&detached), config.as_ref())?;
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
    Ok(CommandToRun {
        argv: settings.command.clone(),
        env: vec![
            ("ROOTLESSKIT_STATE_DIR".into(), path_str(&state_dir)),
            ("ROOTLESSKIT_PARENT_EUID".into(), parent_euid.to_string()),
            ("ROOTLESSKIT_PARENT_EGID".into(), parent_egid.to_string()),
        ],
        pidns: settings.pidns,
    })
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Loopback, ping, and the driver's interface (unless it did that itself).
fn configure_network(
    netns: Option<BorrowedFd<'_>>,
    config: Option<&NetworkConfig>,
) -> Result<(), String> {
    crate::netlink::bring_up_loopback(netns).map_err(|e| e.to_string())?;
    if let Err(e) = netns::allow_ping(netns) {
        eprintln!("[rootlesskit:child] warning: {e}");
    }
    let Some(cfg) = config else { return Ok(()) };
    if cfg.configured_by_driver {
        return crate::netlink::bring_up_interface(netns, &cfg.interface, Some(cfg.mtu))
            .map_err(|e| e.to_string());
    }
    let setup = interface_setup(cfg)?;
    crate::netlink::configure_interface(netns, &setup).map_err(|e| e.to_string())
}

/// Turns the driver's answer into netlink parameters, rejecting nonsense.
pub fn interface_setup(cfg: &NetworkConfig) -> Result<crate::netlink::InterfaceSetup, String> {
    fn addr<T: std::str::FromStr>(what: &str, s: &Option<String>) -> Result<Option<T>, String> {
        s.as_deref()
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("the driver answered an invalid {what}: {v:?}"))
            })
            .transpose()
    }
    fn with_prefix<T: std::str::FromStr>(
        what: &str,
        s: &Option<String>,
        max: u8,
    ) -> Result<Option<(T, u8)>, String> {
        let Some(v) = s.as_deref() else {
            return Ok(None);
        };
        let bad = || format!("the driver answered an invalid {what}: {v:?}");
        let (a, p) = v.split_once('/').ok_or_else(bad)?;
        let p: u8 = p.parse().map_err(|_| bad())?;
        if p > max {
            return Err(bad());
        }
        Ok(Some((a.parse().map_err(|_| bad())?, p)))
    }
    crate::settings::check_ifname(&cfg.interface)
        .map_err(|e| format!("the driver answered a bad interface name: {e}"))?;
    Ok(crate::netlink::InterfaceSetup {
        name: cfg.interface.clone(),
        mtu: cfg.mtu,
        ipv4: with_prefix("IPv4 address", &cfg.ipv4, 32)?,
        gateway4: addr("IPv4 gateway", &cfg.gateway4)?,
        ipv6: with_prefix("IPv6 address", &cfg.ipv6, 128)?,
        gateway6: addr("IPv6 gateway", &cfg.gateway6)?,
    })
}

fn write_etc_files(
    cfg: &NetworkConfig,
    settings: &Settings,
    state_dir: &Path,
) -> Result<(), String> {
    let etc_copied = settings.copy_up.iter().any(|d| d == Path::new("/etc"));
    if !cfg.dns.is_empty() {
        crate::etcfiles::install(
            "resolv.conf",
            &crate::etcfiles::resolv_conf(&cfg.dns),
            etc_copied,
            state_dir,
        )?;
    }
    let existing = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    crate::etcfiles::install(
        "hosts",
        &crate::etcfiles::hosts(&existing, &hostname),
        etc_copied,
        state_dir,
    )
}
