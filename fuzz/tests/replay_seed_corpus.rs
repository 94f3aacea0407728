//! Replays the seed corpus (and any crash reproducers saved next to it)
//! through the fuzz properties, so that `cargo test` on a stable toolchain
//! keeps checking them.

use std::path::Path;

fn replay(target: &str) {
    let (_, check) = rk_driver_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus-seed")
        .join(target);
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("reading the seed corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        check(&data);
        replayed += 1;
    }
    assert!(replayed > 0, "{} holds no seeds", dir.display());
}

/// One test per target, named after it.
macro_rules! seeds {
    ($($target:ident),* $(,)?) => {
        $(#[test]
        fn $target() {
            replay(stringify!($target));
        })*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($target)),*];
            for (name, _) in rk_driver_fuzz::TARGETS {
                assert!(tested.contains(name), "no seed test for {name}");
            }
        }
    };
}

seeds!(
    decode_message,
    dhcp_reply,
    dhcp_client,
    dhcp_frame,
    vpnkit_handshake,
    vpnkit_frames,
    port_spec,
    api_request,
    gvtap_classify,
    gvtap_inspect,
    gvtap_reassembly,
    gvtap_syn_mss,
    vpnkit_offload,
    vpnkit_coalesce,
);
