//! Running a helper program (slirp4netns, pasta, vpnkit, lxc-user-nic):
//! the one implementation of what every driver that drives a program
//! needs, so that a driver crate keeps only its policy (which program,
//! which arguments, what its answer means).
//!
//! - [`find`]: which program ([`Program`]: its name, the flag that
//!   overrides it, how to install it, its environment) and finding it;
//! - [`probe`]: short runs (`--help`, `--version`) with a time limit, both
//!   at once, and reading their answers;
//! - [`spawn`]: starting it with an explicit list of inherited
//!   descriptors and a pidfd ([`HelperCommand`]);
//! - [`ready`]: waiting until it is ready, it exits or a deadline passes;
//! - [`tail`]: its output, logged and kept for error messages;
//! - [`exit`]: a running program with its output ([`Running`]), and how
//!   it ended.

pub mod exit;
pub mod find;
pub mod probe;
pub mod ready;
pub mod spawn;
pub mod tail;

pub use exit::Running;
pub use find::{Env, FindError, Program};
pub use probe::{Accept, Answers, LongOptions, ProgramError, RunError, RunOutput, Version};
pub use ready::{Progress, StartError, Wake};
pub use spawn::HelperCommand;
pub use tail::{format_block, OutputTail};
