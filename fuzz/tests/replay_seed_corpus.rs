//! Replays the seed corpus (and any crash reproducers saved next to it)
//! through the fuzz properties, so that `cargo test` on a stable toolchain
//! keeps checking them.

use std::path::Path;

#[test]
fn seed_corpus_holds_the_decode_message_properties() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus-seed/decode_message");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("reading the seed corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        rk_driver_fuzz::decode_message(&data);
        replayed += 1;
    }
    assert!(replayed > 0, "{} holds no seeds", dir.display());
}
