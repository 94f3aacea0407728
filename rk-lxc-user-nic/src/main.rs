//! Placeholder: answers the protocol but refuses to configure.

use rk_driver::{ConfigureRequest, Driver, DriverError, DriverInfo, NamespaceFds, NetworkConfig};

struct NotYet;

impl Driver for NotYet {
    fn info(&self) -> DriverInfo {
        DriverInfo::new("lxc-user-nic", env!("CARGO_PKG_VERSION"))
    }

    fn configure(
        &mut self,
        _: ConfigureRequest,
        _: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError> {
        Err(DriverError::new(
            "the lxc-user-nic driver is not implemented yet in this build",
        ))
    }
}

fn main() {
    rk_driver::serve(NotYet)
}
