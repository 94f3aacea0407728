//! The part of the gvisor-tap-vsock driver that reads raw frames from the
//! guest before the stack does ([`classify`]), as a library so that the fuzz
//! targets in `fuzz/` can reach it. The driver itself is the binary
//! (`main.rs`).

pub mod classify;
// `Reassembly::len` is a gauge for the engine's statistics, not a collection's.
#[allow(clippy::len_without_is_empty)]
pub mod reassembly;
