//! `--port-driver=implicit` (with `--net=pasta`): pasta, or rk-pasta for an
//! older pasta, forwards every port that listens inside the namespace to the
//! same port on every host address, with no request. The API still takes
//! requests, so that clients written for a port driver that needs them
//! work unchanged: Docker 20.10's `rootlesskit-docker-proxy` (RootlessKit
//! 1.1.0) calls `AddPort` for each `docker run -p`, then starts the real
//! `docker-proxy` inside on `127.0.0.1:PORT`, which pasta then forwards.
//!
//! A request is accepted when pasta's forwarding already gives what it asks
//! for (the same port number, every host address, any address inside that
//! a loopback connection reaches) and recorded in the table, so that
//! `list-ports` shows it and `RemovePort` finds it; nothing else happens. A
//! request pasta cannot honour is refused, naming what would have to change.

use crate::api::PortDriverInfo;
use crate::manager::PortDriver;
use crate::spec::{PortSpec, Proto};
use std::net::IpAddr;

/// The name in `--port-driver` and in `GET /v1/info`.
pub const NAME: &str = "implicit";

/// Records the ports clients ask for; pasta does the forwarding.
#[derive(Debug, Default)]
pub struct Implicit;

impl Implicit {
    pub fn new() -> Implicit {
        Implicit
    }
}

/// Why pasta's forwarding does not give what `spec` asks for, if it does not.
pub fn refusal(spec: &PortSpec, unprivileged_port_start: Option<u32>) -> Option<String> {
    let port = spec.parent_port;
    if spec.child_port != port {
        return Some(format!(
            "port driver implicit: pasta forwards host port {port} to port {port} inside, not to {}: \
             publish the same number on both sides (e.g. {port}:{port}), or use --port-driver=builtin to map ports",
            spec.child_port
        ));
    }
    let parent: Option<IpAddr> = spec.parent_ip.parse().ok();
    if parent.is_some_and(|ip| !ip.is_unspecified()) {
        return Some(format!(
            "port driver implicit: pasta listens on port {port} of every host address, not only on {}: \
             publish on 0.0.0.0 (or ::), or use --port-driver=builtin to choose the address",
            spec.parent_ip
        ));
    }
    let child: Option<IpAddr> = spec.child_ip.parse().ok();
    if child.is_some_and(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
        return Some(format!(
            "port driver implicit: pasta delivers host port {port} to whatever listens on port {port} inside, \
             reached over loopback, and cannot be pointed at {}: leave the child IP empty (or 127.0.0.1, ::1), \
             or use --port-driver=builtin",
            spec.child_ip
        ));
    }
    if let Some(start) = unprivileged_port_start {
        if (port as u64) < u64::from(start) {
            return Some(format!(
                "port driver implicit: pasta cannot listen on privileged port {port} of the host: \
                 add 'net.ipv4.ip_unprivileged_port_start={port}' to /etc/sysctl.conf (currently {start}), \
                 or choose a port number >= {start}"
            ));
        }
    }
    None
}

fn unprivileged_port_start() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

impl PortDriver for Implicit {
    fn info(&self) -> PortDriverInfo {
        PortDriverInfo {
            driver: NAME.to_owned(),
            // Every one of these is forwarded by pasta; a client (Docker's
            // proxy) that finds its proto missing gives up on the port.
            protos: crate::builtin::PROTOS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            disallow_loopback_child_ip: false,
        }
    }

    fn add(&mut self, _id: i64, spec: &PortSpec, proto: Proto) -> Result<(), String> {
        if matches!(proto, Proto::Sctp(_)) {
            return Err("port driver implicit: pasta forwards TCP and UDP only".into());
        }
        match refusal(spec, unprivileged_port_start()) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn remove(&mut self, _id: i64) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::PortManager;

    fn spec(s: &str) -> PortSpec {
        PortSpec::parse(s).unwrap()
    }

    #[test]
    fn what_docker_proxy_asks_is_recorded_listed_and_removed() {
        let mut m = PortManager::new(Box::new(Implicit::new()));
        // rootlesskit-docker-proxy 1.1.0 for `docker run -p 8080:80`:
        // tcp4 and tcp6 on the wildcard, child IP loopback, same port.
        let a = m.add(spec("0.0.0.0:18080:127.0.0.1:18080/tcp4")).unwrap();
        let b = m.add(spec("[::]:18080:[::1]:18080/tcp6")).unwrap();
        let c = m.add(spec("18081:18081/udp")).unwrap();
        assert_eq!((a.id, b.id, c.id), (1, 2, 3));
        assert_eq!(m.list().unwrap().len(), 3);
        let e = m.add(spec("0.0.0.0:18080:18080/tcp4")).unwrap_err();
        assert_eq!(e.message, "conflict with ID 1");
        m.remove(1).unwrap();
        let ids: Vec<i64> = m.list().unwrap().iter().map(|p| p.id).collect();
        assert_eq!(ids, [2, 3]);
    }

    #[test]
    fn what_pasta_cannot_do_is_refused_with_the_reason() {
        let why = |s: &str| refusal(&spec(s), Some(1024)).unwrap_or_default();
        assert!(why("0.0.0.0:8080:80/tcp").contains("not to 80"));
        assert!(why("127.0.0.1:8080:8080/tcp").contains("not only on 127.0.0.1"));
        assert!(why("0.0.0.0:8080:10.0.2.100:8080/tcp").contains("cannot be pointed at 10.0.2.100"));
        assert!(why("0.0.0.0:80:80/tcp").contains("privileged port 80"));
        assert_eq!(refusal(&spec("0.0.0.0:8080:8080/tcp"), Some(1024)), None);
        assert_eq!(refusal(&spec("[::]:8080:[::]:8080/udp6"), Some(1024)), None);
        let mut m = PortManager::new(Box::new(Implicit::new()));
        let e = m.add(spec("127.0.0.1:8080:8080/tcp")).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(m.list().unwrap().is_empty());
    }
}
