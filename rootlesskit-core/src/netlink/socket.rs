//! A blocking NETLINK_ROUTE socket that sends one request at a time and
//! reads the kernel's answer to it.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLMSG_ALIGNTO, NLM_F_ACK,
    NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::NetlinkError;

/// Size of `struct nlmsghdr`, which leads the payload of an NLMSG_ERROR.
const NLMSG_HEADER_LEN: usize = 16;
/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute holding the kernel's text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Why a request failed, before the caller names the operation.
#[derive(Debug)]
pub(super) enum Failure {
    /// The kernel answered with an errno, or the socket call itself failed.
    Refused {
        errno: io::Error,
        kernel_message: Option<String>,
    },
    /// The answer did not follow the protocol.
    UnexpectedReply(String),
}

impl Failure {
    /// The errno the kernel answered with, if that is what happened.
    pub(super) fn raw_os_error(&self) -> Option<i32> {
        match self {
            Failure::Refused { errno, .. } => errno.raw_os_error(),
            Failure::UnexpectedReply(_) => None,
        }
    }

    /// Turns this into the public error, naming what was being done.
    pub(super) fn during(self, operation: String) -> NetlinkError {
        match self {
            Failure::Refused {
                errno,
                kernel_message,
            } => NetlinkError::Request {
                operation,
                errno,
                kernel_message,
            },
            Failure::UnexpectedReply(detail) => NetlinkError::UnexpectedReply { operation, detail },
        }
    }
}

impl From<io::Error> for Failure {
    fn from(errno: io::Error) -> Self {
        Failure::Refused {
            errno,
            kernel_message: None,
        }
    }
}

/// A NETLINK_ROUTE socket bound in the network namespace of the thread that
/// opened it.
pub(super) struct RouteSocket {
    socket: Socket,
    last_sequence: u32,
}

impl RouteSocket {
    pub(super) fn open() -> Result<Self, NetlinkError> {
        Self::open_bound()
            .map_err(|errno| Failure::from(errno).during("open a NETLINK_ROUTE socket".to_owned()))
    }

    fn open_bound() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Both only improve error reports (the kernel's own explanation,
        // without echoing our request back); kernels before 4.12 lack them.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Self {
            socket,
            last_sequence: 0,
        })
    }

    /// Sends `message` with NLM_F_REQUEST | NLM_F_ACK | `flags` and returns
    /// the replies that came before the kernel's acknowledgement.
    pub(super) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        self.last_sequence = self.last_sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.last_sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        self.receive_replies()
    }

    /// Reads datagrams until the answer to the last request is complete:
    /// an NLMSG_ERROR (acknowledgement or refusal) or an NLMSG_DONE.
    fn receive_replies(&self) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        let mut replies = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            let mut rest = datagram.as_slice();
            while !rest.is_empty() {
                let (message, length) = parse_one(rest)?;
                rest = &rest[length..];
                if message.header.sequence_number != self.last_sequence {
                    return Err(Failure::UnexpectedReply(format!(
                        "sequence number {} answers no request (expected {})",
                        message.header.sequence_number, self.last_sequence
                    )));
                }
                let flags = message.header.flags;
                match message.payload {
                    NetlinkPayload::InnerMessage(reply) => replies.push(reply),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok(replies),
                            Some(_) => Err(Failure::Refused {
                                errno: error.to_io(),
                                kernel_message: extended_ack_message(flags, &error.header),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Noop => {}
                    other => {
                        return Err(Failure::UnexpectedReply(format!(
                            "unexpected message {other:?}"
                        )))
                    }
                }
            }
        }
    }
}

/// Parses the first netlink message of `bytes`; returns it and how many
/// bytes (with alignment padding) it takes.
fn parse_one(bytes: &[u8]) -> Result<(NetlinkMessage<RouteNetlinkMessage>, usize), Failure> {
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
        .map_err(|error| Failure::UnexpectedReply(error.to_string()))?;
    let length = message.header.length as usize;
    if length < NLMSG_HEADER_LEN || length > bytes.len() {
        return Err(Failure::UnexpectedReply(format!(
            "message length {length} does not fit the {} bytes received",
            bytes.len()
        )));
    }
    let align = usize::from(NLMSG_ALIGNTO);
    let padded = length.div_ceil(align) * align;
    Ok((message, padded.min(bytes.len())))
}

/// Extracts the kernel's explanation (NLMSGERR_ATTR_MSG) from the payload
/// of an NLMSG_ERROR that followed the errno: the original request (only its
/// header when NLM_F_CAPPED), then the extended-ack attributes.
fn extended_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let request_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HEADER_LEN
    } else {
        u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize
    };
    NlasIterator::new(payload.get(request_len..)?)
        .map_while(Result::ok)
        .find(|attribute| attribute.kind() == NLMSGERR_ATTR_MSG)
        .map(|attribute| {
            let text = attribute.value();
            let text = text.strip_suffix(&[0]).unwrap_or(text);
            String::from_utf8_lossy(text).into_owned()
        })
}
