//! The vpnkit ethernet ("vmnet", hyperkit) protocol on a unix stream socket.
//!
//! The layouts follow vpnkit's own `src/hostnet/vmnet.ml` (protocol version
//! 22, vpnkit v0.2 and later) and hyperkit's client
//! `src/lib/pci_virtio_net_vpnkit.c`; gvisor-tap-vsock's gvproxy serves the
//! same bytes. All integers are little-endian, also the IPv4 address of the
//! preferred-address command (vpnkit's own choice, not network order).
//!
//! ```text
//! client → server  init      49 bytes  "VMN3T" | version u32 | commit [40]
//! server → client  init      49 bytes  the same layout (gvproxy echoes ours)
//! client → server  command   41 bytes  1 (ethernet) | uuid text [36] | 4 zero bytes
//! server → client  response 258 bytes  1 (vif) | mtu u16 | max packet size u16 | mac [6] | zeros
//!                                   or 2 (disconnect) | reason length u8 | reason [256]
//! then both ways   frames            length u16 | ethernet frame
//! ```

/// The magic at the start of both init messages.
pub const MAGIC: [u8; 5] = *b"VMN3T";
/// The protocol version vpnkit speaks since v0.2 (older releases spoke 2
/// with a shorter reply; current vpnkit refuses any other version).
pub const VERSION: u32 = 22;
pub const INIT_LEN: usize = 5 + 4 + 40;
pub const COMMAND_LEN: usize = 1 + 36 + 4;
pub const RESPONSE_LEN: usize = 1 + 1 + 256;
/// The length prefix of every frame after the handshake.
pub const FRAME_HEADER_LEN: usize = 2;

const COMMAND_ETHERNET: u8 = 1;
const RESPONSE_VIF: u8 = 1;
const RESPONSE_DISCONNECT: u8 = 2;
/// What vpnkit's own Go client sends as its "commit"; vpnkit only logs it.
const CLIENT_COMMIT: &[u8; 40] = b"0123456789012345678901234567890123456789";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "the peer does not speak the vpnkit ethernet protocol: its greeting starts with {0:?} \
         instead of \"VMN3T\""
    )]
    BadMagic(String),
    #[error("the peer speaks vpnkit protocol version {0}; this driver speaks version {VERSION} (vpnkit v0.2 or later)")]
    Version(u32),
    #[error("vpnkit refused the interface: {0}")]
    Disconnected(String),
    #[error("vpnkit answered the ethernet command with unknown response type {0}")]
    UnknownResponse(u8),
    #[error("vpnkit assigned the invalid MAC address {0} (multicast or all zeros)")]
    BadMac(String),
}

/// The server's init message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInit {
    pub version: u32,
    /// Free text (vpnkit sends a fixed string, gvproxy echoes ours).
    pub commit: String,
}

/// What vpnkit says about the interface it made for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vif {
    pub mtu: u16,
    pub max_packet_size: u16,
    pub mac: [u8; 6],
}

/// The client's init message.
pub fn client_init() -> [u8; INIT_LEN] {
    let mut m = [0u8; INIT_LEN];
    m[..5].copy_from_slice(&MAGIC);
    m[5..9].copy_from_slice(&VERSION.to_le_bytes());
    m[9..].copy_from_slice(CLIENT_COMMIT);
    m
}

/// Checks the server's init message.
pub fn parse_server_init(m: &[u8; INIT_LEN]) -> Result<ServerInit, HandshakeError> {
    if m[..5] != MAGIC {
        return Err(HandshakeError::BadMagic(
            String::from_utf8_lossy(&m[..5]).into_owned(),
        ));
    }
    let version = u32::from_le_bytes([m[5], m[6], m[7], m[8]]);
    if version != VERSION {
        return Err(HandshakeError::Version(version));
    }
    let commit = String::from_utf8_lossy(&m[9..])
        .trim_end_matches('\0')
        .to_owned();
    Ok(ServerInit { version, commit })
}

/// The command asking for an ethernet interface named by `uuid` (its
/// 36-character text form); vpnkit picks the address.
pub fn ethernet_command(uuid: &str) -> [u8; COMMAND_LEN] {
    assert_eq!(uuid.len(), 36, "a UUID's text form has 36 characters");
    let mut m = [0u8; COMMAND_LEN];
    m[0] = COMMAND_ETHERNET;
    m[1..37].copy_from_slice(uuid.as_bytes());
    m
}

