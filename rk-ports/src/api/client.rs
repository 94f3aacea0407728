//! A blocking client of the API (what `rootlessctl` uses), one connection
//! per call, compatible with RootlessKit's server as well as ours.

use super::{ErrorJson, Info};
use crate::http::{parse_response, Parsed, Response};

/// The largest response the client reads: the API's answers are small.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;
use crate::spec::{PortSpec, PortStatus};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A non-2xx answer: the server's message, as RootlessKit's client shows it.
    #[error("{0}")]
    Status(String),
    #[error("unexpected answer from {}: {why}", path.display())]
    Garbage { path: PathBuf, why: String },
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub fn info(&self) -> Result<Info, ClientError> {
        self.decode(self.call("GET", "/v1/info", None)?)
    }

    pub fn list_ports(&self) -> Result<Vec<PortStatus>, ClientError> {
        // RootlessKit answers `null` for no ports.
        let v: Option<Vec<PortStatus>> = self.decode(self.call("GET", "/v1/ports", None)?)?;
        Ok(v.unwrap_or_default())
    }

    pub fn add_port(&self, spec: &PortSpec) -> Result<PortStatus, ClientError> {
        let body = serde_json::to_vec(spec).expect("specs always serialize");
        self.decode(self.call("POST", "/v1/ports", Some(body))?)
    }

    pub fn remove_port(&self, id: i64) -> Result<(), ClientError> {
        self.call("DELETE", &format!("/v1/ports/{id}"), None)?;
        Ok(())
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, r: Response) -> Result<T, ClientError> {
        serde_json::from_slice(&r.body).map_err(|e| ClientError::Garbage {
            path: self.socket.clone(),
            why: e.to_string(),
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            path: self.socket.clone(),
            source,
        };
        let mut s = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            path: self.socket.clone(),
            source,
        })?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: rootlesskit\r\nConnection: close\r\n");
        if let Some(b) = &body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend(body.unwrap_or_default());
        s.write_all(&bytes).map_err(io)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let resp = loop {
            let n = s.read(&mut chunk).map_err(io)?;
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_RESPONSE {
                return Err(ClientError::Garbage {
                    path: self.socket.clone(),
                    why: format!("the response exceeds {MAX_RESPONSE} bytes"),
                });
            }
            match parse_response(&buf, n == 0) {
                Ok(Parsed::Complete(r, _)) => break r,
                Ok(Parsed::Partial { .. }) if n > 0 => continue,
                Ok(Parsed::Partial { .. }) => {
                    return Err(ClientError::Garbage {
                        path: self.socket.clone(),
                        why: "the connection closed before a whole response".into(),
                    })
                }
                Err(e) => {
                    return Err(ClientError::Garbage {
                        path: self.socket.clone(),
                        why: e.to_string(),
                    })
                }
            }
        };
        if resp.status / 100 != 2 {
            let message = match serde_json::from_slice::<ErrorJson>(&resp.body) {
                Ok(e) => e.message,
                Err(_) => format!(
                    "unexpected HTTP status {} {}, body={:?}",
                    resp.status,
                    crate::http::reason(resp.status),
                    String::from_utf8_lossy(&resp.body)
                ),
            };
            return Err(ClientError::Status(message));
        }
        Ok(resp)
    }
}
