//! Finding driver executables `rk-NAME`: `$ROOTLESSKIT_DRIVER_PATH`, the
//! directory of the rootlesskit executable, `<prefix>/libexec/rootlesskit/`,
//! then `$PATH`. Port relays (`rootlesskit-port-NAME`, today only
//! `builtin`'s) are found the same way; their prefix is not `rk-`, so they
//! are never taken for network drivers.

use rk_driver::lookup::{absolute_dirs, is_executable, path_dirs, unsafe_permissions};
use std::path::PathBuf;

pub const DRIVER_PATH_ENV: &str = "ROOTLESSKIT_DRIVER_PATH";
const PREFIX: &str = "rk-";

/// The directories searched, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // Relative entries would run whatever sits in the current directory.
    if let Some(p) = std::env::var_os(DRIVER_PATH_ENV) {
        dirs.extend(absolute_dirs(&p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(bin) = exe.parent() {
            dirs.push(bin.to_path_buf());
            if let Some(prefix) = bin.parent() {
                dirs.push(prefix.join("libexec/rootlesskit"));
            }
        }
    }
    dirs.extend(path_dirs());
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let keep = !seen.contains(d);
        seen.push(d.clone());
        keep
    });
    dirs
}

/// The name a user types for the driver binary `rk-NAME` (the one alias).
pub fn user_name(binary_name: &str) -> &str {
    match binary_name {
        "gvtap" => "gvisor-tap-vsock",
        other => other,
    }
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
/// `shown` is the `--net` value as the user typed it.
pub fn find(name: &str, shown: &str) -> Result<PathBuf, String> {
    let file = format!("{PREFIX}{name}");
    for dir in search_dirs() {
        let p = dir.join(&file);
        if is_executable(&p) {
            if let Some(w) = unsafe_permissions(&p) {
                log::warn!("network driver {shown}: {w}");
            }
            return Ok(p);
        }
    }
    let found = all_drivers();
    let listing = if found.is_empty() {
        "none".to_owned()
    } else {
        found
            .iter()
            .map(|(n, p)| format!("{} ({})", user_name(n), p.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "unknown network driver {shown:?}: no executable {file} in ${DRIVER_PATH_ENV}, next to rootlesskit, \
         in ../libexec/rootlesskit or in $PATH. Drivers found: {listing}. \
         Install the package {} or put {file} in one of those places.",
        package_name(name)
    ))
}

/// The distribution package that ships driver `rk-NAME` (`make deb`).
pub fn package_name(binary_name: &str) -> String {
    format!("rootlesskit-rs-{}", user_name(binary_name))
}

/// The executable of the port relay `rootlesskit-port-NAME` (the builtin
/// port driver's: [`rk_ports::builtin::RELAY_BINARY`]), searched where
/// network drivers are.
pub fn find_port_relay(file: &str, port_driver: &str) -> Result<PathBuf, String> {
    for dir in search_dirs() {
        let p = dir.join(file);
        if is_executable(&p) {
            if let Some(w) = unsafe_permissions(&p) {
                log::warn!("--port-driver={port_driver}: {w}");
            }
            return Ok(p);
        }
    }
    Err(format!(
        "--port-driver={port_driver} needs its relay {file}, which is not in ${DRIVER_PATH_ENV}, next to rootlesskit, \
         in ../libexec/rootlesskit or in $PATH. It ships with rootlesskit in the package {CORE_PACKAGE} \
         (make install puts it in <prefix>/libexec/rootlesskit/): reinstall it, or use --port-driver=none"
    ))
}

/// The distribution package of rootlesskit itself, which carries the relay.
const CORE_PACKAGE: &str = "rootlesskit-rs";
