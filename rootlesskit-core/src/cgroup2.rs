//! `--evacuate-cgroup2=NAME`, as RootlessKit: the processes of
//! rootlesskit's current cgroup v2 group move into its child group NAME, so
//! that controllers can then be enabled for the group's children (cgroup
//! v2's "no internal processes" rule forbids that while the group itself
//! holds processes). Without cgroup v2 it is a warning, not an error.

use std::path::{Path, PathBuf};

/// Moves the current group's processes into `name` and enables every
/// available controller for its children. Returns warnings to print.
pub fn evacuate(name: &str) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let Some(mountpoint) = cgroup2_mountpoint() else {
        warnings.push("cgroup2 is not mounted: --evacuate-cgroup2 is ignored".to_owned());
        return Ok(warnings);
    };
    let Some(group) = own_group() else {
        warnings.push(
            "this process is not in a cgroup2 group: --evacuate-cgroup2 is ignored".to_owned(),
        );
        return Ok(warnings);
    };
    let old = mountpoint.join(group.trim_start_matches('/'));
    let new = old.join(name);
    std::fs::create_dir_all(&new).map_err(|e| {
        format!(
            "--evacuate-cgroup2: creating {}: {e} (the group must be delegated to you, e.g. by systemd's Delegate=yes)",
            new.display()
        )
    })?;
    let procs = std::fs::read_to_string(old.join("cgroup.procs")).map_err(|e| {
        format!(
            "--evacuate-cgroup2: reading {}/cgroup.procs: {e}",
            old.display()
        )
    })?;
    for pid in procs
        .lines()
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "0")
    {
        if let Err(e) = std::fs::write(new.join("cgroup.procs"), pid) {
            warnings.push(format!(
                "--evacuate-cgroup2: moving process {pid} to {}: {e}",
                new.display()
            ));
        }
    }
    let controllers = std::fs::read_to_string(old.join("cgroup.controllers")).map_err(|e| {
        format!(
            "--evacuate-cgroup2: reading {}/cgroup.controllers: {e}",
            old.display()
        )
    })?;
    for c in controllers.split_whitespace() {
        if let Err(e) = std::fs::write(old.join("cgroup.subtree_control"), format!("+{c}")) {
            warnings.push(format!("--evacuate-cgroup2: enabling controller {c}: {e}"));
        }
    }
    Ok(warnings)
}

/// Where cgroup v2 is mounted, from /proc/self/mountinfo.
fn cgroup2_mountpoint() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(unescape))?
    })
}

/// The cgroup2 path of this process ("0::/PATH" in /proc/self/cgroup).
fn own_group() -> Option<String> {
    parse_own_group(&std::fs::read_to_string("/proc/self/cgroup").ok()?)
}

fn parse_own_group(s: &str) -> Option<String> {
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> PathBuf {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    Path::new(&std::ffi::OsString::from_vec(out)).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_group_is_the_unified_line() {
        assert_eq!(
            parse_own_group("12:cpu:/x\n0::/user.slice/foo\n"),
            Some("/user.slice/foo".to_owned())
        );
        assert_eq!(parse_own_group("12:cpu:/x\n"), None);
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape("/sys/fs/a\\040b"), PathBuf::from("/sys/fs/a b"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
    }
}
