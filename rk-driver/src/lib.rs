//! Protocol and SDK for rootlesskit network drivers.
//!
//! A driver is a separate executable `rk-NAME`. The core starts it with one
//! connected `SOCK_SEQPACKET` unix socket at the descriptor named by
//! [`DRIVER_FD_ENV`], and the two exchange JSON messages, one per datagram
//! (see `docs/driver-protocol.md`). A Rust driver implements [`Driver`] and
//! calls [`serve`]:
//!
//! ```no_run
//! # use rk_driver::*;
//! # struct MyDriver;
//! # impl Driver for MyDriver {
//! #   fn info(&self) -> DriverInfo { DriverInfo::new("my", "0.1.0") }
//! #   fn configure(&mut self, _: ConfigureRequest, _: NamespaceFds) -> Result<NetworkConfig, DriverError> { unimplemented!() }
//! # }
//! fn main() { rk_driver::serve(MyDriver) }
//! ```

pub mod channel;
pub mod confine;
pub mod epoll;
pub mod fdio;
pub mod helper;
pub mod limits;
pub mod logger;
pub mod lookup;
pub mod mac;
pub mod memory;
pub mod netlink;
pub mod nsexec;
pub mod plan;
pub mod process;
pub mod protocol;
pub mod relay;
pub mod sandbox;
mod serve;
pub mod tap;
#[cfg(feature = "testing")]
pub mod testing;

pub use channel::{Channel, ChannelError};

/// The git commit the workspace was built from (`unknown` outside git).
pub const GIT_COMMIT: &str = env!("RK_GIT_COMMIT");
pub use protocol::*;
pub use serve::{debug_enabled, serve, Context, Driver, DriverError, NamespaceFds};
