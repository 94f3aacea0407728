//! Creating the tap device inside the child's network namespace.

use rk_driver::NamespaceFds;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
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
pub fn create_in_namespace(ns: &NamespaceFds, name: &str) -> Result<OwnedFd, String> {
    let fds =
        rk_driver::nsexec::run_in_namespaces(Some(ns.userns.as_fd()), ns.netns.as_fd(), || {
            open_tap(name).map(|fd| vec![fd])
        })
        .map_err(|e| e.to_string())?;
    let fd = fds
        .into_iter()
        .next()
        .ok_or("the namespace helper returned no tap descriptor")?;
    set_nonblocking(&fd).map_err(|e| format!("making the tap non-blocking: {e}"))?;
    Ok(fd)
}

fn open_tap(name: &str) -> Result<OwnedFd, String> {
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
        flags: IFF_TAP | IFF_NO_PI,
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
