//! Interface configuration over rtnetlink, done in-process.
//!
//! RootlessKit runs `nsenter … ip …` once per step; here the child talks
//! NETLINK_ROUTE directly, so bringing up the network costs a handful of
//! syscalls and no process spawns.
//!
//! Every function takes the network namespace to work in. `None` means the
//! calling thread's current one. `Some(fd)` makes the work happen on a
//! short-lived thread that joins that namespace first: a namespace switch is
//! per-thread, so the caller's own thread never leaves its namespace, and the
//! netlink socket opened there belongs to the target namespace. Joining needs
//! CAP_SYS_ADMIN over the namespace's owning user namespace (the rootlesskit
//! child is root there).
//!
//! The requests are rk-driver's netlink layer, the one the drivers use.

mod netns;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;

use rk_driver::netlink::{Link, LinkChange, NetlinkSocket};

/// What to configure on one interface inside the network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSetup {
    /// Interface name, e.g. `tap0`.
    pub name: String,
    /// MTU to set, e.g. 65520.
    pub mtu: u32,
    /// IPv4 address and prefix length, e.g. 10.0.2.100/24.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv4 default route via this gateway.
    pub gateway4: Option<Ipv4Addr>,
    /// IPv6 address and prefix length, e.g. fd00::100/64. Added without
    /// duplicate address detection, so it is usable at once.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// IPv6 default route via this gateway.
    pub gateway6: Option<Ipv6Addr>,
}

/// Why configuring the network namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The worker thread could not be started or could not join the
    /// network namespace.
    #[error("cannot enter the network namespace to configure it: {0}")]
    EnterNetns(io::Error),
    /// The interface does not exist in the network namespace.
    #[error("network interface {0:?} does not exist in the network namespace")]
    NoSuchInterface(String),
    /// The socket or the kernel refused an operation, or answered
    /// something else than netlink; the error names the operation and the
    /// interface, e.g. "tap0: set its MTU to 70000".
    #[error("netlink: {0}")]
    Request(rk_driver::netlink::NetlinkError),
}

impl From<rk_driver::netlink::NetlinkError> for NetlinkError {
    fn from(e: rk_driver::netlink::NetlinkError) -> Self {
        match e {
            rk_driver::netlink::NetlinkError::NoSuchInterface { name, .. } => {
                NetlinkError::NoSuchInterface(name)
            }
            other => NetlinkError::Request(other),
        }
    }
}

const LOOPBACK: &str = "lo";

/// Brings `lo` up in the given network namespace (None = the calling
/// thread's current netns).
pub fn bring_up_loopback(netns: Option<BorrowedFd<'_>>) -> Result<(), NetlinkError> {
    with_route_socket(netns, |socket| bring_up(socket, LOOPBACK, None).map(drop))
}

/// In the given netns (None = current): sets `lo` up, sets `setup.name`'s
/// MTU, brings it up, adds the addresses and the default routes.
///
/// Running it again is harmless: addresses and routes that already exist
/// are kept as they are (an existing default route is kept even if it uses
/// another gateway). A missing interface is
/// [`NetlinkError::NoSuchInterface`].
pub fn configure_interface(
    netns: Option<BorrowedFd<'_>>,
    setup: &InterfaceSetup,
) -> Result<(), NetlinkError> {
    with_route_socket(netns, |socket| {
        bring_up(socket, LOOPBACK, None)?;
        let link = bring_up(socket, &setup.name, Some(setup.mtu))?;
        // Addresses first: the kernel accepts a gateway only once a
        // connected route (made by the address) reaches it.
        if let Some((address, prefix_len)) = setup.ipv4 {
            socket.add_address(&link, IpAddr::V4(address), prefix_len)?;
        }
        if let Some((address, prefix_len)) = setup.ipv6 {
            socket.add_address(&link, IpAddr::V6(address), prefix_len)?;
        }
        if let Some(gateway) = setup.gateway4 {
            socket.add_default_route(&link, IpAddr::V4(gateway))?;
        }
        if let Some(gateway) = setup.gateway6 {
            socket.add_default_route(&link, IpAddr::V6(gateway))?;
        }
        Ok(())
    })
}

/// Only MTU + up, for drivers that configured the addresses themselves
/// (e.g. pasta): sets `lo` up and the interface up; sets its MTU if `mtu` is
/// Some.
pub fn bring_up_interface(
    netns: Option<BorrowedFd<'_>>,
    name: &str,
    mtu: Option<u32>,
) -> Result<(), NetlinkError> {
    with_route_socket(netns, |socket| {
        bring_up(socket, LOOPBACK, None)?;
        bring_up(socket, name, mtu).map(drop)
    })
}

/// Looks the interface up by name, then sets its MTU (if given) and the UP
/// flag in one request.
fn bring_up(
    socket: &mut NetlinkSocket,
    name: &str,
    mtu: Option<u32>,
) -> Result<Link, NetlinkError> {
    let link = socket.link(name)?;
    socket.set_link(
        &link,
        LinkChange {
            up: Some(true),
            mtu,
            ..Default::default()
        },
    )?;
    Ok(link)
}

/// Opens a NETLINK_ROUTE socket in the requested network namespace and runs
/// `work` with it, on a namespace-joining thread when `netns` is given.
fn with_route_socket<T: Send>(
    netns: Option<BorrowedFd<'_>>,
    work: impl FnOnce(&mut NetlinkSocket) -> Result<T, NetlinkError> + Send,
) -> Result<T, NetlinkError> {
    let open_and_work = || {
        let mut socket = NetlinkSocket::route().map_err(|e| {
            NetlinkError::Request(rk_driver::netlink::NetlinkError::Refused {
                operation: "opening a NETLINK_ROUTE socket".into(),
                errno: e,
                kernel: None,
            })
        })?;
        work(&mut socket)
    };
    match netns {
        None => open_and_work(),
        Some(netns) => netns::run_in(netns, open_and_work),
    }
}
