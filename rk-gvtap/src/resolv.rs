//! The host's nameservers, from /etc/resolv.conf, read again whenever the
//! file changes (checked by its inode, size and modification time on each
//! query: one stat call).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

pub struct ResolvConf {
    path: PathBuf,
    stamp: Option<(u64, u64, i64, i64, u64)>,
    servers: Vec<SocketAddr>,
}

impl ResolvConf {
    pub fn new(path: impl Into<PathBuf>) -> ResolvConf {
        ResolvConf {
            path: path.into(),
            stamp: None,
            servers: Vec::new(),
        }
    }

    /// The nameservers (port 53), in the file's order.
    pub fn servers(&mut self) -> &[SocketAddr] {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()));
        if stamp != self.stamp || stamp.is_none() {
            self.stamp = stamp;
            self.servers = std::fs::read_to_string(&self.path)
                .map(|t| parse(&t))
                .unwrap_or_default();
        }
        &self.servers
    }
}

/// `nameserver ADDR` lines; IPv6 link-local zones (`%eth0`) are dropped
/// since a scope id cannot be given by name here.
pub fn parse(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let sa = SocketAddr::new(ip, 53);
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_without_comments_or_junk() {
        let t = "# generated\nsearch example\nnameserver 127.0.0.53\n nameserver ::1\nnameserver bogus\n;nameserver 1.2.3.4\nnameserver fe80::1%eth0\nnameserver 127.0.0.53\n";
        let got = parse(t);
        let want: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            "[fe80::1]:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn file_changes_are_noticed() {
        let dir = std::env::temp_dir().join(format!("rk-gvtap-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("resolv.conf");
        std::fs::write(&f, "nameserver 127.0.0.2\n").unwrap();
        let mut r = ResolvConf::new(&f);
        assert_eq!(
            r.servers(),
            &["127.0.0.2:53".parse::<SocketAddr>().unwrap()]
        );
        std::fs::write(&f, "nameserver 127.0.0.3\nnameserver 127.0.0.4\n").unwrap();
        assert_eq!(r.servers().len(), 2);
        std::fs::remove_file(&f).unwrap();
        assert!(r.servers().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
