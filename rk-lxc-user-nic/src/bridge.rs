//! The host bridge and lxc-user-nic's permission file, read before and
//! after running lxc-user-nic so that its failures come with the fix.

use rk_driver::DriverError;
use std::path::Path;

/// Where lxc-user-nic reads who may attach how many veths to which bridge
/// (its compiled-in default on every distribution that ships it).
pub const USERNET: &str = "/etc/lxc/lxc-usernet";

/// The bridge must exist, be a bridge and be up. lxc-user-nic itself
/// reports a missing bridge as "Quota reached" (no line in its file can
/// name it), which points the user the wrong way. Returns its MTU.
pub fn check(bridge: &str) -> Result<u32, DriverError> {
    let dir = Path::new("/sys/class/net").join(bridge);
    if !dir.exists() {
        return Err(DriverError::new(format!(
            "bridge {bridge} does not exist (no {}): start lxc-net, which creates lxcbr0 with a \
             DHCP server (`systemctl start lxc-net`, or `/usr/libexec/lxc/lxc-net start` as root), \
             or name an existing bridge with --lxc-user-nic-bridge",
            dir.display()
        )));
    }
    if !dir.join("bridge").exists() {
        return Err(DriverError::new(format!(
            "{bridge} is not a bridge: --lxc-user-nic-bridge must name a bridge (lxc-net makes lxcbr0)"
        )));
    }
    let flags = std::fs::read_to_string(dir.join("flags")).unwrap_or_default();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    if flags & libc::IFF_UP as u32 == 0 {
        return Err(DriverError::new(format!(
            "bridge {bridge} is down: bring it up as root (`ip link set {bridge} up`, or restart lxc-net)"
        )));
    }
    let mtu = std::fs::read_to_string(dir.join("mtu")).unwrap_or_default();
    Ok(mtu.trim().parse().unwrap_or(1500))
}

/// The lines of `USERNET` that apply to `user` (or one of `groups`, as
/// `@group`) for veths on `bridge`, as their allowed counts.
pub fn allowances(text: &str, user: &str, groups: &[String], bridge: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let f: Vec<&str> = line.split_whitespace().collect();
            let [who, kind, br, count] = f[..] else {
                return None;
            };
            let applies = who == user
                || who
                    .strip_prefix('@')
                    .is_some_and(|g| groups.iter().any(|x| x == g));
            (applies && kind == "veth" && br == bridge)
                .then(|| count.parse().ok())
                .flatten()
        })
        .collect()
}

/// Why lxc-user-nic said "Quota reached", from its permission file.
pub fn explain_quota(bridge: &str) -> String {
    let (user, groups) = current_user();
    let text = std::fs::read_to_string(USERNET).unwrap_or_default();
    let allowed = allowances(&text, &user, &groups, bridge);
    let total: u32 = allowed.iter().sum();
    if total == 0 {
        format!(
            "user {user} may not attach veths to {bridge}: add the line `{user} veth {bridge} 10` \
             to {USERNET} (as root)"
        )
    } else {
        format!(
            "user {user} has used up the {total} veths {USERNET} allows on {bridge}: stop other \
             containers or rootlesskit instances using {bridge}, or raise the number in {USERNET} \
             (as root)"
        )
    }
}

fn current_user() -> (String, Vec<String>) {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let mut gids = nix::unistd::getgroups().unwrap_or_default();
    gids.push(nix::unistd::getgid());
    let groups = gids
        .into_iter()
        .filter_map(|g| nix::unistd::Group::from_gid(g).ok().flatten())
        .map(|g| g.name)
        .collect();
    (user, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowances_match_user_group_type_and_bridge() {
        let text = "# comment\nrk-test veth lxcbr0 10\n@staff veth lxcbr0 2 # trailing\n\
                    rk-test veth rktbr0 1\nother veth lxcbr0 5\nrk-test macvlan lxcbr0 3\nbroken line\n";
        let groups = vec!["staff".to_owned()];
        assert_eq!(allowances(text, "rk-test", &groups, "lxcbr0"), [10, 2]);
        assert_eq!(allowances(text, "rk-test", &[], "rktbr0"), [1]);
        assert!(allowances(text, "nobody", &[], "lxcbr0").is_empty());
    }

    #[test]
    fn a_missing_bridge_names_lxc_net() {
        let e = check("nosuchbr0").unwrap_err();
        assert!(e.0.contains("bridge nosuchbr0 does not exist"), "{e}");
        assert!(e.0.contains("lxc-net"), "{e}");
    }

    #[test]
    fn loopback_is_not_a_bridge() {
        let e = check("lo").unwrap_err();
        assert!(e.0.contains("not a bridge"), "{e}");
    }
}
