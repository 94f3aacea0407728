//! A small process that lives in the child's user and network namespaces
//! and hands out sockets (and `/proc/net` tables) made there.
//!
//! The driver stays in the host's namespaces and cannot enter the child's
//! once it runs threads (joining a user namespace needs a single-threaded
//! process). A socket keeps the namespace it was created in wherever its
//! descriptor goes, so this helper (an `rk_driver::nsexec::Resident`,
//! forked while the driver is still single-threaded) makes them on
//! request over an `rk_driver::Channel`: the kind asks, an errno (0 for
//! success) and the descriptor answer.

use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use rk_driver::nsexec::{close_other_fds, Namespaces, Resident};
use rk_driver::Channel;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

/// What can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Tcp4 = 1,
    Tcp6 = 2,
    Udp4 = 3,
    Udp6 = 4,
    ProcTcp = 5,
    ProcTcp6 = 6,
    ProcUdp = 7,
    ProcUdp6 = 8,
    /// A NETLINK_SOCK_DIAG socket.
    SockDiag = 9,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        [
            Kind::Tcp4,
            Kind::Tcp6,
            Kind::Udp4,
            Kind::Udp6,
            Kind::ProcTcp,
            Kind::ProcTcp6,
            Kind::ProcUdp,
            Kind::ProcUdp6,
            Kind::SockDiag,
        ]
        .into_iter()
        .find(|k| *k as u8 == b)
    }
}

/// How long one answer may take (the helper only makes a socket).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The running helper; it is killed (and reaped) when this is dropped.
#[derive(Debug)]
pub struct NsSockets {
    channel: Mutex<Channel>,
    process: Resident,
}

impl NsSockets {
    /// Forks the helper into the namespaces of `userns` and `netns`. Call
    /// this while the process is single-threaded.
    pub fn start(userns: BorrowedFd<'_>, netns: BorrowedFd<'_>) -> io::Result<NsSockets> {
        let (ours, theirs) = Channel::pair().map_err(io::Error::other)?;
        let namespaces = Namespaces {
            userns: Some(userns),
            netns,
        };
        let process = Resident::spawn("the namespace helper", Some(namespaces), true, move || {
            helper_main(theirs)
        })
        .map_err(io::Error::other)?;
        let helper = NsSockets {
            channel: Mutex::new(ours),
            process,
        };
        // The first answer says the helper is ready to serve.
        helper.get(Kind::ProcTcp)?;
        Ok(helper)
    }

    /// A new descriptor of `kind`, made inside the namespaces.
    pub fn get(&self, kind: Kind) -> io::Result<OwnedFd> {
        let channel = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        let gone = |e| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("the namespace helper: {e}"),
            )
        };
        channel.send(&(kind as u8), &[]).map_err(gone)?;
        let (errno, fds) = channel.recv::<i32>(Some(ANSWER_TIMEOUT)).map_err(gone)?;
        match errno {
            0 => fds
                .into_iter()
                .next()
                .ok_or_else(|| io::Error::other("the namespace helper sent no descriptor")),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Sends the helper SIGKILL; [`Drop`] reaps it. Signalled early, it
    /// exits while the rest is torn down.
    pub fn kill(&self) {
        self.process.kill();
    }
}

/// The helper process, in the namespaces: keeps nothing of the driver's
/// but its channel, gives up what it does not need, and serves until the
/// driver goes away.
fn helper_main(channel: Channel) -> i32 {
    // Drop every descriptor inherited from the driver (the protocol
    // socket above all) except the channel.
    close_other_fds(&[channel.as_fd().as_raw_fd()]);
    // Joining the user namespace gave it every capability there, and a
    // socket remembers the capabilities of whoever opened it: a sock_diag
    // socket made with CAP_NET_ADMIN could destroy the child's sockets in
    // the driver's hands (SOCK_DESTROY). Nothing it does needs one.
    if drop_capabilities().is_err() {
        return 1;
    }
    // It starts no program either.
    if rk_driver::sandbox::no_new_privs().is_err() {
        return 1;
    }
    // Root inside the child has every capability in the user namespace
    // this process now belongs to, so it could ptrace it (and read or
    // write its memory, with the driver's socket). Not dumpable, a
    // process can only be traced with CAP_SYS_PTRACE in the namespace
    // its memory was created in: the host's. Set after setns, which may
    // reset it.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return 1;
    }
    // The tables are opened below this directory, held open for the
    // helper's life: Landlock's rule names it, and procfs makes a new
    // inode for a directory it looks up again once the old one was
    // evicted, which the rule would no longer match.
    let Ok(tables) = nix::fcntl::open(
        crate::confinement::NET_TABLES,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return 1;
    };
    // Set-up is over: from here on it only makes sockets and opens the
    // tables (docs/security.md). A kernel that refuses the filter is
    // reported, not fatal, as for the driver.
    if let Err(e) = crate::confinement::helper_policy().apply() {
        log::warn!("the namespace helper runs without a sandbox: {e}");
    }
    serve(&channel, &tables);
    0
}

/// Empties the effective, permitted and inheritable capability sets.
fn drop_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data structs, which
    // live until it returns.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn serve(channel: &Channel, tables: &OwnedFd) {
    while let Ok((request, _)) = channel.recv::<u8>(None) {
        let made = match Kind::from_byte(request) {
            Some(kind) => make(kind, tables),
            None => Err(nix::Error::EINVAL),
        };
        let sent = match &made {
            Ok(fd) => channel.send(&0i32, &[fd.as_fd()]),
            Err(e) => channel.send(&(*e as i32), &[]),
        };
        if sent.is_err() {
            return;
        }
    }
}

fn make(kind: Kind, tables: &OwnedFd) -> nix::Result<OwnedFd> {
    use nix::sys::socket::socket;
    let (family, ty) = match kind {
        Kind::Tcp4 => (AddressFamily::Inet, SockType::Stream),
        Kind::Tcp6 => (AddressFamily::Inet6, SockType::Stream),
        Kind::Udp4 => (AddressFamily::Inet, SockType::Datagram),
        Kind::Udp6 => (AddressFamily::Inet6, SockType::Datagram),
        Kind::SockDiag => {
            return socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                nix::sys::socket::SockProtocol::NetlinkSockDiag,
            )
        }
        Kind::ProcTcp | Kind::ProcTcp6 | Kind::ProcUdp | Kind::ProcUdp6 => {
            let table = match kind {
                Kind::ProcTcp => "tcp",
                Kind::ProcTcp6 => "tcp6",
                Kind::ProcUdp => "udp",
                _ => "udp6",
            };
            // /proc/self/net shows the tables of the network namespace this
            // process is in, and an open table stays bound to it.
            return nix::fcntl::openat(
                tables,
                table,
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            );
        }
    };
    socket(family, ty, SockFlag::SOCK_CLOEXEC, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_byte() {
        for b in 1..=9 {
            assert_eq!(Kind::from_byte(b).unwrap() as u8, b);
        }
        assert_eq!(Kind::from_byte(0), None);
        assert_eq!(Kind::from_byte(10), None);
    }
}
