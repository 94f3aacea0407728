//! rootlesskit's core as a library: the `rootlesskit` binary is a thin
//! `main` over it, and tools (man pages, completions) and tests reach the
//! same command-line definition and logic.

pub mod activation;
pub mod answer;
pub mod capabilities;
pub mod cgroup2;
pub mod child;
pub mod cli;
pub mod confinement;
pub mod copyup;
pub mod discovery;
pub mod driver;
pub mod etcfiles;
pub mod idmap;
pub mod mounts;
pub mod netlink;
pub mod netns;
pub mod parent;
pub mod ports;
pub mod settings;
pub mod signals;
pub mod spawn;
pub mod statedir;
pub mod supervise;
pub mod sync;
pub mod waitstatus;

/// When the process started, for the timings of --debug.
pub static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