/// Reads the server's answer to the ethernet command.
pub fn parse_response(m: &[u8; RESPONSE_LEN]) -> Result<Vif, HandshakeError> {
    match m[0] {
        RESPONSE_VIF => {
            let mtu = u16::from_le_bytes([m[1], m[2]]);
            let max_packet_size = u16::from_le_bytes([m[3], m[4]]);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&m[5..11]);
            if mac == [0; 6] || mac[0] & 1 == 1 {
                return Err(HandshakeError::BadMac(format_mac(&mac)));
            }
            Ok(Vif {
                mtu,
                max_packet_size,
                mac,
            })
        }
        RESPONSE_DISCONNECT => {
            let len = usize::from(m[1]);
            let reason = String::from_utf8_lossy(&m[2..2 + len]).into_owned();
            Err(HandshakeError::Disconnected(reason))
        }
        other => Err(HandshakeError::UnknownResponse(other)),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub use rk_driver::mac::format as format_mac;

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The init message as vpnkit's Go client and hyperkit send it, and as
    /// gvproxy 0.8.1 echoed it back (recorded).
    const RECORDED_INIT: &str =
        "564d4e33541600000030313233343536373839303132333435363738393031323334353637383930313233343536373839";

    #[test]
    fn client_init_matches_recorded_bytes() {
        let recorded = hex(RECORDED_INIT);
        assert_eq!(recorded.len(), INIT_LEN);
        assert_eq!(client_init().to_vec(), recorded);
    }

    #[test]
    fn server_init_echo_is_accepted() {
        let recorded: [u8; INIT_LEN] = hex(RECORDED_INIT).try_into().unwrap();
        let init = parse_server_init(&recorded).unwrap();
        assert_eq!(init.version, 22);
        assert_eq!(init.commit, "0123456789012345678901234567890123456789");
    }

    #[test]
    fn bad_magic_and_old_version_are_refused() {
        let mut m = client_init();
        m[..5].copy_from_slice(b"HELLO");
        assert_eq!(
            parse_server_init(&m),
            Err(HandshakeError::BadMagic("HELLO".into()))
        );
        let mut m = client_init();
        m[5..9].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse_server_init(&m), Err(HandshakeError::Version(2)));
    }

    #[test]
    fn ethernet_command_layout() {
        let uuid = "c3d68012-0208-11ea-9fd7-f2189899ab08";
        let m = ethernet_command(uuid);
        let mut expected = vec![1u8];
        expected.extend_from_slice(uuid.as_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(m.to_vec(), expected);
        assert_eq!(m.len(), 41);
    }

    #[test]
    fn vif_response_recorded_from_gvproxy() {
        // gvproxy 0.8.1 -mtu 1500, for the UUID above (which it maps to a
        // fixed MAC): status 1, mtu 1500, max packet 1514, MAC, zeros.
        let mut m = [0u8; RESPONSE_LEN];
        m[..11].copy_from_slice(&hex("01dc05ea055a94efe40cee"));
        let vif = parse_response(&m).unwrap();
        assert_eq!(vif.mtu, 1500);
        assert_eq!(vif.max_packet_size, 1514);
        assert_eq!(format_mac(&vif.mac), "5a:94:ef:e4:0c:ee");
    }

    #[test]
    fn vif_response_as_vpnkit_marshals_it() {
        // vmnet.ml: Response.marshal (Vif { mtu = 1500; max_packet_size =
        // mtu + 50; ... }) into a zeroed 258-byte buffer.
        let mut m = [0u8; RESPONSE_LEN];
        m[0] = 1;
        m[1..3].copy_from_slice(&1500u16.to_le_bytes());
        m[3..5].copy_from_slice(&1550u16.to_le_bytes());
        m[5..11].copy_from_slice(&[0x02, 0x50, 0x00, 0x00, 0x00, 0x01]);
        let vif = parse_response(&m).unwrap();
        assert_eq!((vif.mtu, vif.max_packet_size), (1500, 1550));
        assert_eq!(vif.mac, [0x02, 0x50, 0, 0, 0, 1]);
    }

    #[test]
    fn disconnect_reason_is_reported() {
        let mut m = [0u8; RESPONSE_LEN];
        let reason = b"Unsupported command Bind_ipv4";
        m[0] = 2;
        m[1] = reason.len() as u8;
        m[2..2 + reason.len()].copy_from_slice(reason);
        assert_eq!(
            parse_response(&m),
            Err(HandshakeError::Disconnected(
                "Unsupported command Bind_ipv4".into()
            ))
        );
        // A reason of the maximum length stays within the message.
        m[1] = 255;
        assert!(parse_response(&m).is_err());
    }

    #[test]
    fn unknown_response_and_bad_mac_are_refused() {
        let mut m = [0u8; RESPONSE_LEN];
        m[0] = 9;
        assert_eq!(parse_response(&m), Err(HandshakeError::UnknownResponse(9)));
        m[0] = 1;
        assert!(matches!(parse_response(&m), Err(HandshakeError::BadMac(_))));
        m[5] = 0x01;
        assert!(matches!(parse_response(&m), Err(HandshakeError::BadMac(_))));
    }
}
