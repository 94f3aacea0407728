//! The tap device inside the child's network namespace.
//!
//! It is made by a short-lived helper that joins the child's user and
//! network namespaces (`rk_driver::nsexec`); the descriptor it sends back
//! keeps the device in that namespace. The device is not persistent: it
//! disappears when the last descriptor closes, i.e. when this driver exits.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const TUN_PATH: &str = "/dev/net/tun";

/// Opens a new tap device `name` with hardware address `mac`. Runs inside
/// the target namespaces. The descriptor is non-blocking and close-on-exec;
/// every packet read or written through it starts with a 10-byte
/// virtio-net header, and checksum and TCP segmentation offload are on
/// (see `offload`).
pub fn create(name: &str, mac: [u8; 6]) -> Result<OwnedFd, String> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| open_error(&e))?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(tunsetiff_error(name, &io::Error::last_os_error()));
    }
    let hdr_len = crate::offload::VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads an int, which `hdr_len` is.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) } < 0 {
        return Err(format!(
            "setting the virtio-net header size of {name}: {}",
            io::Error::last_os_error()
        ));
    }
    let offload = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes the flags as its integer argument. If the
    // kernel refuses, the tap simply hands out plain frames.
    unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            offload as libc::c_ulong,
        )
    };
    set_mac(name, mac)?;
    Ok(OwnedFd::from(tun))
}

/// SIOCSIFHWADDR through any socket of the namespace.
fn set_mac(name: &str, mac: [u8; 6]) -> Result<(), String> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: the descriptor was just created and nothing else owns it.
    let sock = unsafe { File::from_raw_fd(raw) };
    let mut req = ifreq(name)?;
    // SAFETY: writing plain data into the union member SIOCSIFHWADDR reads.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
    }
    // SAFETY: SIOCSIFHWADDR reads an ifreq, which `req` is.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFHWADDR, &req) } < 0 {
        return Err(format!(
            "setting the MAC address of {name}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    // SAFETY: ifreq is plain data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn open_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "opening {TUN_PATH}: {e}: unprivileged users need it readable and writable \
             (as root: chmod 0666 {TUN_PATH}, the mode most distributions ship)"
        ),
        Some(libc::ENOENT) => format!(
            "opening {TUN_PATH}: {e}: load the tun module (modprobe tun) or create the device node"
        ),
        _ => format!("opening {TUN_PATH}: {e}"),
    }
}

/// Why TUNSETIFF refused, with the fix: the kernel's reasons differ per
/// errno (drivers/net/tun.c, `tun_set_iff`).
fn tunsetiff_error(name: &str, e: &io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::EBUSY) => format!(
            "a tun/tap device named {name} already exists in the child's network namespace \
             and is in use: choose another --ifname"
        ),
        Some(libc::EINVAL) => format!(
            "an interface named {name} already exists in the child's network namespace and \
             is not a tap device this driver can attach to: choose another --ifname"
        ),
        Some(libc::EPERM) => "creating a tap device needs CAP_NET_ADMIN over the child's \
             network namespace, which the helper has only inside the child's user namespace: \
             the namespaces given to the driver do not belong together"
            .to_owned(),
        Some(libc::EACCES) => "a security module (SELinux or AppArmor) refused the tap \
             device: allow tun devices for this user"
            .to_owned(),
        Some(libc::ENOMEM) | Some(libc::ENOSPC) => "the kernel is out of memory".to_owned(),
        _ => "the kernel refused TUNSETIFF".to_owned(),
    };
    format!("creating tap device {name}: {e}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(ifreq("tap0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("sixteen-chars-xx").is_err());
        assert!(ifreq("a/b").is_err());
    }

    #[test]
    fn each_tunsetiff_errno_gets_its_own_reason() {
        let msg = |errno| tunsetiff_error("tap0", &io::Error::from_raw_os_error(errno));
        assert!(
            msg(libc::EBUSY).contains("already exists"),
            "{}",
            msg(libc::EBUSY)
        );
        assert!(msg(libc::EBUSY).contains("in use: choose another --ifname"));
        assert!(msg(libc::EINVAL).contains("is not a tap device"));
        assert!(msg(libc::EPERM).contains("CAP_NET_ADMIN"));
        assert!(msg(libc::EACCES).contains("security module"));
        for errno in [libc::EPERM, libc::EACCES, libc::ENOMEM, libc::EFAULT] {
            assert!(
                !msg(errno).contains("already exists") && !msg(errno).contains("taken"),
                "{}",
                msg(errno)
            );
        }
        assert!(msg(libc::EPERM).starts_with("creating tap device tap0: Operation not permitted"));
    }

    #[test]
    fn permission_error_names_the_fix() {
        let msg = open_error(&io::Error::from_raw_os_error(libc::EACCES));
        assert!(msg.contains("chmod 0666 /dev/net/tun"), "{msg}");
    }
}
