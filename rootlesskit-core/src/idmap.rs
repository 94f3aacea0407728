//! The child's user namespace gets the full subordinate id range:
//! 0 maps to the user, 1.. to the ranges of /etc/subuid and /etc/subgid (or
//! `getsubids`), written by the SUID helpers newuidmap and newgidmap.

use std::process::{Command, Stdio};

/// One subordinate range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubidRange {
    pub start: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IdKind {
    Uid,
    Gid,
}

impl IdKind {
    fn file(self) -> &'static str {
        match self {
            IdKind::Uid => "/etc/subuid",
            IdKind::Gid => "/etc/subgid",
        }
    }
    fn helper(self) -> &'static str {
        match self {
            IdKind::Uid => "newuidmap",
            IdKind::Gid => "newgidmap",
        }
    }
}

/// Parses subuid/subgid file content for `user` (by name or by number).
pub fn parse_subid_file(content: &str, user: &str, id: u32) -> Vec<SubidRange> {
    let id = id.to_string();
    content
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let mut f = line.split(':');
            let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
            if owner != user && owner != id {
                return None;
            }
            Some(SubidRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            })
        })
        .filter(|r| r.count > 0)
        .collect()
}

/// Parses `getsubids` output: lines like `0: alice 100000 65536`.
pub fn parse_getsubids(output: &str) -> Vec<SubidRange> {
    output
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            let mut f = rest.split_whitespace();
            let _owner = f.next()?;
            Some(SubidRange {
                start: f.next()?.parse().ok()?,
                count: f.next()?.parse().ok()?,
            })
        })
        .filter(|r| r.count > 0)
        .collect()
}

fn getsubids(kind: IdKind, user: &str) -> Option<Vec<SubidRange>> {
    let mut cmd = Command::new(which("getsubids")?);
    if kind == IdKind::Gid {
        cmd.arg("-g");
    }
    let out = cmd.arg(user).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| parse_getsubids(&String::from_utf8_lossy(&out.stdout)))
}

/// The ranges of `user` according to `source` (auto, dynamic, static).
pub fn lookup(kind: IdKind, source: &str, user: &str, id: u32) -> Result<Vec<SubidRange>, String> {
    let from_file = || {
        std::fs::read_to_string(kind.file())
            .map(|c| parse_subid_file(&c, user, id))
            .unwrap_or_default()
    };
    let ranges = match source {
        "dynamic" => getsubids(kind, user).ok_or_else(|| {
            "--subid-source=dynamic: running `getsubids` failed: install it (package uidmap/shadow) or use --subid-source=static".to_string()
        })?,
        "static" => from_file(),
        // auto: the files first (no process to start), getsubids only for
        // users they do not list (e.g. subordinate ids served by sssd).
        _ => match from_file() {
            r if !r.is_empty() => r,
            _ => getsubids(kind, user).unwrap_or_default(),
        },
    };
    if ranges.is_empty() {
        return Err(format!(
            "no subordinate {} range for user {user:?} (id {id}) in {}: ask an administrator to run \
             `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`",
            if kind == IdKind::Uid { "uid" } else { "gid" },
            kind.file()
        ));
    }
    Ok(ranges)
}

/// The arguments after the pid for newuidmap/newgidmap: `0 ID 1` and then
/// each range mapped consecutively from 1.
pub fn map_args(id: u32, ranges: &[SubidRange]) -> Vec<String> {
    let mut args = vec!["0".to_string(), id.to_string(), "1".to_string()];
    let mut inside: u64 = 1;
    for r in ranges {
        args.extend([inside.to_string(), r.start.to_string(), r.count.to_string()]);
        inside += r.count;
    }
    args
}

/// The ranges for both kinds, looked up before any namespace exists.
#[derive(Debug, Clone)]
pub struct IdMaps {
    pub uid: u32,
    pub gid: u32,
    /// newuidmap and newgidmap as found in `$PATH` (absolute entries only).
    pub newuidmap: std::path::PathBuf,
    pub newgidmap: std::path::PathBuf,
    pub uid_ranges: Vec<SubidRange>,
    pub gid_ranges: Vec<SubidRange>,
}

impl IdMaps {
    pub fn lookup(source: &str) -> Result<Self, String> {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .ok_or_else(|| format!("uid {uid} has no entry in the user database (/etc/passwd)"))?;
        let uid_ranges = lookup(IdKind::Uid, source, &user, uid)?;
        let gid_ranges = lookup(IdKind::Gid, source, &user, uid)?;
        let helper = |kind: IdKind| {
            which(kind.helper()).ok_or_else(|| {
                format!(
                    "{} not found in PATH: install it (Debian/Ubuntu: apt-get install uidmap; Fedora: shadow-utils)",
                    kind.helper()
                )
            })
        };
        Ok(IdMaps {
            uid,
            gid,
            newuidmap: helper(IdKind::Uid)?,
            newgidmap: helper(IdKind::Gid)?,
            uid_ranges,
            gid_ranges,
        })
    }

    /// Writes both maps of `pid` with newuidmap and newgidmap, run side by side.
    pub fn apply(&self, pid: i32) -> Result<(), String> {
        let spawn = |kind: IdKind, id: u32, ranges: &[SubidRange]| {
            let program = match kind {
                IdKind::Uid => &self.newuidmap,
                IdKind::Gid => &self.newgidmap,
            };
            Command::new(program)
                .arg(pid.to_string())
                .args(map_args(id, ranges))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("running {}: {e}", kind.helper()))
        };
        let uid_child = spawn(IdKind::Uid, self.uid, &self.uid_ranges)?;
        let gid_child = spawn(IdKind::Gid, self.gid, &self.gid_ranges);
        let uid_result = finish(IdKind::Uid, uid_child);
        let gid_result = gid_child.and_then(|c| finish(IdKind::Gid, c));
        uid_result.and(gid_result)
    }
}

fn finish(kind: IdKind, child: std::process::Child) -> Result<(), String> {
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", kind.helper()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} failed ({}): {}; check {} and that {} is installed setuid root (or with cap_setuid)",
        kind.helper(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        kind.file(),
        kind.helper(),
    ))
}

/// Finds an executable by name in `$PATH` (or as given, if it has a
/// slash), never through an empty or relative entry.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    rk_driver::lookup::find_program(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_file_matches_name_or_number_and_skips_others() {
        let c = "# comment\nalice:100000:65536\nbob:200000:65536\n1000:300000:10\nalice:400000:0\n";
        assert_eq!(
            parse_subid_file(c, "alice", 1000),
            vec![
                SubidRange {
                    start: 100000,
                    count: 65536
                },
                SubidRange {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert!(parse_subid_file(c, "carol", 1001).is_empty());
    }

    #[test]
    fn getsubids_output() {
        assert_eq!(
            parse_getsubids("0: alice 100000 65536\n1: alice 300000 5\n"),
            vec![
                SubidRange {
                    start: 100000,
                    count: 65536
                },
                SubidRange {
                    start: 300000,
                    count: 5
                }
            ]
        );
    }

    #[test]
    fn map_args_are_consecutive_from_one() {
        let r = [
            SubidRange {
                start: 100000,
                count: 65536,
            },
            SubidRange {
                start: 300000,
                count: 5,
            },
        ];
        assert_eq!(
            map_args(1000, &r),
            ["0", "1000", "1", "1", "100000", "65536", "65537", "300000", "5"]
        );
    }
}
