//! RootlessKit's REST API (openapi v1, API version 1.1.1): the JSON types,
//! the server on `$STATE_DIR/api.sock`, the routes, and a client.

mod client;
mod router;
mod server;

pub use client::{Client, ClientError};
pub use router::route;
pub use server::ApiServer;

use crate::spec::{PortSpec, PortStatus};
use serde::{Deserialize, Serialize};

/// The REST API version (not the implementation's).
pub const API_VERSION: &str = "1.1.1";
/// The socket's name in the state directory.
pub const SOCKET_NAME: &str = "api.sock";

/// `GET /v1/info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub version: String,
    #[serde(rename = "stateDir")]
    pub state_dir: String,
    #[serde(rename = "childPID")]
    pub child_pid: i64,
    #[serde(
        rename = "networkDriver",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_driver: Option<NetworkDriverInfo>,
    #[serde(
        rename = "portDriver",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub port_driver: Option<PortDriverInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDriverInfo {
    pub driver: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(rename = "childIP", default, skip_serializing_if = "Option::is_none")]
    pub child_ip: Option<String>,
    #[serde(rename = "dynamicChildIP", default, skip_serializing_if = "is_false")]
    pub dynamic_child_ip: bool,
    /// The driver's `info` (docs/driver-protocol.md §6.4); not in
    /// RootlessKit's API, whose clients ignore members they do not know.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub info: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortDriverInfo {
    pub driver: String,
    #[serde(default)]
    pub protos: Vec<String>,
    #[serde(
        rename = "disallowLoopbackChildIP",
        default,
        skip_serializing_if = "is_false"
    )]
    pub disallow_loopback_child_ip: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorJson {
    pub message: String,
}

/// A failed API call: the HTTP status and the message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: message.into(),
        }
    }
}

/// What the API serves. RootlessKit's status codes: a failed add or remove
/// is 400, a failed list 500; without a port driver every port call is 400.
pub trait Backend {
    fn info(&mut self) -> Info;
    fn list_ports(&mut self) -> Result<Vec<PortStatus>, ApiError>;
    fn add_port(&mut self, spec: PortSpec) -> Result<PortStatus, ApiError>;
    fn remove_port(&mut self, id: i64) -> Result<(), ApiError>;
}
