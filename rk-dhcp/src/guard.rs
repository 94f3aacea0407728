//! What dhcproto 0.15 must not be shown. Its decoder panics on two things a
//! server (or anyone else on the link who can reach the client port) may
//! send, so a received message is checked for them first:
//! - a hardware address length (`hlen`) over `chaddr`'s 16 bytes:
//!   `Message::chaddr` slices the field by it;
//! - options whose length its decoder only `debug_assert!`s: a debug build
//!   panics, a release build reads past the option's end.

use crate::message::ReplyError;

const HLEN_AT: usize = 2;
const CHADDR_LEN: u8 = 16;
/// Options start after the fixed BOOTP fields (236 bytes) and the magic
/// cookie, where dhcproto reads them.
const OPTIONS_AT: usize = 240;
const PAD: u8 = 0;
const END: u8 = 255;

/// Whether dhcproto decodes option `code` with `len` value bytes without
/// tripping an assertion: rapid commit (RFC 4039), client FQDN (RFC 4702),
/// client network interface (RFC 4578), bulk leasequery times (RFC 6926).
fn length_fits(code: u8, len: usize) -> bool {
    match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        152..=155 => len == 4,
        _ => true,
    }
}

fn check_option(option: Option<(u8, usize)>) -> Result<(), ReplyError> {
    match option {
        Some((code, len)) if !length_fits(code, len) => Err(ReplyError::Malformed(format!(
            "option {code} with {len} bytes of value, invalid for it"
        ))),
        _ => Ok(()),
    }
}

/// Refuses `bytes` if dhcproto would panic decoding them.
pub(crate) fn check(bytes: &[u8]) -> Result<(), ReplyError> {
    if let Some(&hlen) = bytes.get(HLEN_AT) {
        if hlen > CHADDR_LEN {
            return Err(ReplyError::Malformed(format!(
                "hardware address length {hlen} (chaddr holds 16 bytes)"
            )));
        }
    }
    // dhcproto joins consecutive options with the same code into one
    // (RFC 3396) and checks the joined length: so does this.
    let mut option: Option<(u8, usize)> = None;
    let mut at = OPTIONS_AT;
    while let Some(&code) = bytes.get(at) {
        if code == PAD || code == END {
            check_option(option.take())?;
            if code == END {
                return Ok(());
            }
            at += 1;
            continue;
        }
        let Some(&len) = bytes.get(at + 1) else {
            break;
        };
        let len = usize::from(len);
        option = match option {
            Some((c, joined)) if c == code => Some((c, joined + len)),
            other => {
                check_option(other)?;
                Some((code, len))
            }
        };
        at += 2 + len;
    }
    check_option(option)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse_reply;
    use crate::message::tests::{server_reply, MAC};
    use dhcproto::v4::MessageType;
    use std::net::Ipv4Addr;

    /// An ACK for transaction 9 with `raw` options added before the end.
    fn ack_with(raw: &[u8]) -> Vec<u8> {
        let mut m = server_reply(MessageType::Ack, 9, Ipv4Addr::new(10, 0, 3, 9), &[]);
        assert_eq!(m.pop(), Some(END));
        m.extend_from_slice(raw);
        m.push(END);
        m
    }

    #[test]
    fn hardware_address_longer_than_chaddr_is_refused() {
        let mut m = ack_with(&[]);
        assert!(parse_reply(&m, &MAC, 9).is_ok());
        m[HLEN_AT] = 16;
        assert!(parse_reply(&m, &MAC, 9).is_ok());
        m[HLEN_AT] = 17;
        assert!(matches!(
            parse_reply(&m, &MAC, 9),
            Err(ReplyError::Malformed(_))
        ));
    }

    #[test]
    fn options_of_a_length_dhcproto_asserts_against_are_refused() {
        for raw in [
            &[80, 1, 0][..],
            &[94, 2, 1, 2],
            // Each part is right, joined (RFC 3396) they are not.
            &[94, 3, 1, 2, 3, 94, 3, 1, 2, 3],
            &[81, 2, 0, 0],
            &[152, 3, 0, 0, 0],
        ] {
            assert!(
                matches!(
                    parse_reply(&ack_with(raw), &MAC, 9),
                    Err(ReplyError::Malformed(_))
                ),
                "{raw:?}"
            );
        }
        for raw in [
            &[80, 0][..],
            &[80, 0, 0, 94, 3, 1, 2, 3],
            &[152, 4, 0, 0, 0, 1],
            &[81, 3, 0, 0, 0],
        ] {
            assert!(parse_reply(&ack_with(raw), &MAC, 9).is_ok(), "{raw:?}");
        }
    }
}
