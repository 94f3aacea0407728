//! `decode_message`: the driver protocol (rk-driver), datagrams between the
//! core and a driver.

use rk_driver::protocol::{decode, encode, CoreMessage, DriverMessage, MAX_MESSAGE_SIZE};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// Decodes `data` as a message of either direction; whatever decodes must
/// survive encoding and decoding again unchanged.
pub fn decode_message(data: &[u8]) {
    if let Ok(msg) = decode::<CoreMessage>(data) {
        assert_round_trip(&msg);
    }
    if let Ok(msg) = decode::<DriverMessage>(data) {
        assert_round_trip(&msg);
    }
}

fn assert_round_trip<T>(msg: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let encoded = encode(msg);
    // Encoding writes out every defaulted member, so a message that was just
    // under the limit can come back a little over it: the limit is checked
    // by `decode` only when the encoding still fits.
    let again: T = if encoded.len() <= MAX_MESSAGE_SIZE {
        decode(&encoded).unwrap_or_else(|e| panic!("re-decoding {msg:?}: {e}"))
    } else {
        serde_json::from_slice(&encoded).unwrap_or_else(|e| panic!("re-decoding {msg:?}: {e}"))
    };
    assert_eq!(&again, msg, "the message changed on a round trip");
    assert_eq!(
        encode(&again),
        encoded,
        "encoding is not stable across a round trip"
    );
}
