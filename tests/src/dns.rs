//! A local DNS server for the tests: dnsmasq on a loopback address of the
//! host, answering one name, and a resolv.conf naming it for
//! [`in_root_mount_ns`](crate::in_root_mount_ns) to bind-mount over the
//! host's.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running dnsmasq; killed on drop.
pub struct LocalResolver {
    child: Child,
    pub address: String,
    pub resolv_conf: PathBuf,
}

impl LocalResolver {
    /// Starts dnsmasq on `address:53` (a 127.0.0.0/8 address unique to the
    /// test) answering `name` with `answer`.
    pub fn start(address: &str, name: &str, answer: &str) -> Self {
        assert!(crate::is_root(), "the DNS tests start dnsmasq as root");
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={address}"),
                "--port=53",
                &format!("--address=/{name}/{answer}"),
                "--log-facility=-",
                "--user=root",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq (package dnsmasq-base)");
        let dir = crate::user_temp_dir("dns");
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(&resolv_conf, format!("nameserver {address}\n")).unwrap();
        crate::chmod(&resolv_conf, 0o644);
        let resolver = LocalResolver {
            child,
            address: address.to_owned(),
            resolv_conf,
        };
        resolver.wait_ready();
        resolver
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // A minimal query for "." type A; any answer means dnsmasq listens.
        let query = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        while Instant::now() < deadline {
            let _ = probe.send_to(&query, (self.address.as_str(), 53));
            let mut buf = [0u8; 512];
            if probe.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!("dnsmasq on {} did not answer within 10 s", self.address);
    }

    /// The shell snippet for `in_root_mount_ns` that puts this resolver in
    /// the host's /etc/resolv.conf.
    pub fn mount_snippet(&self) -> String {
        format!(
            "mount --bind {} /etc/resolv.conf",
            self.resolv_conf.display()
        )
    }
}

impl Drop for LocalResolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.resolv_conf.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
