//! /etc/resolv.conf and /etc/hosts for a network namespace: written in place
//! when /etc was copied up, else bind-mounted from the state directory.

use std::net::IpAddr;
use std::path::Path;

pub fn resolv_conf(nameservers: &[IpAddr]) -> String {
    nameservers
        .iter()
        .map(|n| format!("nameserver {n}\n"))
        .collect()
}

/// The host's /etc/hosts plus the hostname on loopback, so that the hostname
/// does not resolve to a host address unreachable from inside.
pub fn hosts(existing: &str, hostname: &str) -> String {
    let mut s = existing.to_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&format!("127.0.0.1 {hostname}\n::1 {hostname}\n"));
    s
}

/// Writes `$STATE_DIR/NAME` (0644: CMD's users read it).
pub fn write_state_file(state_dir: &Path, name: &str, content: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join(name);
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Puts `content` at `/etc/NAME`: replaces the copied-up symlink, or
/// bind-mounts the file `$STATE_DIR/NAME` (already written) over the host's.
pub fn install(
    name: &str,
    content: &str,
    etc_copied_up: bool,
    state_dir: &Path,
) -> Result<(), String> {
    let target = Path::new("/etc").join(name);
    if etc_copied_up {
        let _ = std::fs::remove_file(&target);
        std::fs::write(&target, content).map_err(|e| format!("writing {}: {e}", target.display()))
    } else {
        let source = state_dir.join(name);
        if !target.exists() {
            return Err(format!(
                "{} does not exist, so it cannot be replaced: add --copy-up=/etc",
                target.display()
            ));
        }
        crate::mounts::bind_file(&source, &target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_servers_in_order() {
        assert_eq!(
            resolv_conf(&["10.0.2.3".parse().unwrap(), "fd00::3".parse().unwrap()]),
            "nameserver 10.0.2.3\nnameserver fd00::3\n"
        );
    }

    #[test]
    fn hosts_appends_hostname_on_loopback() {
        assert_eq!(
            hosts("127.0.0.1 localhost", "box"),
            "127.0.0.1 localhost\n127.0.0.1 box\n::1 box\n"
        );
    }
}
