//! /etc/resolv.conf and /etc/hosts for a network namespace: written in place
//! when /etc was copied up, else bind-mounted from the state directory.

use std::path::Path;

pub fn resolv_conf(nameservers: &[String]) -> String {
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

/// Puts `content` at `/etc/NAME`: replaces the copied-up symlink, or
/// bind-mounts a file from `state_dir` over the host's.
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
        std::fs::write(&source, content)
            .map_err(|e| format!("writing {}: {e}", source.display()))?;
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
            resolv_conf(&["10.0.2.3".into(), "fd00::3".into()]),
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
