//! `rk-loopback`: the smallest driver the SDK makes, for driver authors to
//! read and for rk-driver's own conformance test. It brings up nothing:
//! its "network" is the namespace's loopback, which the core sets up anyway.

use rk_driver::{ConfigureRequest, Driver, DriverError, DriverInfo, NamespaceFds, NetworkConfig};

struct Loopback;

impl Driver for Loopback {
    fn info(&self) -> DriverInfo {
        DriverInfo::new("loopback", env!("CARGO_PKG_VERSION")).with_capabilities(&["mtu"])
    }

    fn configure(
        &mut self,
        req: ConfigureRequest,
        _namespaces: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError> {
        if let Some(key) = req.options.keys().find(|k| *k != "port-driver") {
            return Err(DriverError::new(format!(
                "unknown option {key}: rk-loopback takes none"
            )));
        }
        Ok(NetworkConfig {
            interface: "lo".into(),
            mtu: req.mtu.unwrap_or(65520),
            configured_by_driver: true,
            ..Default::default()
        })
    }
}

fn main() {
    rk_driver::serve(Loopback)
}
