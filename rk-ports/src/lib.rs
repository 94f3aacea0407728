//! Port forwarding for rootlesskit, compatible with RootlessKit's.
//!
//! - [`spec`]: port specs (`127.0.0.1:8080:80/tcp`), parsed and validated as
//!   RootlessKit does.
//! - [`api`]: the REST API on `$STATE_DIR/api.sock` (RootlessKit's openapi
//!   v1), served from the parent's poll loop, and a small client.
//! - [`manager`]: the table of published ports and the [`manager::PortDriver`]
//!   trait behind it.
//! - [`builtin`]: the builtin port driver: host listeners relayed into the
//!   child's network namespace by worker processes.
//! - [`driven`]: port drivers offered by the network driver through the
//!   driver protocol (slirp4netns, gvisor-tap-vsock, ...).
//! - [`implicit`]: `implicit` (pasta forwards every port by itself): the
//!   API records what clients ask for and refuses what pasta cannot do.
//! - [`service`]: what the parent runs: the API server plus a port driver.

pub mod api;
pub mod builtin;
pub mod driven;
pub mod http;
pub mod implicit;
pub mod manager;
pub mod service;
pub mod spec;

pub use spec::{PortSpec, PortStatus, Proto};
