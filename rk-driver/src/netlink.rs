//! One small netlink layer for the drivers, on the rust-netlink packet
//! crates (`netlink-packet-route`, `netlink-packet-sock-diag`): a blocking
//! socket that sends one request at a time and reads the kernel's answer
//! to it, with a time limit, and the requests drivers make.
//!
//! A netlink socket works on the network namespace it was opened in, so a
//! driver opens one inside the child's namespaces (in a namespace helper)
//! and uses it from outside. [`NetlinkSocket`] owns its descriptor or only
//! borrows it (`NetlinkSocket<BorrowedFd>`): a process that keeps the
//! descriptor elsewhere (a cleanup guard) can still make requests on it.

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NlasIterator, NLMSG_ALIGNTO, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use nix::sys::socket::{
    bind, recv, send, socket, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::fmt::Debug;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;
/// The message crates, for requests of one's own ([`NetlinkSocket::execute`]).
pub use {netlink_packet_core, netlink_packet_route, netlink_packet_sock_diag};

/// How long the kernel may take to answer one datagram.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for one datagram of an answer (the kernel's dump chunks are 32 KiB
/// at most).
const RECV_BUFFER: usize = 64 * 1024;
const NLMSG_HEADER_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{operation}: {errno}{}", kernel.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused {
        operation: String,
        errno: io::Error,
        /// The kernel's own explanation (extended acknowledgement).
        kernel: Option<String>,
    },
    #[error("{operation}: no interface named {name} in that network namespace")]
    NoSuchInterface { operation: String, name: String },
    #[error("{operation}: unexpected netlink answer: {detail}")]
    Unexpected { operation: String, detail: String },
    #[error("{operation}: the kernel did not answer within {}s", REPLY_TIMEOUT.as_secs())]
    Timeout { operation: String },
}

impl NetlinkError {
    /// The errno the kernel (or the socket call) answered with.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { errno, .. } => errno.raw_os_error(),
            NetlinkError::NoSuchInterface { .. } => Some(libc::ENODEV),
            _ => None,
        }
    }
}

/// Why a request failed, before the caller names the operation.
enum Failure {
    Errno(io::Error),
    Kernel(io::Error, Option<String>),
    Unexpected(String),
    Timeout,
}

impl Failure {
    fn errno(&self) -> Option<i32> {
        match self {
            Failure::Errno(e) | Failure::Kernel(e, _) => e.raw_os_error(),
            _ => None,
        }
    }

    fn during(self, operation: impl Into<String>) -> NetlinkError {
        let operation = operation.into();
        match self {
            Failure::Errno(errno) => NetlinkError::Refused {
                operation,
                errno,
                kernel: None,
            },
            Failure::Kernel(errno, kernel) => NetlinkError::Refused {
                operation,
                errno,
                kernel,
            },
            Failure::Unexpected(detail) => NetlinkError::Unexpected { operation, detail },
            Failure::Timeout => NetlinkError::Timeout { operation },
        }
    }
}

impl From<nix::Error> for Failure {
    fn from(e: nix::Error) -> Self {
        Failure::Errno(e.into())
    }
}

/// An interface of the socket's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
}

/// What [`NetlinkSocket::set_link`] changes; `None` leaves it as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkChange<'a> {
    pub up: Option<bool>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// Moves the link into this network namespace.
    pub netns: Option<BorrowedFd<'a>>,
}

/// A netlink socket (NETLINK_ROUTE or NETLINK_SOCK_DIAG) bound in the
/// network namespace it was opened in.
#[derive(Debug)]
pub struct NetlinkSocket<F: AsFd = OwnedFd> {
    fd: F,
    sequence: u32,
}

impl NetlinkSocket<OwnedFd> {
    /// A NETLINK_ROUTE socket in this process's network namespace.
    pub fn route() -> io::Result<Self> {
        Self::open(SockProtocol::NetlinkRoute)
    }

    /// A NETLINK_SOCK_DIAG socket in this process's network namespace.
    pub fn sock_diag() -> io::Result<Self> {
        Self::open(SockProtocol::NetlinkSockDiag)
    }

