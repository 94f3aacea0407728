//! Finding driver executables `rk-NAME`: `$ROOTLESSKIT_DRIVER_PATH`, the
//! directory of the rootlesskit executable, `<prefix>/libexec/rootlesskit/`,
//! then `$PATH`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const DRIVER_PATH_ENV: &str = "ROOTLESSKIT_DRIVER_PATH";
const PREFIX: &str = "rk-";

/// The directories searched, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(p) = std::env::var_os(DRIVER_PATH_ENV) {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(bin) = exe.parent() {
            dirs.push(bin.to_path_buf());
            if let Some(prefix) = bin.parent() {
                dirs.push(prefix.join("libexec/rootlesskit"));
            }
        }
    }
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let keep = !seen.contains(d);
        seen.push(d.clone());
        keep
    });
    dirs
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Every driver found, first occurrence of each name wins: (name, path).
pub fn all_drivers() -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut here: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_prefix(PREFIX)?.to_owned();
                let path = e.path();
                (!name.is_empty() && is_executable(&path)).then_some((name, path))
            })
            .collect();
        here.sort();
        for (name, path) in here {
            if !found.iter().any(|(n, _)| *n == name) {
                found.push((name, path));
            }
        }
    }
    found
}

/// The executable of driver `name`, or an error listing what was found.
pub fn find(name: &str) -> Result<PathBuf, String> {
    let file = format!("{PREFIX}{name}");
    for dir in search_dirs() {
        let p = dir.join(&file);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    let found = all_drivers();
    let listing = if found.is_empty() {
        "none".to_owned()
    } else {
        found
            .iter()
            .map(|(n, p)| format!("{n} ({})", p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "unknown network driver {name:?}: no executable {file} in ${DRIVER_PATH_ENV}, next to rootlesskit, \
         in ../libexec/rootlesskit or in $PATH. Drivers found: {listing}. \
         Install the {file} package or put {file} in one of those places."
    ))
}
