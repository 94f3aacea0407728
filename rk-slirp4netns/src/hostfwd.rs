//! The slirp4netns port driver: host forwards through slirp4netns's API
//! socket (`--api-socket`), as RootlessKit's `--port-driver=slirp4netns`
//! does: `{"execute":"add_hostfwd","arguments":{...}}`, one request per
//! connection, answered `{"return":{...}}` or `{"error":{"desc":...}}`.

use rk_driver::{DriverError, PortDriverOffer, PortRule};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PORT_DRIVER: &str = "slirp4netns";

/// Forwards made through one slirp4netns.
#[derive(Debug)]
pub struct HostForwards {
    socket: PathBuf,
    /// The guest address forwards go to by default (the child's IP).
    guest: String,
    /// The core's port id → slirp4netns's hostfwd id.
    ids: BTreeMap<i64, i64>,
}

impl HostForwards {
    pub fn new(socket: &Path, guest: &str) -> HostForwards {
        HostForwards {
            socket: socket.to_path_buf(),
            guest: guest.to_owned(),
            ids: BTreeMap::new(),
        }
    }

    /// What slirp4netns forwards: IPv4 only, never to the guest's loopback.
    pub fn offer() -> PortDriverOffer {
        PortDriverOffer {
            protos: ["tcp", "tcp4", "udp", "udp4"].map(String::from).to_vec(),
            disallow_loopback_child_ip: true,
        }
    }

    pub fn add(&mut self, rule: &PortRule) -> Result<(), DriverError> {
        let proto = match rule.proto.as_str() {
            "tcp" | "tcp4" => "tcp",
            "udp" | "udp4" => "udp",
            p => {
                return Err(DriverError::new(format!(
                    "unsupported protocol {p:?}: slirp4netns forwards tcp and udp over IPv4 only; use --port-driver=builtin for IPv6"
                )))
            }
        };
        let guest = match rule.child_ip.map(|ip| ip.to_canonical()) {
            None => self.guest.clone(),
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(ip) => {
                return Err(DriverError::new(format!(
                    "child IP {ip}: slirp4netns forwards to IPv4 addresses only"
                )))
            }
        };
        let host = rule
            .parent_ip
            .map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
        let reply = self.call(json!({
            "execute": "add_hostfwd",
            "arguments": {
                "proto": proto,
                "host_addr": host,
                "host_port": rule.parent_port,
                "guest_addr": guest,
                "guest_port": rule.child_port,
            }
        }))?;
        let id = reply["id"].as_i64().ok_or_else(|| {
            DriverError::new(format!(
                "slirp4netns answered add_hostfwd without an id: {reply}"
            ))
        })?;
        self.ids.insert(rule.id, id);
        Ok(())
    }

    pub fn remove(&mut self, id: i64) -> Result<(), DriverError> {
        let Some(slirp_id) = self.ids.remove(&id) else {
            return Err(DriverError::new(format!("unknown id: {id}")));
        };
        self.call(json!({"execute": "remove_hostfwd", "arguments": {"id": slirp_id}}))?;
        Ok(())
    }

    fn call(&self, request: Value) -> Result<Value, DriverError> {
        let fail = |e: std::io::Error| {
            DriverError::new(format!(
                "slirp4netns API socket {}: {e}",
                self.socket.display()
            ))
        };
        let mut s = UnixStream::connect(&self.socket).map_err(fail)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(fail)?;
        s.write_all(request.to_string().as_bytes()).map_err(fail)?;
        s.shutdown(std::net::Shutdown::Write).map_err(fail)?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).map_err(fail)?;
        let v: Value = serde_json::from_slice(&answer).map_err(|e| {
            DriverError::new(format!(
                "slirp4netns answered garbage ({e}): {:?}",
                String::from_utf8_lossy(&answer)
            ))
        })?;
        if let Some(err) = v.get("error") {
            let desc = err["desc"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| err.to_string());
            return Err(DriverError::new(format!("slirp4netns: {desc}")));
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }
}
