//! The part of the gvisor-tap-vsock driver that reads raw frames from the
//! guest before the stack does ([`classify`]), as a library so that the fuzz
//! targets in `fuzz/` can reach it. The driver itself is the binary
//! (`main.rs`).

pub mod classify;
