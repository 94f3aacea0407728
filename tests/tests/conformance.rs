//! One conformance suite, `rk_driver::testing::Suite`, run against every
//! driver of the workspace, the Python example a third party would start
//! from, and a driver broken on purpose (which must fail it). Each driver
//! runs as the unprivileged test user with namespaces that user owns, as
//! under rootlesskit, against the real programs it drives.

use rk_driver::testing::{RunAs, Suite};
use rk_driver::ConfigureRequest;
use rk_tests::*;
use std::path::{Path, PathBuf};

/// The test user when the tests run as root, else the caller.
fn run_as() -> Option<RunAs> {
    if !is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&TEST_USER))
        .unwrap_or_else(|| panic!("no user {TEST_USER}: run .ci/setup-host as root first"));
    Some(RunAs {
        uid: fields[2].parse().unwrap(),
        gid: fields[3].parse().unwrap(),
    })
}

/// The suite for the workspace's driver `rk-NAME` (a copy the test user
/// can run).
fn suite(name: &str) -> Suite {
    let path = bin_dir().join(format!("rk-{name}"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    let mut s = Suite::new(path);
    s.run_as = run_as();
    s.env = vec![("HOME".into(), "/tmp".into())];
    s
}

/// The suite for a script driver from `examples/drivers` or
/// `tests/fixtures/drivers`, copied where the test user can run it.
fn script_suite(dir: &str, name: &str) -> Suite {
    let file = format!("rk-{name}");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(&file);
    let copy = copy_for_test_user(&source, &file);
    let mut s = Suite::new(copy);
    s.run_as = run_as();
    s
}

fn copy_for_test_user(source: &Path, as_name: &str) -> PathBuf {
    let dir = user_temp_dir("conformance");
    let copy = dir.join(as_name);
    std::fs::copy(source, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
    chmod(&copy, 0o755);
    chmod(&dir, 0o755);
    copy
}

#[test]
fn rk_slirp4netns_conforms() {
    suite("slirp4netns").assert_conformant();
}

#[test]
fn rk_pasta_conforms() {
    suite("pasta").assert_conformant();
}

#[test]
fn rk_gvtap_conforms() {
    suite("gvtap").assert_conformant();
}

#[test]
fn rk_vpnkit_conforms_with_gvproxy_as_vpnkit() {
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vpnkit-shim/vpnkit");
    let shim = copy_for_test_user(&shim, "vpnkit");
    let mut s = suite("vpnkit");
    s.env.push((
        "PATH".into(),
        format!("{}:/usr/bin:/bin", shim.parent().unwrap().display()),
    ));
    s.assert_conformant();
}

#[test]
fn rk_lxc_user_nic_conforms_on_lxcbr0() {
    let mut s = suite("lxc-user-nic");
    s.request = ConfigureRequest {
        options: [("lxc-user-nic-bridge".to_owned(), "lxcbr0".to_owned())].into(),
        ..Default::default()
    };
    s.assert_conformant();
}

#[test]
fn the_python_example_driver_conforms() {
    script_suite("../examples/drivers", "pyslirp").assert_conformant();
}

#[test]
fn a_driver_that_breaks_the_protocol_fails_the_suite() {
    // rk-wrongname calls itself "rightname" in its hello.
    let s = script_suite("fixtures/drivers", "wrongname");
    let results = s.run();
    let hello = results
        .iter()
        .find(|(name, _)| name.starts_with("hello, then shutdown"))
        .unwrap();
    let violation = hello.1.as_ref().unwrap_err();
    assert!(
        violation.0.contains(r#"calls itself "rightname""#) && violation.0.contains("rk-wrongname"),
        "{violation}"
    );
    let outcome = std::panic::catch_unwind(|| s.assert_conformant());
    assert!(
        outcome.is_err(),
        "the suite passed a driver with the wrong name"
    );
    // rk-noiface answers an interface the namespace does not have.
    let noiface = script_suite("fixtures/drivers", "noiface").configure_then_shutdown();
    assert!(
        noiface.as_ref().is_err_and(|v| v.0.contains("MUST exist")),
        "{noiface:?}"
    );
    // rk-garbage answers the hello with bytes that are not JSON.
    let garbage = script_suite("fixtures/drivers", "garbage").hello_then_shutdown();
    assert!(
        garbage.as_ref().is_err_and(|v| v.0.contains("malformed")),
        "{garbage:?}"
    );
}
