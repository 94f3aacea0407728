//! A typed message channel over a connected `SOCK_SEQPACKET` unix socket:
//! one JSON message per datagram, file descriptors attached as SCM_RIGHTS.

use crate::protocol::{decode, encode, DecodeError, MAX_FDS, MAX_MESSAGE_SIZE};
use nix::cmsg_space;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("no message within {0:?}")]
    Timeout(Duration),
    #[error("message truncated: the peer sent more than {MAX_MESSAGE_SIZE} bytes or more than {MAX_FDS} descriptors")]
    Truncated,
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_SIZE} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("socket error: {0}")]
    Io(#[from] nix::Error),
}

/// One end of a protocol socket.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, both ends close-on-exec.
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn from_fd(fd: OwnedFd) -> Self {
        Channel { fd }
    }

    /// Takes the channel from the descriptor named by `RK_DRIVER_FD`.
    pub fn from_env() -> Result<Self, String> {
        let value = std::env::var(crate::DRIVER_FD_ENV).map_err(|_| {
            format!(
                "{} is not set: drivers are started by rootlesskit, not by hand",
                crate::DRIVER_FD_ENV
            )
        })?;
        let raw: RawFd = value
            .parse()
            .map_err(|_| format!("{}={value:?} is not a descriptor", crate::DRIVER_FD_ENV))?;
        // SAFETY: fcntl on an arbitrary number only reports EBADF if it is not open.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return Err(format!(
                "{}={raw} is not an open descriptor",
                crate::DRIVER_FD_ENV
            ));
        }
        // SAFETY: the descriptor is open, was passed to us for this purpose and
        // nothing else in the process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Keep it out of programs the driver starts.
        // SAFETY: F_SETFD on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        // Nor the variable: a program the driver starts must not be told
        // about a descriptor it does not have.
        std::env::remove_var(crate::DRIVER_FD_ENV);
        Ok(Channel { fd })
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// A command that starts the driver at `path` as the core does
    /// (docs/driver-protocol.md §3): the driver's end of a new channel at
    /// `RK_DRIVER_FD`, kept across exec; stdin on /dev/null; the
    /// parent-death signal; a process group of its own. Returns the
    /// command, the core's end, and the driver's end, which the caller
    /// drops once the command is spawned.
    pub fn driver_command(
        path: &std::path::Path,
    ) -> Result<(std::process::Command, Channel, OwnedFd), ChannelError> {
        let (ours, theirs) = Channel::pair()?;
        let theirs = theirs.into_fd();
        let mut cmd = std::process::Command::new(path);
        cmd.env(crate::DRIVER_FD_ENV, theirs.as_raw_fd().to_string())
            .env_remove(crate::DRIVER_DEBUG_ENV)
            .stdin(std::process::Stdio::null());
        crate::process::kill_with_parent(&mut cmd);
        crate::process::own_process_group(&mut cmd);
        crate::process::keep_across_exec(&mut cmd, vec![theirs.as_raw_fd()]);
        Ok((cmd, ours, theirs))
    }

    /// Sends one message with the given descriptors attached.
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let bytes = encode(msg);
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(ChannelError::TooLarge(bytes.len()));
        }
        self.send_raw(&bytes, fds)
    }

    /// Sends bytes as they are (tests use this to send garbage).
    pub fn send_raw(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
        let iov = [IoSlice::new(bytes)];
        loop {
            match sendmsg::<UnixAddr>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EPIPE) | Err(nix::Error::ECONNRESET) => {
                    return Err(ChannelError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one message and the descriptors that came with it (they are
    /// close-on-exec). `timeout` of `None` waits for ever.
    pub fn recv<T: for<'de> Deserialize<'de>>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let (bytes, fds) = self.recv_raw(timeout)?;
        Ok((decode(&bytes)?, fds))
    }

    /// Receives one datagram without decoding it.
    pub fn recv_raw(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), ChannelError> {
        if let Some(t) = timeout {
            if !self.wait_readable(t)? {
                return Err(ChannelError::Timeout(t));
            }
        }
        // One byte more than the limit, so that an oversized datagram shows up
        // as truncated rather than as a valid prefix.
        let mut buf = vec![0u8; MAX_MESSAGE_SIZE + 1];
        let mut space = cmsg_space!([RawFd; MAX_FDS]);
        let (len, flags, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<UnixAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            for r in raw {
                                // SAFETY: the kernel just installed this descriptor
                                // for us; nobody else owns it.
                                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                            }
                        }
                    }
                    break (msg.bytes, msg.flags, fds);
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::ECONNRESET) => return Err(ChannelError::Closed),
                Err(e) => return Err(e.into()),
            }
        };
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) || len > MAX_MESSAGE_SIZE {
            return Err(ChannelError::Truncated);
        }
        if len == 0 && fds.is_empty() {
            return Err(ChannelError::Closed);
        }
        buf.truncate(len);
        Ok((buf, fds))
    }

    /// Waits until a message (or EOF) is ready; `false` on timeout.
    pub fn wait_readable(&self, timeout: Duration) -> Result<bool, ChannelError> {
        crate::fdio::wait_readable(self.fd.as_fd(), timeout).map_err(|e| {
            ChannelError::Io(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        })
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CoreMessage;

    #[test]
    fn message_and_descriptors_cross_the_socket() {
        let (a, b) = Channel::pair().unwrap();
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();
        a.send(&CoreMessage::Shutdown, &[file.as_fd()]).unwrap();
        let (m, fds): (CoreMessage, _) = b.recv(Some(Duration::from_secs(1))).unwrap();
        assert_eq!(m, CoreMessage::Shutdown);
        assert_eq!(fds.len(), 1);
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    #[test]
    fn eof_is_reported_as_closed() {
        let (a, b) = Channel::pair().unwrap();
        drop(a);
        assert!(matches!(
            b.recv::<CoreMessage>(None),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn timeout_is_reported() {
        let (_a, b) = Channel::pair().unwrap();
        assert!(matches!(
            b.recv::<CoreMessage>(Some(Duration::from_millis(20))),
            Err(ChannelError::Timeout(_))
        ));
    }

    #[test]
    fn oversized_datagram_is_truncated_not_misread() {
        let (a, b) = Channel::pair().unwrap();
        let big = vec![b'x'; MAX_MESSAGE_SIZE + 100];
        // The kernel may refuse a datagram this large on a socketpair
        // (EMSGSIZE); either way the receiver must never see a valid message.
        if a.send_raw(&big, &[]).is_ok() {
            assert!(matches!(
                b.recv::<CoreMessage>(Some(Duration::from_secs(1))),
                Err(ChannelError::Truncated)
            ));
        }
        a.send_raw(b"garbage", &[]).unwrap();
        assert!(matches!(
            b.recv::<CoreMessage>(Some(Duration::from_secs(1))),
            Err(ChannelError::Decode(_))
        ));
    }
}
