//! rk-slirp4netns driven over its protocol socket by a minimal core, with
//! the real slirp4netns.

mod support;

use rk_driver::DriverMessage;
use std::time::Duration;
use support::*;

const EXIT_WAIT: Duration = Duration::from_secs(3);

#[test]
fn configures_tap0_and_exits_with_slirp4netns_when_the_core_hangs_up() {
    let ns = Namespaces::new(None);
    let mut driver = DriverProcess::start(None);
    let config = driver.configured(request(), &ns.userns, &ns.netns);

    assert_eq!(config.interface, "tap0");
    assert_eq!(config.ipv4, Some("10.0.2.100/24".parse().unwrap()));
    assert_eq!(config.gateway4, Some("10.0.2.2".parse().unwrap()));
    assert_eq!(dns_strings(&config), ["10.0.2.3"]);
    assert_eq!(config.mtu, 65520);
    assert_eq!(config.ipv6, None);
    assert!(!config.configured_by_driver);
    assert!(!config.dynamic);
    assert_eq!(config.info["slirp4netns.version"], "1.2.0");
    assert_eq!(config.info["slirp4netns.sandbox"], "true");
    assert_eq!(config.info["slirp4netns.seccomp"], "true");
    assert!(interfaces(ns.pid()).contains(&"tap0".to_owned()));

    let slirp = driver.slirp4netns();
    assert!(slirp.alive());
    assert_eq!(slirp.status_field("Seccomp").as_deref(), Some("2"));
    assert_reaches_host_loopback(None, ns.pid(), &config);

    driver.hang_up();
    let status = driver.wait_exit(EXIT_WAIT).expect("driver exits on EOF");
    assert!(status.success(), "{status}");
    assert!(
        slirp.gone_within(EXIT_WAIT),
        "slirp4netns outlived the driver"
    );
}

#[test]
fn unprivileged_driver_runs_slirp4netns_in_its_sandbox() {
    // slirp4netns on its own fails here ("setegid(0)", slirp4netns#317);
    // the driver enters the user namespace for it.
    let owner = unprivileged();
    let ns = Namespaces::new(owner);
    let driver = DriverProcess::start(owner);
    let config = driver.configured(
        with_options(request(), &[("slirp4netns-sandbox", "true")]),
        &ns.userns,
        &ns.netns,
    );
    let slirp = driver.slirp4netns();
    assert!(slirp.args().contains(&"--enable-sandbox".to_owned()));
    // The sandbox's root holds only /etc and /run.
    let root: Vec<String> = std::fs::read_dir(format!("/proc/{}/root", slirp.0))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!root.contains(&"usr".to_owned()), "sandbox root: {root:?}");
    assert_reaches_host_loopback(owner, ns.pid(), &config);
}

#[test]
fn options_reach_the_slirp4netns_command_line() {
    let ns = Namespaces::new(None);
    let mut request = with_options(
        request(),
        &[
            ("slirp4netns-sandbox", "false"),
            ("slirp4netns-seccomp", "false"),
        ],
    );
    request.cidr = Some("10.8.0.0/16".parse().unwrap());
    request.mtu = Some(1500);
    request.ipv6 = true;
    request.disable_host_loopback = true;
    request.ifname = Some("eth0".into());
    let driver = DriverProcess::start(None);
    let config = driver.configured(request, &ns.userns, &ns.netns);

    assert_eq!(config.interface, "eth0");
    assert_eq!(config.ipv4, Some("10.8.0.100/16".parse().unwrap()));
    assert_eq!(config.gateway4, Some("10.8.0.2".parse().unwrap()));
    assert_eq!(config.ipv6, Some("fd00::100/64".parse().unwrap()));
    assert_eq!(config.gateway6, Some("fd00::2".parse().unwrap()));
    assert_eq!(dns_strings(&config), ["10.8.0.3", "fd00::3"]);
    assert_eq!(config.mtu, 1500);
    assert_eq!(config.info["slirp4netns.sandbox"], "false");
    assert!(interfaces(ns.pid()).contains(&"eth0".to_owned()));

    let args = driver.slirp4netns().args();
    for expected in [
        "--cidr=10.8.0.0/16",
        "--mtu=1500",
        "--enable-ipv6",
        "--disable-host-loopback",
        "--netns-type=path",
    ] {
        assert!(
            args.contains(&expected.to_owned()),
            "{expected} in {args:?}"
        );
    }
    assert!(args
        .iter()
        .any(|a| a.starts_with("--userns-path=/proc/self/fd/")));
    assert!(!args.contains(&"--enable-sandbox".to_owned()), "{args:?}");
    assert!(!args.contains(&"--enable-seccomp".to_owned()), "{args:?}");
}

