//! Running `lxc-user-nic create`: as root it makes a veth pair, attaches
//! the host end to the bridge and moves the other end, renamed, into the
//! network namespace of a given process, within the quota of
//! /etc/lxc/lxc-usernet. Its own cleanup is the kernel's: a veth pair is
//! deleted when the namespace of either end is destroyed.

use rk_driver::DriverError;
use std::path::Path;
use std::process::{Command, Stdio};

/// What lxc-user-nic made (it prints `NAME:INDEX:HOSTNAME:HOSTINDEX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedNic {
    /// The interface inside the namespace and its index there.
    pub name: String,
    pub index: u32,
    /// The host-side veth on the bridge.
    pub host_name: String,
    pub host_index: u32,
}

/// lxc-user-nic wants a container path and name for its bookkeeping of
/// containers it manages; rootlesskit has neither. These are what
/// RootlessKit passes.
const LXC_PATH: &str = "/dev/null";
const LXC_NAME: &str = "dummy";

/// Attaches a veth named `ifname` in the network namespace of `pid` to
/// `bridge`.
pub fn create(
    binary: &Path,
    pid: i32,
    bridge: &str,
    ifname: &str,
) -> Result<CreatedNic, DriverError> {
    let mut cmd = Command::new(binary);
    crate::binary::LXC_USER_NIC.env.apply(&mut cmd);
    let out = cmd
        .args(["create", LXC_PATH, LXC_NAME, &pid.to_string(), "veth"])
        .args([bridge, ifname])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DriverError::new(format!("running {}: {e}", binary.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(DriverError::new(explain_failure(
            binary, pid, bridge, ifname, &stderr, out.status,
        )));
    }
    parse_created(&stdout).ok_or_else(|| {
        DriverError::new(format!(
            "{} create succeeded but printed {:?}, not NAME:INDEX:HOSTVETH:INDEX: \
             this lxc-user-nic is too old or too new for this driver",
            binary.display(),
            stdout.trim()
        ))
    })
}

pub fn parse_created(stdout: &str) -> Option<CreatedNic> {
    let line = stdout.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let f: Vec<&str> = line.split(':').collect();
    let [name, index, host_name, host_index] = f[..] else {
        return None;
    };
    Some(CreatedNic {
        name: name.to_owned(),
        index: index.parse().ok()?,
        host_name: host_name.to_owned(),
        host_index: host_index.parse().ok()?,
    })
}

/// lxc-user-nic's messages are source locations and short phrases; turn
/// the ones users hit into what to do.
fn explain_failure(
    binary: &Path,
    pid: i32,
    bridge: &str,
    ifname: &str,
    stderr: &str,
    status: std::process::ExitStatus,
) -> String {
    let said = stderr
        .lines()
        .map(|l| l.rsplit_once(": ").map_or(l, |(_, m)| m).trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let fix = if stderr.contains("Quota reached") {
        crate::bridge::explain_quota(bridge)
    } else if stderr.contains("may not access") || stderr.contains("may not modify netns") {
        format!(
            "lxc-user-nic refused to work on the network namespace of pid {pid}: it must belong \
             to a user namespace of this user"
        )
    } else if stderr.contains("File exists") {
        format!(
            "an interface named {ifname} already exists in the namespace: choose another --ifname"
        )
    } else if stderr.contains("Operation not permitted") {
        format!(
            "{} ran without root privileges: it must be setuid root (chmod u+s as root) on a \
             filesystem not mounted nosuid",
            binary.display()
        )
    } else {
        format!("{} create failed ({status})", binary.display())
    };
    if said.is_empty() {
        fix
    } else {
        format!("{fix} (lxc-user-nic: {said})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_lxc_5_prints() {
        assert_eq!(
            parse_created("eth0:2:veth1001_Kgt5:6\n"),
            Some(CreatedNic {
                name: "eth0".into(),
                index: 2,
                host_name: "veth1001_Kgt5".into(),
                host_index: 6
            })
        );
        assert_eq!(parse_created(""), None);
        assert_eq!(parse_created("eth0:x:veth:6"), None);
    }

    #[test]
    fn quota_failure_points_at_lxc_usernet() {
        let m = explain_failure(
            Path::new("/usr/libexec/lxc/lxc-user-nic"),
            5,
            "nosuchbr9",
            "eth0",
            "../src/lxc/cmd/lxc_user_nic.c: 1250: main: Quota reached\n",
            std::process::ExitStatus::default(),
        );
        assert!(m.contains("/etc/lxc/lxc-usernet"), "{m}");
        assert!(m.contains("veth nosuchbr9 10"), "{m}");
        assert!(m.ends_with("(lxc-user-nic: Quota reached)"), "{m}");
    }
}
