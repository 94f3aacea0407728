//! The tap device inside the child's network namespace.
//!
//! It is made by a short-lived helper that joins the child's user and
//! network namespaces (`rk_driver::nsexec`); the descriptor it sends back
//! keeps the device in that namespace. The device is not persistent: it
//! disappears when the last descriptor closes, i.e. when this driver exits.

use rk_driver::tap::{self, TapConfig};
use std::os::fd::{AsFd, OwnedFd};

/// Opens a new tap device `name` with hardware address `mac`. Runs inside
/// the target namespaces. The descriptor is non-blocking and close-on-exec;
/// every packet read or written through it starts with a 10-byte
/// virtio-net header, and checksum and TCP segmentation offload are on
/// (see `offload`).
pub fn create(name: &str, mac: [u8; 6]) -> Result<OwnedFd, String> {
    let config = TapConfig {
        vnet_hdr: true,
        vnet_hdr_size: Some(crate::offload::VNET_HDR_LEN as i32),
        mac: Some(mac),
        nonblocking: true,
        ..TapConfig::new(name)
    };
    let fd = tap::open(&config)?;
    let offload = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // If the kernel refuses, the tap simply hands out plain frames.
    let _ = tap::set_offload(fd.as_fd(), offload);
    Ok(fd)
}