    fn open(protocol: SockProtocol) -> io::Result<Self> {
        let fd = socket(
            nix::sys::socket::AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // Both only improve error reports (the kernel's own explanation,
        // without our request echoed back); kernels before 4.12 lack them.
        for option in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            let on: libc::c_int = 1;
            // SAFETY: setsockopt reads an int that lives across the call.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    option,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        Ok(NetlinkSocket { fd, sequence: 0 })
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl<F: AsFd> NetlinkSocket<F> {
    /// Requests on a socket opened elsewhere; `sequence` is the last
    /// sequence number used on it (answers to older ones are skipped).
    pub fn on(fd: F, sequence: u32) -> Self {
        NetlinkSocket { fd, sequence }
    }

    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// Sends `message` with NLM_F_REQUEST | `flags` and returns the
    /// messages of the answer, which ends with an acknowledgement
    /// (NLM_F_ACK), an error or the end of a dump.
    fn request<M>(&mut self, message: M, flags: u16) -> Result<Vec<M>, Failure>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        send(self.fd.as_fd().as_raw_fd(), &bytes, MsgFlags::empty())?;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            if !crate::fdio::wait_readable(self.fd.as_fd(), REPLY_TIMEOUT)
                .map_err(Failure::Errno)?
            {
                return Err(Failure::Timeout);
            }
            let n = match recv(self.fd.as_fd().as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
                Ok(0) => return Err(Failure::Unexpected("end of file".into())),
                Ok(n) if n > buf.len() => {
                    return Err(Failure::Unexpected(format!("a {n}-byte datagram")))
                }
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(done) = read_answer(&buf[..n], self.sequence, &mut replies)? {
                return done.map(|()| replies);
            }
        }
    }

    /// Looks an interface up by name.
    pub fn link(&mut self, name: &str) -> Result<Link, NetlinkError> {
        let operation = || format!("looking up interface {name}");
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        let replies = self
            .request(RouteNetlinkMessage::GetLink(message), NLM_F_ACK)
            .map_err(|f| match f.errno() {
                Some(libc::ENODEV) => NetlinkError::NoSuchInterface {
                    operation: operation(),
                    name: name.to_owned(),
                },
                _ => f.during(operation()),
            })?;
        replies
            .iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(l) => Some(Link {
                    name: name.to_owned(),
                    index: l.header.index,
                }),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::Unexpected {
                operation: operation(),
                detail: "the kernel acknowledged without describing the link".into(),
            })
    }

    /// Changes a link in one RTM_SETLINK (the kernel applies the MTU and
    /// the address before the flags).
    pub fn set_link(&mut self, link: &Link, change: LinkChange<'_>) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        let mut what = Vec::new();
        if let Some(up) = change.up {
            message.header.change_mask = LinkFlags::Up;
            if up {
                message.header.flags = LinkFlags::Up;
            }
            what.push(if up { "bring it up" } else { "bring it down" }.to_owned());
        }
        if let Some(mtu) = change.mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
            what.push(format!("set its MTU to {mtu}"));
        }
        if let Some(mac) = change.mac {
            message
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
            what.push(format!("set its MAC to {}", crate::mac::format(&mac)));
        }
        if let Some(ns) = change.netns {
            message
                .attributes
                .push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
            what.push("move it to another network namespace".to_owned());
        }
        self.request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK)
            .map(drop)
            .map_err(|f| f.during(format!("{}: {}", link.name, what.join(", "))))
    }

    /// Deletes a link (for a veth, both ends); one that is already gone is
    /// not an error.
    pub fn delete_link(&mut self, link: &Link) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = link.index;
        match self.request(RouteNetlinkMessage::DelLink(message), NLM_F_ACK) {
            Err(f) if f.errno() == Some(libc::ENODEV) => Ok(()),
            other => other
                .map(drop)
                .map_err(|f| f.during(format!("deleting interface {}", link.name))),
        }
    }

    /// Adds `address/prefix_len` to the link; an existing one is kept.
    pub fn add_address(
        &mut self,
        link: &Link,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut message = AddressMessage::default();
        message.header.family = family(address);
        message.header.prefix_len = prefix_len;
        message.header.index = link.index;
        if address.is_loopback() {
            // As `ip` does: the kernel refuses loopback addresses of
            // another scope.
            message.header.scope = AddressScope::Host;
        }
        if address.is_ipv6() {
            // Nobody else is on the link to collide with, and a tentative
            // address cannot be bound for about a second.
            message.header.flags = AddressHeaderFlags::Nodad;
        }
        message.attributes.push(AddressAttribute::Local(address));
        message.attributes.push(AddressAttribute::Address(address));
        self.try_create(RouteNetlinkMessage::NewAddress(message))
            .map_err(|f| f.during(format!("adding {address}/{prefix_len} to {}", link.name)))
    }

    /// Adds a default route via `gateway` out of the link; an existing
    /// default route is kept.
    pub fn add_default_route(&mut self, link: &Link, gateway: IpAddr) -> Result<(), NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = family(gateway);
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message
            .attributes
            .push(RouteAttribute::Gateway(gateway.into()));
        message.attributes.push(RouteAttribute::Oif(link.index));
        self.try_create(RouteNetlinkMessage::NewRoute(message))
            .map_err(|f| {
                f.during(format!(
                    "adding a default route via {gateway} dev {}",
                    link.name
                ))
            })
    }

    /// Any other request: `message` with NLM_F_REQUEST | NLM_F_ACK |
    /// `flags`; returns the messages of the answer. `operation` names
    /// what was being done in errors.
    pub fn execute<M>(
        &mut self,
        message: M,
        flags: u16,
        operation: &str,
    ) -> Result<Vec<M>, NetlinkError>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.request(message, NLM_F_ACK | flags)
            .map_err(|f| f.during(operation))
    }

    /// Any creating request (NLM_F_CREATE | NLM_F_EXCL); "already exists"
    /// is success, so that doing it twice is harmless.
    pub fn create(
        &mut self,
        message: RouteNetlinkMessage,
        operation: &str,
    ) -> Result<(), NetlinkError> {
        self.try_create(message).map_err(|f| f.during(operation))
    }

    fn try_create(&mut self, message: RouteNetlinkMessage) -> Result<(), Failure> {
        match self.request(message, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) {
            Err(f) if f.errno() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The listening TCP sockets (IPv4 and IPv6) of the namespace, on a
    /// NETLINK_SOCK_DIAG socket: a dump filtered to the LISTEN state reads
    /// only those, where `/proc/net/tcp` walks every connection.
    pub fn listening_tcp(&mut self) -> Result<Vec<SocketAddr>, NetlinkError> {
        let mut found = Vec::new();
        for (family, id) in [
            (libc::AF_INET, SocketId::new_v4()),
            (libc::AF_INET6, SocketId::new_v6()),
        ] {
            let request = SockDiagMessage::InetRequest(InetRequest {
                family: family as u8,
                protocol: libc::IPPROTO_TCP as u8,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::LISTEN,
                socket_id: id,
            });
            let replies = self
                .request(request, NLM_F_DUMP)
                .map_err(|f| f.during("listing the listening TCP sockets (sock_diag)"))?;
            found.extend(replies.into_iter().filter_map(|r| match r {
                SockDiagMessage::InetResponse(r) => Some(SocketAddr::new(
                    r.header.socket_id.source_address,
                    r.header.socket_id.source_port,
                )),
                _ => None,
            }));
        }
        Ok(found)
    }
}

impl<F: AsFd> AsFd for NetlinkSocket<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Reads the messages of one datagram that answer `sequence` into
/// `replies` (others, left from an earlier request, are skipped); `Some`
/// once the answer is complete.
fn read_answer<M>(
    mut datagram: &[u8],
    sequence: u32,
    replies: &mut Vec<M>,
) -> Result<Option<Result<(), Failure>>, Failure>
where
    M: NetlinkDeserializable + Debug,
{
    while datagram.len() >= NLMSG_HEADER_LEN {
        let message = NetlinkMessage::<M>::deserialize(datagram)
            .map_err(|e| Failure::Unexpected(e.to_string()))?;
        let length = message.header.length as usize;
        if length < NLMSG_HEADER_LEN || length > datagram.len() {
            return Err(Failure::Unexpected(format!(
                "message length {length} in a {}-byte datagram",
                datagram.len()
            )));
        }
        let align = usize::from(NLMSG_ALIGNTO);
        datagram = &datagram[(length.div_ceil(align) * align).min(datagram.len())..];
        if message.header.sequence_number != sequence {
            continue;
        }
        let flags = message.header.flags;
        match message.payload {
            NetlinkPayload::InnerMessage(m) => replies.push(m),
            NetlinkPayload::Error(e) => {
                return Ok(Some(match e.code {
                    None => Ok(()),
                    Some(_) => Err(Failure::Kernel(e.to_io(), kernel_says(flags, &e.header))),
                }))
            }
            NetlinkPayload::Done(_) => return Ok(Some(Ok(()))),
            NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
            other => return Err(Failure::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(None)
}

/// The kernel's explanation (`NLMSGERR_ATTR_MSG`) in what follows the
/// errno of an NLMSG_ERROR: the request (only its header if the answer
/// is capped), then attributes.
fn kernel_says(flags: u16, after_errno: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = match flags & NLM_F_CAPPED {
        0 => u32::from_ne_bytes(after_errno.get(..4)?.try_into().ok()?) as usize,
        _ => NLMSG_HEADER_LEN,
    };
    let text = NlasIterator::new(after_errno.get(skip..)?)
        .map_while(Result::ok)
        .find(|a| a.kind() == NLMSGERR_ATTR_MSG)?
        .value()
        .to_vec();
    let text = String::from_utf8_lossy(text.strip_suffix(&[0]).unwrap_or(&text));
    Some(text.into_owned())
}

fn family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nsexec::tests::in_new_user_and_net_namespace;

    #[test]
    fn finds_a_listener_of_this_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut diag = NetlinkSocket::sock_diag().unwrap();
        let found = diag.listening_tcp().unwrap();
        assert!(found.contains(&addr), "{addr} not in {found:?}");
        // A borrowed socket goes on with the sequence numbers.
        let seq = diag.sequence();
        let mut again = NetlinkSocket::on(diag.as_fd(), seq);
        assert!(again.listening_tcp().unwrap().contains(&addr));
        assert_eq!(again.sequence(), seq + 2);
    }

    #[test]
    fn configures_a_link_in_a_new_namespace() {
        let code = in_new_user_and_net_namespace(|| {
            let Ok(mut nl) = NetlinkSocket::route() else {
                return 10;
            };
            let lo = match nl.link("lo") {
                Ok(l) if l.index == 1 => l,
                _ => return 11,
            };
            let up = LinkChange {
                up: Some(true),
                mtu: Some(65000),
                ..LinkChange::default()
            };
            if nl.set_link(&lo, up).is_err() {
                return 12;
            }
            // A new namespace's lo is down: connecting works only now.
            let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
                return 13;
            };
            if std::net::TcpStream::connect(l.local_addr().unwrap()).is_err() {
                return 19;
            }
            let a: IpAddr = "127.0.0.7".parse().unwrap();
            if nl.add_address(&lo, a, 8).is_err() || nl.add_address(&lo, a, 8).is_err() {
                return 14;
            }
            // Bindable now: the address is there.
            if std::net::TcpListener::bind((a, 0)).is_err() {
                return 15;
            }
            match nl.link("nosuch0") {
                Err(e @ NetlinkError::NoSuchInterface { .. })
                    if e.to_string().contains("no interface named nosuch0") => {}
                _ => return 16,
            }
            let ghost = Link {
                name: "ghost".into(),
                index: 999_999,
            };
            if nl.delete_link(&ghost).is_err() {
                return 17;
            }
            // Requests of one's own: a local route in a table of its own.
            let mut local = RouteMessage::default();
            local.header.address_family = AddressFamily::Inet;
            local.header.protocol = RouteProtocol::Boot;
            local.header.scope = RouteScope::Host;
            local.header.kind = RouteType::Local;
            local.attributes.push(RouteAttribute::Table(0x52b));
            local.attributes.push(RouteAttribute::Oif(lo.index));
            let add = || RouteNetlinkMessage::NewRoute(local.clone());
            if nl.create(add(), "adding").is_err() || nl.create(add(), "adding").is_err() {
                return 22;
            }
            let del = || RouteNetlinkMessage::DelRoute(local.clone());
            if nl.execute(del(), 0, "deleting").is_err() {
                return 23;
            }
            match nl.execute(del(), 0, "deleting it again") {
                Err(e) if e.to_string().starts_with("deleting it again: ") => {}
                _ => return 24,
            }
            // The kernel explains a refusal (extended acknowledgement).
            let _tap = crate::tap::open(&crate::tap::TapConfig::new("rkt0")).unwrap();
            let Ok(tap) = nl.link("rkt0") else { return 20 };
            let too_big = LinkChange {
                mtu: Some(70000),
                ..LinkChange::default()
            };
            match nl.set_link(&tap, too_big) {
                Err(NetlinkError::Refused {
                    errno,
                    kernel: Some(why),
                    ..
                }) if errno.raw_os_error() == Some(libc::EINVAL) && why.contains("mtu") => {}
                other => {
                    eprintln!("{other:?}");
                    return 21;
                }
            }
            match nl.set_link(&ghost, up) {
                Err(e)
                    if e.to_string()
                        .starts_with("ghost: bring it up, set its MTU to 65000") =>
                {
                    0
                }
                _ => 18,
            }
        });
        assert_eq!(code, 0);
    }
}
