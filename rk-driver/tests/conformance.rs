//! The SDK's own conformance: a driver made with `rk_driver::serve` (the
//! example `rk-loopback`) passes `rk_driver::testing::Suite`, so what
//! `serve` does for a driver author (hello, descriptors, errors, EOF,
//! unknown messages, exit) follows docs/driver-protocol.md.

#![cfg(feature = "testing")]

use rk_driver::testing::Suite;
use std::path::PathBuf;

/// `target/<profile>/examples/rk-loopback`, built by `cargo test` with the
/// crate's examples.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join(name)
}

#[test]
fn a_driver_made_with_serve_conforms() {
    let path = example("rk-loopback");
    assert!(
        path.is_file(),
        "{} was not built: run `cargo test -p rk-driver --features testing` (it builds the examples) or `cargo build -p rk-driver --example rk-loopback` first",
        path.display()
    );
    Suite::new(path).assert_conformant();
}

#[test]
fn the_answer_is_checked_against_the_request() {
    let path = example("rk-loopback");
    if !path.is_file() {
        return; // reported by a_driver_made_with_serve_conforms
    }
    let mut s = Suite::new(path);
    s.request.mtu = Some(1500);
    s.configure_then_shutdown().unwrap();
    s.request.ifname = Some("eth0".into());
    let e = s.configure_then_shutdown().unwrap_err();
    assert!(e.0.contains(r#"the core asked for "eth0""#), "{e}");
}
