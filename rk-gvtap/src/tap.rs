//! Creating the tap device inside the child's network namespace.

use rk_driver::NamespaceFds;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

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
    let fds =
        rk_driver::nsexec::run_in_namespaces(Some(ns.userns.as_fd()), ns.netns.as_fd(), || {
            open_tap(name, vnet).map(|fd| vec![fd])
        })
        .map_err(|e| e.to_string())?;
    let fd = fds
        .into_iter()
        .next()
        .ok_or("the namespace helper returned no tap descriptor")?;
    set_nonblocking(&fd).map_err(|e| format!("making the tap non-blocking: {e}"))?;
    if vnet {
        // SAFETY: TUNSETOFFLOAD takes an integer argument, on our tap.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) };
        if r < 0 {
            // Frames still carry the header; the guest just sends MTU-sized
            // segments with full checksums.
            let e = io::Error::last_os_error();
            eprintln!("rk-gvtap: warning: no offloads on the tap (TUNSETOFFLOAD: {e})");
        }
    }
    Ok(fd)
}

fn open_tap(name: &str, vnet: bool) -> Result<OwnedFd, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(format!("--ifname={name:?} is not a valid interface name"));
    }
    let path = CString::new("/dev/net/tun").expect("no NUL");
    // SAFETY: open with a valid C string; the result is checked.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => format!(
                "cannot open /dev/net/tun: {e}: let users open it (as root: chmod 0666 /dev/net/tun)"
            ),
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => format!(
                "cannot open /dev/net/tun: {e}: load the tun module (as root: modprobe tun)"
            ),
            _ => format!("cannot open /dev/net/tun: {e}"),
        });
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | if vnet { IFF_VNET_HDR } else { 0 },
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq-sized struct we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(format!(
            "creating tap device {name:?} inside the namespace (TUNSETIFF): {e}"
        ));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument, on our tap.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        // Not fatal: the device then just goes (slowly) with the descriptor.
        let e = io::Error::last_os_error();
        eprintln!("rk-gvtap: warning: TUNSETPERSIST on {name:?}: {e}");
    }
    Ok(fd)
}

pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
