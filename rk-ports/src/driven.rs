//! Port drivers offered by the network driver (`--port-driver=slirp4netns`
//! with `--net=slirp4netns`, ...), reached through the driver protocol:
//! `start_ports`, `add_port`, `remove_port` (see
//! docs/driver-protocol.md). The core keeps the table and the ids; the
//! network driver does the forwarding.

use crate::api::PortDriverInfo;
use crate::manager::PortDriver;
use crate::spec::{PortSpec, Proto};
use rk_driver::{Channel, CoreMessage, DriverMessage, PortDriverOffer, PortRule};
use std::os::fd::OwnedFd;
use std::time::Duration;

const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Driven {
    channel: Channel,
    name: String,
    offer: PortDriverOffer,
}

impl Driven {
    /// Asks the network driver (on a duplicate of its protocol socket) to
    /// serve port driver `name`.
    pub fn start(socket: OwnedFd, name: &str) -> Result<Driven, String> {
        let mut d = Driven {
            channel: Channel::from_fd(socket),
            name: name.to_owned(),
            offer: PortDriverOffer::default(),
        };
        match d.request(&CoreMessage::StartPorts {
            port_driver: name.to_owned(),
        })? {
            DriverMessage::PortDriver(offer) => {
                d.offer = offer;
                Ok(d)
            }
            other => Err(d.unexpected(&other)),
        }
    }

    fn request(&self, msg: &CoreMessage) -> Result<DriverMessage, String> {
        self.channel
            .send(msg, &[])
            .map_err(|e| format!("port driver {}: the network driver is gone: {e}", self.name))?;
        let (reply, _) = self
            .channel
            .recv::<DriverMessage>(Some(ANSWER_TIMEOUT))
            .map_err(|e| format!("port driver {}: {e}", self.name))?;
        match reply {
            DriverMessage::PortError { message, .. } => Err(message),
            DriverMessage::Error { message } => Err(format!(
                "port driver {}: the network driver failed: {message}",
                self.name
            )),
            other => Ok(other),
        }
    }

    fn unexpected(&self, m: &DriverMessage) -> String {
        format!("port driver {}: unexpected answer {m:?}", self.name)
    }
}

impl PortDriver for Driven {
    fn info(&self) -> PortDriverInfo {
        PortDriverInfo {
            driver: self.name.clone(),
            protos: self.offer.protos.clone(),
            disallow_loopback_child_ip: self.offer.disallow_loopback_child_ip,
        }
    }

    fn add(&mut self, id: i64, spec: &PortSpec, _: Proto) -> Result<(), String> {
        let rule = PortRule {
            id,
            proto: spec.proto.clone(),
            parent_ip: spec.parent_addr(),
            parent_port: spec.parent_port as u16,
            child_ip: spec.child_addr(),
            child_port: spec.child_port as u16,
        };
        match self.request(&CoreMessage::AddPort(rule))? {
            DriverMessage::PortAdded { id: got } if got == id => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    fn remove(&mut self, id: i64) -> Result<(), String> {
        match self.request(&CoreMessage::RemovePort { id })? {
            DriverMessage::PortRemoved { id: got } if got == id => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }
}
