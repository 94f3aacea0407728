//! Creating the tap device inside the child's network namespace.

use rk_driver::tap::{self, TapConfig};
use rk_driver::NamespaceFds;
use std::os::fd::{AsFd, OwnedFd};

/// Creates tap device `name` in the child's namespaces and returns its
/// descriptor, non-blocking.
///
/// The device is made persistent: it lives as long as the namespace, not
/// as long as the descriptor. Closing the last descriptor of a
/// non-persistent tap unregisters the device right there, in the closing
/// process, and that waits for RCU grace periods: 14-26 ms measured here,
/// paid by every `rootlesskit` run at exit (the core waits for the driver).
/// A persistent tap goes with its namespace instead, which the kernel
/// tears down in a worker after the last process (and descriptor) has left
/// it; nothing else can attach to it meanwhile, as only the namespace's
/// owner may open a persistent tap.
///
/// With `vnet`, frames carry a virtio-net header (`IFF_VNET_HDR`) and the
/// tap takes checksum and TCPv4 segmentation offload (`TUNSETOFFLOAD`): the
/// guest's kernel then hands over TCP super-segments of up to 64 KiB with
/// partial checksums instead of MTU-sized segments, whatever the MTU.
pub fn create_in_namespace(ns: &NamespaceFds, name: &str, vnet: bool) -> Result<OwnedFd, String> {
    let config = TapConfig {
        vnet_hdr: vnet,
        persist: true,
        nonblocking: true,
        ..TapConfig::new(name)
    };
    let fd =
        rk_driver::nsexec::run_in_namespaces(Some(ns.userns.as_fd()), ns.netns.as_fd(), || {
            tap::open(&config).map(|fd| vec![fd])
        })
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or("the namespace helper returned no tap descriptor")?;
    if vnet {
        if let Err(e) = tap::set_offload(
            fd.as_fd(),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
        ) {
            // Frames still carry the header; the guest just sends MTU-sized
            // segments with full checksums.
            log::warn!("no offloads on the tap (TUNSETOFFLOAD: {e})");
        }
    }
    Ok(fd)
}
