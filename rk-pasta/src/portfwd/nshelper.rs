//! A small process that lives in the child's user and network namespaces
//! and hands out sockets (and `/proc/net` tables) made there.
//!
//! The driver stays in the host's namespaces and cannot enter the child's
//! once it runs threads (joining a user namespace needs a single-threaded
//! process). A socket keeps the namespace it was created in wherever its
//! descriptor goes, so this helper, forked while the driver is still
//! single-threaded, makes them on request: one byte asks, four bytes
//! (an errno, 0 for success) and the descriptor answer.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use nix::unistd::{fork, ForkResult, Pid};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

/// The running helper; it is killed when this is dropped.
#[derive(Debug)]
pub struct NsSockets {
    channel: Mutex<OwnedFd>,
    pid: Pid,
}

impl NsSockets {
    /// Forks the helper into the namespaces of `userns` and `netns`. Call
    /// this while the process is single-threaded.
    pub fn start(userns: BorrowedFd<'_>, netns: BorrowedFd<'_>) -> io::Result<NsSockets> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the caller guarantees a single-threaded process, so the
        // child may allocate; it only joins namespaces, serves requests and
        // leaves with _exit.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(ours);
                let code = helper_main(parent, userns.as_raw_fd(), netns.as_raw_fd(), theirs);
                // SAFETY: _exit skips destructors and atexit handlers that
                // belong to the parent's copy of the process state.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                let helper = NsSockets {
                    channel: Mutex::new(ours),
                    pid: child,
                };
                // The first answer says the helper got into the namespaces.
                helper.get(Kind::ProcTcp)?;
                Ok(helper)
            }
        }
    }

    /// A new descriptor of `kind`, made inside the namespaces.
    pub fn get(&self, kind: Kind) -> io::Result<OwnedFd> {
        let channel = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        let fd = channel.as_raw_fd();
        sendmsg::<UnixAddr>(
            fd,
            &[IoSlice::new(&[kind as u8])],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        let mut pfd = [nix::poll::PollFd::new(
            channel.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = ANSWER_TIMEOUT.as_millis() as u16;
        if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms))? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the namespace helper did not answer",
            ));
        }
        let mut errno = [0u8; 4];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut errno)];
        let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut got = None;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: the kernel just installed this descriptor for
                    // us; nobody else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    got.get_or_insert(owned);
                }
            }
        }
        if msg.bytes != 4 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the namespace helper has gone",
            ));
        }
        match i32::from_le_bytes(errno) {
            0 => got.ok_or_else(|| io::Error::other("the namespace helper sent no descriptor")),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

impl NsSockets {
    /// Sends the helper SIGKILL; [`Drop`] reaps it. Signalled early, it
    /// exits while the rest is torn down.
    pub fn kill(&self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
    }
}

impl Drop for NsSockets {
    /// Kills and reaps the helper: nothing of the driver's may outlive it,
    /// not even a zombie.
    fn drop(&mut self) {
        self.kill();
        while let Err(nix::Error::EINTR) = nix::sys::wait::waitpid(self.pid, None) {}
    }
}

/// The helper process: joins the namespaces, keeps nothing of the driver's
/// but its socket, and serves until the driver goes away.
fn helper_main(parent: libc::pid_t, userns: RawFd, netns: RawFd, channel: OwnedFd) -> i32 {
    // SAFETY: prctl, getppid with plain integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            return 1;
        }
    }
    // SAFETY: setns on descriptors inherited from the parent, which keeps
    // them open until after fork.
    if unsafe { libc::setns(userns, libc::CLONE_NEWUSER) } != 0
        || unsafe { libc::setns(netns, libc::CLONE_NEWNET) } != 0
    {
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EPERM);
        // Answer the first request with the reason.
        let mut req = [0u8; 1];
        let _ = nix::unistd::read(channel.as_fd(), &mut req);
        let _ = nix::unistd::write(channel.as_fd(), &e.to_le_bytes());
        return 1;
    }
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
    // Drop every descriptor inherited from the driver (the protocol
    // socket above all) except the channel, moved to 3.
    let channel = channel.as_raw_fd();
    // SAFETY: dup2 and close_range on descriptor numbers of this process;
    // nothing in this single-threaded process uses the closed ones again.
    unsafe {
        if channel != 3 && libc::dup2(channel, 3) != 3 {
            return 1;
        }
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    }
    // SAFETY: descriptor 3 is the channel, owned by nothing else now.
    let channel = unsafe { OwnedFd::from_raw_fd(3) };
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
        eprintln!("rk-pasta: warning: the namespace helper runs without a sandbox: {e}");
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

fn serve(channel: &OwnedFd, tables: &OwnedFd) {
    let fd = channel.as_raw_fd();
    loop {
        let mut req = [0u8; 1];
        match nix::unistd::read(channel.as_fd(), &mut req) {
            Ok(1) => {}
            Err(nix::Error::EINTR) => continue,
            _ => return,
        }
        let made = match Kind::from_byte(req[0]) {
            Some(kind) => make(kind, tables),
            None => Err(nix::Error::EINVAL),
        };
        let errno = match &made {
            Ok(_) => 0i32,
            Err(e) => *e as i32,
        };
        let bytes = errno.to_le_bytes();
        let iov = [IoSlice::new(&bytes)];
        let raw: Vec<RawFd> = made.iter().map(|f| f.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        if sendmsg::<UnixAddr>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).is_err() {
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
