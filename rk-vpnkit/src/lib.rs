//! The parts of the vpnkit driver that read bytes from the vpnkit peer (the
//! handshake in [`wire`], the length-prefixed frame stream in [`framing`]),
//! as a library so that the fuzz targets in `fuzz/` can reach them. The
//! driver itself is the binary (`main.rs`).

pub mod framing;
pub mod wire;
