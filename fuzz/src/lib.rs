//! The properties the fuzz targets check, kept in a library so that the
//! seed corpus can be replayed by `cargo test` on a stable toolchain.
//!
//! Each public function takes the fuzzer's bytes, feeds them to code that
//! reads bytes from a peer that is not trusted (or trusted less than the
//! process itself), and panics if that code panics or if what it returns
//! breaks a property. [`TARGETS`] lists them by the name of their fuzz
//! target and of their seed directory.

mod chunks;
pub mod dhcp;
mod driver_protocol;
pub mod gvtap;
pub mod offload;
pub mod ports;
pub mod syn_mss;
pub mod vpnkit;

pub use driver_protocol::decode_message;

/// An ethernet header without VLAN tags.
pub(crate) const ETH: usize = 14;

/// The big-endian `u16` at `at`.
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The properties of one target: they panic on a failure.
pub type Check = fn(&[u8]);

/// Every target: its name (of `fuzz_targets/NAME.rs` and `corpus-seed/NAME/`)
/// and the function its inputs go to.
pub const TARGETS: &[(&str, Check)] = &[
    ("decode_message", decode_message),
    ("dhcp_reply", dhcp::reply),
    ("dhcp_client", dhcp::client),
    ("dhcp_frame", dhcp::frame),
    ("vpnkit_handshake", vpnkit::handshake),
    ("vpnkit_frames", vpnkit::frames),
    ("port_spec", ports::spec),
    ("api_request", ports::api_request),
    ("gvtap_classify", gvtap::classify),
    ("gvtap_inspect", gvtap::inspect),
    ("gvtap_reassembly", gvtap::reassembly),
    ("gvtap_syn_mss", syn_mss::syn_mss),
    ("vpnkit_offload", offload::offload),
    ("vpnkit_coalesce", offload::coalesce),
];
