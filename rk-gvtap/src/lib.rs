//! The parts of the gvisor-tap-vsock driver that read raw frames from the
//! guest before the stack does ([`classify`], [`reassembly`] of IPv6
//! fragments, [`tcp_frame`]: TCP headers and the MSS of SYNs), as a
//! library so that the fuzz targets in `fuzz/` can reach them. The driver
//! itself is the binary (`main.rs`).

pub mod classify;
pub mod reassembly;
pub mod tcp_frame;
