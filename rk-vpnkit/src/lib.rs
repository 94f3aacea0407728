//! The parts of the vpnkit driver that read bytes from the vpnkit peer (the
//! handshake in [`wire`], the length-prefixed frame stream in [`framing`],
//! the frames joined for the tap in [`coalesce`]) or from the child (the
//! super-packets cut for the wire in [`offload`]), as a library so that
//! the fuzz targets in `fuzz/` can reach them. The driver itself is the
//! binary (`main.rs`).

pub mod coalesce;
pub mod framing;
pub mod offload;
pub mod wire;
