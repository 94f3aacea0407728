//! Tap devices: `/dev/net/tun` with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI`,
//! optionally `IFF_VNET_HDR`), the virtio-net header size, offloads, the
//! MAC address and persistence, all with the `libc` constants.
//!
//! [`open`] runs inside the child's namespaces (in the helper that
//! [`crate::nsexec::run_in_namespaces`] forks): the device is made in the
//! network namespace of the process that opens it, and its descriptor keeps
//! it there wherever it goes.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const TUN_PATH: &str = "/dev/net/tun";

/// What tap to make.
#[derive(Debug, Clone, Default)]
pub struct TapConfig {
    /// Interface name (checked: 1 to 15 bytes, no `/`, space or NUL).
    pub name: String,
    /// Frames carry a virtio-net header (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// The header's size (`TUNSETVNETHDRSZ`); `None` keeps the kernel's 10.
    pub vnet_hdr_size: Option<i32>,
    /// The device's hardware address, set through the tap itself.
    pub mac: Option<[u8; 6]>,
    /// `TUNSETPERSIST`: the device goes with its namespace rather than
    /// with its last descriptor (closing the last descriptor of a
    /// non-persistent tap unregisters it there and then, waiting for RCU
    /// grace periods: 14-26 ms measured here). Not fatal if refused.
    pub persist: bool,
    /// `O_NONBLOCK` on the descriptor.
    pub nonblocking: bool,
}

impl TapConfig {
    pub fn new(name: &str) -> TapConfig {
        TapConfig {
            name: name.to_owned(),
            ..TapConfig::default()
        }
    }
}

/// Opens a new tap device as `config` says; the descriptor is
/// close-on-exec. Errors name the fix.
pub fn open(config: &TapConfig) -> Result<OwnedFd, String> {
    let name = &config.name;
    let mut req = ifreq(name)?;
    let mut flags = libc::O_CLOEXEC;
    if config.nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(TUN_PATH)
        .map_err(|e| open_error(&e))?;
    let mut tap_flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if config.vnet_hdr {
        tap_flags |= libc::IFF_VNET_HDR;
    }
    req.ifr_ifru.ifru_flags = tap_flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `req` is.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(tunsetiff_error(name, &io::Error::last_os_error()));
    }
    if let Some(size) = config.vnet_hdr_size {
        // SAFETY: TUNSETVNETHDRSZ reads an int, which `size` is.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) } < 0 {
            return Err(format!(
                "setting the virtio-net header size of {name} to {size}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    if let Some(mac) = config.mac {
        set_mac(tun.as_fd(), name, mac)?;
    }
    if config.persist {
        // SAFETY: TUNSETPERSIST takes an integer argument, on our tap.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
            // The device then just goes (more slowly) with the descriptor.
            log::warn!("TUNSETPERSIST on {name}: {}", io::Error::last_os_error());
        }
    }
    Ok(OwnedFd::from(tun))
}

