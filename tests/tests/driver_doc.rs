//! What docs/driver-protocol.md promises about the core's side, end to end:
//! a driver's `info` reaches `rootlessctl info` and `GET /v1/info`, and a
//! driver whose hello names another driver than its file is warned about.

use rk_tests::*;
use std::path::Path;

#[test]
fn the_drivers_info_appears_in_rootlessctl_info_and_the_api() {
    let ctl = bin_dir().join("rootlessctl");
    let script = format!(
        "echo == plain; {ctl} --socket=$ROOTLESSKIT_STATE_DIR/api.sock info && \
         {ctl} --socket=$ROOTLESSKIT_STATE_DIR/api.sock info --json && \
         echo == driver-info; \
         {ctl} --socket=$ROOTLESSKIT_STATE_DIR/api.sock info --driver-info && \
         {ctl} --socket=$ROOTLESSKIT_STATE_DIR/api.sock info --json --driver-info",
        ctl = ctl.display()
    );
    let out = expect_success(&run_sh(&["--net=slirp4netns"], &script));
    let (plain, with_info) = out.split_once("== driver-info").unwrap();
    // rk-slirp4netns answers the version of slirp4netns it runs in `info`;
    // GET /v1/info carries it, rootlessctl shows it when asked and is
    // RootlessKit's rootlessctl, byte for byte, otherwise.
    assert!(
        with_info.contains("  - slirp4netns.version: "),
        "no info line in rootlessctl info --driver-info:\n{out}"
    );
    assert!(
        with_info.contains(r#""slirp4netns.version": ""#),
        "no info member in GET /v1/info:\n{out}"
    );
    assert!(!plain.contains("slirp4netns.version"), "{out}");
}

#[test]
fn a_hello_naming_another_driver_is_warned_about() {
    let dir = user_temp_dir("wrongname");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/drivers/rk-wrongname");
    std::fs::copy(&source, dir.join("rk-wrongname")).unwrap();
    chmod(&dir.join("rk-wrongname"), 0o755);
    chmod(&dir, 0o755);
    let out = rootlesskit_with_env(
        &["--list-drivers"],
        &[("ROOTLESSKIT_DRIVER_PATH", dir.to_str().unwrap())],
    )
    .output()
    .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains(r#"calls itself "rightname" in its hello, but was found as rk-wrongname"#),
        "{err}"
    );
}

#[test]
fn a_driver_that_fails_its_hello_is_reaped_before_rootlesskit_returns() {
    // rk-garbage answers the hello with bytes that are not JSON and then
    // sleeps: rootlesskit must kill and reap it, not leave it to its
    // parent-death signal and PID 1 (section 10: nothing of the driver
    // remains once rootlesskit has returned, not even a zombie).
    let dir = user_temp_dir("garbage-reaped");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/drivers/rk-garbage");
    std::fs::copy(&source, dir.join("rk-garbage")).unwrap();
    chmod(&dir.join("rk-garbage"), 0o755);
    chmod(&dir, 0o755);
    let pidfile = user_temp_dir("garbage-pid").join("pid");
    let out = rootlesskit_with_env(
        &["--list-drivers"],
        &[
            ("ROOTLESSKIT_DRIVER_PATH", dir.to_str().unwrap()),
            ("RK_GARBAGE_PIDFILE", pidfile.to_str().unwrap()),
        ],
    )
    .output()
    .unwrap();
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    // Alive or a zombie, /proc/PID/stat is there until it is reaped.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    if stat.is_some() {
        // SAFETY: kill with a pid and a signal number.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    assert!(
        stdout(&out).contains("answered garbage"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stat, None, "rk-garbage (pid {pid}) left behind");
}

#[test]
fn an_answered_interface_that_does_not_exist_fails_naming_the_driver() {
    let dir = user_temp_dir("noiface");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/drivers/rk-noiface");
    std::fs::copy(&source, dir.join("rk-noiface")).unwrap();
    chmod(&dir.join("rk-noiface"), 0o755);
    chmod(&dir, 0o755);
    let out = rootlesskit_with_env(
        &["--net=noiface", "true"],
        &[("ROOTLESSKIT_DRIVER_PATH", dir.to_str().unwrap())],
    )
    .output()
    .unwrap();
    expect_failure(
        &out,
        r#"network driver noiface: setting up what it answered: network interface "tap0" does not exist"#,
    );
}
