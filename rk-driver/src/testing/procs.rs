//! What the fake core reads in /proc to tell whether a driver left
//! processes behind: its descendants while it runs, its process group after.

use std::sync::Mutex;

/// Remembers `root`'s descendants, to check later that they are gone.
pub(super) fn note_descendants(root: u32, seen: &Mutex<Vec<(u32, u64)>>) {
    for pid in descendants(root) {
        if let Some(start) = start_time(pid) {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.contains(&(pid, start)) {
                seen.push((pid, start));
            }
        }
    }
}

/// A process's `/proc/PID/stat`, the fields used here.
struct Stat {
    comm: String,
    ppid: u32,
    pgrp: u32,
    start: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the comm: state(0) ppid(1) pgrp(2) ... starttime(19).
    Some(Stat {
        comm: text[open + 1..close].to_owned(),
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start: rest.get(19)?.parse().ok()?,
    })
}

pub(super) fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start)
}

/// Every pid in /proc with its stat.
fn all_processes() -> Vec<(u32, Stat)> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| Some((pid, stat(pid)?)))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn in_process_group(pgrp: u32) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|(_, s)| s.pgrp == pgrp)
        .map(|(pid, _)| pid)
        .collect()
}

pub(super) fn describe(pid: u32) -> String {
    let state = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("State:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_default();
    let comm = stat(pid).map(|s| s.comm).unwrap_or_default();
    format!("{comm} (pid {pid}, {state})")
}

/// Every process below `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_processes()
        .into_iter()
        .map(|(pid, s)| (pid, s.ppid))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}
