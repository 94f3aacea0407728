//! The table of published ports: ids, validation and conflicts, the same
//! for every port driver, in front of the [`PortDriver`] that does the work.

use crate::api::{ApiError, PortDriverInfo};
use crate::spec::{check_conflicts, PortSpec, PortStatus, Proto};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

/// A port driver: forwards what the manager hands it.
pub trait PortDriver {
    fn info(&self) -> PortDriverInfo;
    /// Starts forwarding `spec` (already validated) under `id`.
    fn add(&mut self, id: i64, spec: &PortSpec, proto: Proto) -> Result<(), String>;
    /// Stops forwarding `id`.
    fn remove(&mut self, id: i64) -> Result<(), String>;
    /// The driver's own list, for drivers that keep one; `None`: the
    /// manager's table is the list.
    fn list(&mut self) -> Option<Result<Vec<PortStatus>, String>> {
        None
    }
    /// Descriptors to watch (e.g. worker processes); [`Self::on_ready`] is
    /// called when any is readable.
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }
    fn on_ready(&mut self) {}
}

pub struct PortManager {
    driver: Box<dyn PortDriver>,
    ports: BTreeMap<i64, PortStatus>,
    next_id: i64,
}

impl PortManager {
    pub fn new(driver: Box<dyn PortDriver>) -> PortManager {
        PortManager {
            driver,
            ports: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn driver(&self) -> &dyn PortDriver {
        self.driver.as_ref()
    }

    pub fn driver_mut(&mut self) -> &mut dyn PortDriver {
        self.driver.as_mut()
    }

    pub fn add(&mut self, spec: PortSpec) -> Result<PortStatus, ApiError> {
        let proto = spec.validate().map_err(|e| ApiError::bad_request(e.0))?;
        let info = self.driver.info();
        if !info.protos.contains(&spec.proto) {
            return Err(ApiError::bad_request(format!(
                "unsupported protocol {:?}: port driver {} forwards {}",
                spec.proto,
                info.driver,
                info.protos.join(", ")
            )));
        }
        if info.disallow_loopback_child_ip
            && spec
                .child_ip
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
        {
            return Err(ApiError::bad_request(format!(
                "port driver {} cannot forward to a loopback child IP ({}): leave childIP empty or give the child's own address",
                info.driver, spec.child_ip
            )));
        }
        check_conflicts(&spec, &self.ports).map_err(|e| ApiError::bad_request(e.0))?;
        let id = self.next_id;
        self.driver
            .add(id, &spec, proto)
            .map_err(ApiError::bad_request)?;
        self.next_id += 1;
        let st = PortStatus { id, spec };
        self.ports.insert(id, st.clone());
        Ok(st)
    }

    pub fn remove(&mut self, id: i64) -> Result<(), ApiError> {
        if !self.ports.contains_key(&id) {
            return Err(ApiError::bad_request(format!("unknown id: {id}")));
        }
        let result = self.driver.remove(id);
        self.ports.remove(&id);
        result.map_err(ApiError::bad_request)
    }

    pub fn list(&mut self) -> Result<Vec<PortStatus>, ApiError> {
        match self.driver.list() {
            Some(r) => r.map_err(ApiError::bad_request),
            None => Ok(self.ports.values().cloned().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        added: Vec<i64>,
        fail_next: bool,
    }

    impl PortDriver for Recorder {
        fn info(&self) -> PortDriverInfo {
            PortDriverInfo {
                driver: "test".into(),
                protos: vec!["tcp".into(), "udp".into()],
                disallow_loopback_child_ip: true,
            }
        }
        fn add(&mut self, id: i64, _: &PortSpec, _: Proto) -> Result<(), String> {
            if std::mem::take(&mut self.fail_next) {
                return Err("listen tcp :80: bind: address already in use".into());
            }
            self.added.push(id);
            Ok(())
        }
        fn remove(&mut self, id: i64) -> Result<(), String> {
            self.added.retain(|x| *x != id);
            Ok(())
        }
    }

    fn spec(s: &str) -> PortSpec {
        PortSpec::parse(s).unwrap()
    }

    #[test]
    fn ids_count_up_only_on_success_and_errors_are_400() {
        let mut m = PortManager::new(Box::new(Recorder {
            added: vec![],
            fail_next: false,
        }));
        assert_eq!(m.add(spec("127.0.0.1:8080:80/tcp")).unwrap().id, 1);
        let e = m.add(spec("127.0.0.1:8080:81/tcp")).unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (400, "conflict with ID 1"));
        assert!(m
            .add(spec("[::1]:8081:80/tcp6"))
            .unwrap_err()
            .message
            .contains("unsupported protocol"));
        assert!(m
            .add(spec("127.0.0.1:8081:127.0.0.1:80/tcp"))
            .unwrap_err()
            .message
            .contains("loopback"));
        assert_eq!(m.add(spec("127.0.0.1:9090:90/udp")).unwrap().id, 2);
        let e = m.remove(7).unwrap_err();
        assert_eq!(e.message, "unknown id: 7");
        m.remove(1).unwrap();
        let ids: Vec<i64> = m.list().unwrap().iter().map(|p| p.id).collect();
        assert_eq!(ids, [2]);
        assert_eq!(m.add(spec("127.0.0.1:8080:80/tcp")).unwrap().id, 3);
    }
}
