//! The parent's glue to `rk-ports`: which port driver serves the API, and
//! what `GET /v1/info` says about the network.

use crate::driver::DriverProcess;
use crate::settings::{NetMode, Settings};
use crate::statedir::StateDir;
use rk_driver::NetworkConfig;
use rk_ports::api::{ApiServer, NetworkDriverInfo};
use rk_ports::builtin::{Builtin, BuiltinOptions};
use rk_ports::manager::PortManager;
use rk_ports::service::Ports;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn bind_api(state: &StateDir) -> Result<ApiServer, String> {
    let path = state.file(rk_ports::api::SOCKET_NAME);
    ApiServer::bind(&path).map_err(|e| format!("listening on {}: {e}", path.display()))
}

/// `networkDriver` of `GET /v1/info` (absent for --net=host and none, as
/// in RootlessKit).
pub fn network_info(
    settings: &Settings,
    driver: Option<&DriverProcess>,
    config: Option<&NetworkConfig>,
) -> Option<NetworkDriverInfo> {
    let NetMode::Driver(net) = &settings.net else {
        return None;
    };
    let name = match (net.as_str(), driver) {
        ("gvtap", _) => "gvisor-tap-vsock".to_owned(),
        (_, Some(d)) => d.info.driver.clone(),
        (n, None) => n.to_owned(),
    };
    Some(NetworkDriverInfo {
        driver: name,
        dns: config
            .map(|c| c.dns.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        child_ip: config
            .and_then(|c| c.ipv4)
            .map(|net| net.addr().to_string()),
        dynamic_child_ip: config.is_some_and(|c| c.dynamic),
        info: config.map(|c| c.info.clone()).unwrap_or_default(),
    })
}

/// What the parent must still be able to do for the builtin port driver
/// after it confined itself: start relay workers (to replace one that died,
/// or to add one when all are busy), which run under its filter until they
/// confine themselves.
#[derive(Debug, Clone)]
pub struct RelayNeeds {
    /// The relay executable.
    pub path: PathBuf,
    /// Workers open a netlink socket to keep client addresses.
    pub netlink: bool,
}

static RELAY: OnceLock<RelayNeeds> = OnceLock::new();

/// The builtin port driver's relay executable, when `--port-driver=builtin`
/// (`None` otherwise: nothing of the relay is looked for or loaded). Call
/// it before any namespace exists so that a missing relay fails early;
/// [`start`] calls it too.
pub fn find_relay(settings: &Settings) -> Result<Option<PathBuf>, String> {
    if settings.port_driver != "builtin" {
        return Ok(None);
    }
    if let Some(r) = RELAY.get() {
        return Ok(Some(r.path.clone()));
    }
    let path = crate::discovery::find_port_relay(rk_ports::builtin::RELAY_BINARY, "builtin")?;
    let _ = RELAY.set(RelayNeeds {
        path: path.clone(),
        netlink: settings.source_ip_transparent,
    });
    Ok(Some(path))
}

/// What [`crate::confinement`] must leave the parent for the relay, if the
/// builtin port driver runs.
pub fn relay_needs() -> Option<&'static RelayNeeds> {
    RELAY.get()
}

/// Starts the chosen port driver.
pub fn start(
    settings: &Settings,
    state: &StateDir,
    driver: Option<&DriverProcess>,
    namespaces: Option<(OwnedFd, OwnedFd)>,
) -> Result<Ports, String> {
    let name = settings.port_driver.as_str();
    match name {
        "none" => Ok(Ports::None),
        "builtin" => {
            let (userns, netns) =
                namespaces.ok_or("--port-driver=builtin: the child sent no network namespace")?;
            let relay = find_relay(settings)?
                .ok_or("--port-driver=builtin: no relay executable was looked for")?;
            let b = Builtin::start(BuiltinOptions {
                userns,
                netns,
                state_dir: state.path().to_path_buf(),
                relay,
                preserve_source: settings.source_ip_transparent,
                debug: settings.debug,
            })?;
            Ok(Ports::Managed(PortManager::new(Box::new(b))))
        }
        // The network driver announced `port-driver:implicit` (checked
        // before any namespace existed): it forwards every port by itself,
        // and the API only records what clients ask for.
        rk_ports::implicit::NAME => Ok(Ports::Managed(PortManager::new(Box::new(
            rk_ports::implicit::Implicit::new(),
        )))),
        _ => {
            let offered = driver.filter(|d| {
                d.info
                    .capabilities
                    .iter()
                    .any(|c| *c == crate::capabilities::port_driver_capability(name))
            });
            match offered {
                Some(d) => {
                    let channel = d
                        .channel()
                        .as_fd()
                        .try_clone_to_owned()
                        .map_err(|e| format!("dup: {e}"))?;
                    let driven = rk_ports::driven::Driven::start(channel, name)?;
                    Ok(Ports::Managed(PortManager::new(Box::new(driven))))
                }
                None => Err(format!(
                    "--port-driver={name}: network driver {} does not offer it",
                    driver.map_or("(none)", |d| d.info.driver.as_str())
                )),
            }
        }
    }
}