#[test]
fn sandbox_works_unprivileged_with_a_detached_network_namespace() {
    // RootlessKit refuses this combination because of slirp4netns#317.
    let owner = unprivileged();
    let ns = Namespaces::new(owner);
    let detached = ns.detached_netns();
    let mut request = with_options(request(), &[("slirp4netns-sandbox", "true")]);
    request.detach_netns = true;
    let driver = DriverProcess::start(owner);
    let config = driver.configured(request, &ns.userns, &detached.netns);
    assert_eq!(config.info["slirp4netns.sandbox"], "true");
    assert!(interfaces(detached.pid()).contains(&"tap0".to_owned()));
    assert!(!interfaces(ns.pid()).contains(&"tap0".to_owned()));
    assert_reaches_host_loopback(owner, detached.pid(), &config);
}

#[test]
fn a_killed_driver_takes_slirp4netns_with_it() {
    let ns = Namespaces::new(None);
    let mut driver = DriverProcess::start(None);
    driver.configured(request(), &ns.userns, &ns.netns);
    let slirp = driver.slirp4netns();
    driver.kill();
    assert!(
        slirp.gone_within(EXIT_WAIT),
        "slirp4netns outlived a killed driver"
    );
}

#[test]
fn slirp4netns_dying_is_reported_to_the_core() {
    let ns = Namespaces::new(None);
    let mut driver = DriverProcess::start(None);
    driver.configured(request(), &ns.userns, &ns.netns);
    driver.slirp4netns().kill();
    match driver.recv(Duration::from_secs(5)) {
        DriverMessage::Error { message } => assert!(
            message.starts_with("slirp4netns (pid ")
                && message.contains(") exited unexpectedly (signal: 9"),
            "{message}"
        ),
        other => panic!("expected an error, got {other:?}"),
    }
    let status = driver.wait_exit(EXIT_WAIT).expect("driver exits");
    assert!(!status.success());
}

#[test]
fn missing_binary_is_a_clear_error_and_starts_nothing() {
    let ns = Namespaces::new(None);
    let mut driver = DriverProcess::start(None);
    let message = driver.refused(
        with_options(
            request(),
            &[("slirp4netns-binary", "rk-no-such-slirp4netns")],
        ),
        &ns.userns,
        &ns.netns,
    );
    assert_eq!(
        message,
        "slirp4netns not found (looked for \"rk-no-such-slirp4netns\" in the absolute \
         directories of $PATH): install slirp4netns ≥ 0.4 or pass --slirp4netns-binary=PATH"
    );
    assert!(driver.wait_exit(EXIT_WAIT).is_some(), "driver lingers");
    assert!(interfaces(ns.pid()).iter().all(|i| i != "tap0"));
}

#[test]
fn bogus_sandbox_value_is_rejected() {
    let ns = Namespaces::new(None);
    let mut driver = DriverProcess::start(None);
    let message = driver.refused(
        with_options(request(), &[("slirp4netns-sandbox", "bogus")]),
        &ns.userns,
        &ns.netns,
    );
    assert_eq!(
        message,
        "--slirp4netns-sandbox=\"bogus\" is not valid: use auto, true or false"
    );
    assert!(driver.wait_exit(EXIT_WAIT).is_some(), "driver lingers");
}

#[test]
fn slirp4netns_failing_at_start_is_reported_with_its_error_output() {
    let ns = Namespaces::new(None);
    let mut driver = DriverProcess::start(None);
    let socket = format!("/nonexistent-rk-s4-{}/api.sock", std::process::id());
    let message = driver.refused(
        with_options(request(), &[("slirp4netns-api-socket", &socket)]),
        &ns.userns,
        &ns.netns,
    );
    assert!(
        message.contains("exited before the network was up (exit status: 1):"),
        "{message}"
    );
    assert!(message.contains("No such file or directory"), "{message}");
    assert!(driver.wait_exit(EXIT_WAIT).is_some(), "driver lingers");
}

#[test]
fn output_stays_quiet_unless_debug_is_on() {
    for debug in [false, true] {
        let ns = Namespaces::new(None);
        let mut driver = DriverProcess::start_with(None, debug);
        driver.configured(request(), &ns.userns, &ns.netns);
        driver.hang_up();
        assert!(driver.wait_exit(EXIT_WAIT).is_some_and(|s| s.success()));
        let stderr = driver.stderr();
        if debug {
            assert!(
                stderr.contains("rk-slirp4netns: debug: running"),
                "{stderr}"
            );
            // slirp4netns's own stderr reaches the log too (it is killed at
            // shutdown, so its buffered stdout may not).
            assert!(stderr.contains("slirp4netns: sent tapfd"), "{stderr}");
        } else {
            assert_eq!(stderr, "");
        }
    }
}
