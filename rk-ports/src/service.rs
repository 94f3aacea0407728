//! What the rootlesskit parent runs for the API: the server on
//! `$STATE_DIR/api.sock` and the port driver behind it, both driven by the
//! parent's poll loop.

use crate::api::{ApiError, ApiServer, Backend, Info, NetworkDriverInfo, API_VERSION};
use crate::manager::PortManager;
use crate::spec::{PortSpec, PortStatus};
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// The port side of the API.
pub enum Ports {
    /// `--port-driver=none`: every port call fails, as in RootlessKit.
    None,
    /// A port driver with its table.
    Managed(PortManager),
}

pub struct Service {
    api: ApiServer,
    state: State,
}

struct State {
    info: Info,
    ports: Ports,
}

impl Service {
    pub fn new(
        api: ApiServer,
        version: &str,
        state_dir: &str,
        child_pid: i64,
        network: Option<NetworkDriverInfo>,
        ports: Ports,
    ) -> Service {
        Service {
            api,
            state: State {
                info: Info {
                    api_version: API_VERSION.into(),
                    version: version.into(),
                    state_dir: state_dir.into(),
                    child_pid,
                    network_driver: network,
                    port_driver: None,
                },
                ports,
            },
        }
    }

    /// Publishes a port given with `-p` at start.
    pub fn publish(&mut self, spec: PortSpec) -> Result<PortStatus, String> {
        let shown = format!(
            "{}:{}:{}/{}",
            spec.parent_ip, spec.parent_port, spec.child_port, spec.proto
        );
        self.state
            .add_port(spec)
            .map_err(|e| format!("failed to expose port {shown}: {}", e.message))
    }

    /// Descriptors to poll, each with whether it also waits to write.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let mut v = self.api.poll_fds();
        if let Ports::Managed(m) = &self.state.ports {
            v.extend(m.driver().poll_fds().into_iter().map(|fd| (fd, false)));
        }
        v
    }

    /// The longest the poll may sleep.
    pub fn timeout(&self) -> Option<Duration> {
        self.api.timeout()
    }

    /// Does whatever is ready.
    pub fn on_ready(&mut self) {
        if let Ports::Managed(m) = &mut self.state.ports {
            m.driver_mut().on_ready();
        }
        self.api.serve(&mut self.state);
    }
}

fn no_port_driver() -> ApiError {
    ApiError::bad_request("no PortDriver is available: start rootlesskit with --port-driver=builtin (or slirp4netns, implicit)")
}

impl Backend for State {
    fn info(&mut self) -> Info {
        let mut info = self.info.clone();
        info.port_driver = match &self.ports {
            Ports::None => None,
            Ports::Managed(m) => Some(m.driver().info()),
        };
        info
    }

    fn list_ports(&mut self) -> Result<Vec<PortStatus>, ApiError> {
        match &mut self.ports {
            Ports::None => Err(no_port_driver()),
            Ports::Managed(m) => m.list().map_err(|e| ApiError::internal(e.message)),
        }
    }

    fn add_port(&mut self, spec: PortSpec) -> Result<PortStatus, ApiError> {
        match &mut self.ports {
            Ports::None => Err(no_port_driver()),
            Ports::Managed(m) => m.add(spec),
        }
    }

    fn remove_port(&mut self, id: i64) -> Result<(), ApiError> {
        match &mut self.ports {
            Ports::None => Err(no_port_driver()),
            Ports::Managed(m) => m.remove(id),
        }
    }
}