/// Offloads the tap may hand over (`TUNSETOFFLOAD`, `libc::TUN_F_*`): with
/// checksum and TCP segmentation offload the guest's kernel sends TCP
/// super-segments of up to 64 KiB with partial checksums.
pub fn set_offload(tap: BorrowedFd<'_>, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes the flags as its integer argument.
    if unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIOCSIFHWADDR through the tap's own descriptor (the tun driver answers
/// it for its device), so no socket of the namespace is needed.
fn set_mac(tap: BorrowedFd<'_>, name: &str, mac: [u8; 6]) -> Result<(), String> {
    let mut req = ifreq(name)?;
    // SAFETY: writing plain data into the union member SIOCSIFHWADDR reads.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
    }
    // SAFETY: SIOCSIFHWADDR reads a struct ifreq, which `req` is.
    if unsafe { libc::ioctl(tap.as_raw_fd(), libc::SIOCSIFHWADDR, &req) } < 0 {
        return Err(format!(
            "setting the MAC address of {name} to {}: {}",
            crate::mac::format(&mac),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A zeroed `struct ifreq` naming `name`, which must be a valid interface
/// name.
fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(format!(
            "{name:?} is not a valid interface name (1 to {} bytes, no '/', space or NUL): \
             choose another --ifname",
            libc::IFNAMSIZ - 1
        ));
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
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => format!(
            "opening {TUN_PATH}: {e}: load the tun module (as root: modprobe tun) or create \
             the device node"
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

/// Makes tap `name` (`IFF_TAP | IFF_NO_PI`) in the child's network
/// namespace and persistent, then closes it: for a driver whose helper
/// program (slirp4netns, pasta) opens the tap by name itself and so
/// attaches to this one. The device then goes with the namespace rather
/// than with the program's descriptor: closing the last descriptor of a
/// non-persistent tap unregisters the device in the closing process and
/// waits for RCU grace periods (15-50 ms measured here), and rootlesskit's
/// exit waits for the program to be reaped; a persistent tap is torn down
/// by the kernel's namespace clean-up instead, off everyone's exit path.
/// Only the namespace's owner may attach to it. A failure is for the
/// caller to log: the program then makes its own tap as usual.
pub fn make_persistent(ns: &crate::NamespaceFds, name: &str) -> Result<(), String> {
    let config = TapConfig {
        persist: true,
        ..TapConfig::new(name)
    };
    crate::nsexec::run_in_namespaces(Some(ns.userns.as_fd()), ns.netns.as_fd(), || {
        open(&config).map(|_closed_at_once| Vec::new())
    })
    .map(drop)
    .map_err(|e| format!("no persistent tap {name} made in advance ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(ifreq("tap0").is_ok());
        assert!(ifreq("fifteen-chars-x").is_ok());
        for bad in ["", "sixteen-chars-xx", "a/b", "a b", "a\0"] {
            let e = ifreq(bad).unwrap_err();
            assert!(e.contains("choose another --ifname"), "{e}");
        }
    }

    #[test]
    fn each_tunsetiff_errno_gets_its_own_reason() {
        let msg = |errno| tunsetiff_error("tap0", &io::Error::from_raw_os_error(errno));
        assert!(msg(libc::EBUSY).contains("already exists"));
        assert!(msg(libc::EBUSY).contains("in use: choose another --ifname"));
        assert!(msg(libc::EINVAL).contains("is not a tap device"));
        assert!(msg(libc::EPERM).contains("CAP_NET_ADMIN"));
        assert!(msg(libc::EACCES).contains("security module"));
        for errno in [libc::EPERM, libc::EACCES, libc::ENOMEM, libc::EFAULT] {
            assert!(!msg(errno).contains("already exists"), "{}", msg(errno));
        }
        assert!(msg(libc::EPERM).starts_with("creating tap device tap0: Operation not permitted"));
    }

    #[test]
    fn open_errors_name_the_fix() {
        let msg = open_error(&io::Error::from_raw_os_error(libc::EACCES));
        assert!(msg.contains("chmod 0666 /dev/net/tun"), "{msg}");
        let msg = open_error(&io::Error::from_raw_os_error(libc::ENOENT));
        assert!(msg.contains("modprobe tun"), "{msg}");
    }

    #[test]
    fn a_tap_made_in_a_new_namespace_has_the_asked_for_properties() {
        let code = crate::nsexec::tests::in_new_user_and_net_namespace(|| {
            let config = TapConfig {
                vnet_hdr: true,
                vnet_hdr_size: Some(12),
                mac: Some([0x02, 0, 0, 0, 0, 0x42]),
                persist: true,
                nonblocking: true,
                ..TapConfig::new("rktap0")
            };
            let Ok(tap) = open(&config) else { return 10 };
            // (sysfs shows the namespace it was mounted in, not this one.)
            let mut req = ifreq("rktap0").unwrap();
            // SAFETY: SIOCGIFHWADDR fills a struct ifreq we own.
            if unsafe { libc::ioctl(tap.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
                return 11;
            }
            // SAFETY: the kernel just filled the hwaddr member.
            let got = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
            if got[..6].iter().map(|&b| b as u8).ne([2, 0, 0, 0, 0, 0x42]) {
                return 12;
            }
            if set_offload(tap.as_fd(), libc::TUN_F_CSUM | libc::TUN_F_TSO4).is_err() {
                return 13;
            }
            // SAFETY: F_GETFL on our descriptor.
            let fl = unsafe { libc::fcntl(tap.as_raw_fd(), libc::F_GETFL) };
            if fl & libc::O_NONBLOCK == 0 {
                return 14;
            }
            // The name is taken now, by a tap in use.
            match open(&TapConfig::new("rktap0")) {
                Err(e) if e.contains("in use") => 0,
                _ => 15,
            }
        });
        assert_eq!(code, 0);
    }
}
