//! Drop-in behaviour that real clients depend on (dockerd-rootless.sh,
//! RootlessKit's own integration scripts, systemd): repeated flags, exit
//! status on a signal, files in detached mode, --evacuate-cgroup2, socket
//! activation, command-line manners, and the lifetime of what rootlesskit
//! starts.

use rk_tests::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_flag_given_twice_takes_the_last_value() {
    // dockerd-rootless.sh appends $DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS after
    // its own flags to override them.
    let out = expect_success(&run_sh(
        &[
            "--net=slirp4netns",
            "--mtu=1400",
            "--disable-host-loopback",
            "--port-driver=none",
            "--mtu=1500",
            "--disable-host-loopback",
            "--port-driver=builtin",
        ],
        "cat /sys/class/net/tap0/mtu; echo pd=$(cat $ROOTLESSKIT_STATE_DIR/api.sock >/dev/null 2>&1; echo x)",
    ));
    assert_eq!(out.lines().next(), Some("1500"), "{out}");
    // Lists still accumulate.
    let out = expect_success(&run_sh(
        &["--copy-up=/etc", "--copy-up=/var"],
        "touch /etc/rk-copyup-probe /var/rk-copyup-probe && echo both",
    ));
    assert!(out.contains("both"), "{out}");
}

#[test]
fn an_unknown_flag_is_an_error_with_status_1_naming_it() {
    let out = rootlesskit(&["--copyup=/etc", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--copyup"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn version_flags_print_rootlesskits_line_and_each_driver() {
    for flag in ["-v", "--version"] {
        let out = rootlesskit(&[flag]).output().unwrap();
        let text = expect_success(&out);
        assert!(text.starts_with("rootlesskit version "), "{flag}: {text}");
        assert!(text.contains("commit "), "{flag}: {text}");
        assert!(text.contains("slirp4netns"), "{flag}: {text}");
        assert!(text.contains("gvisor-tap-vsock"), "{flag}: {text}");
    }
}

#[test]
fn list_drivers_survives_a_closed_stdout() {
    let bin = bin_dir().join("rootlesskit");
    for flag in ["--list-drivers", "--version"] {
        let out = as_test_user("sh")
            .args([
                "-c",
                &format!("{} {flag} | head -c 1 >/dev/null", bin.display()),
            ])
            .output()
            .unwrap();
        // `head` exits first; rootlesskit must not panic (status 134).
        assert!(
            !stderr(&out).contains("panicked"),
            "{flag}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn list_drivers_fails_when_a_driver_fails_its_handshake() {
    let dir = user_temp_dir("brokendrv");
    let drv = dir.join("rk-broken");
    std::fs::write(&drv, "#!/bin/sh\necho not a driver\nexit 3\n").unwrap();
    chmod(&drv, 0o755);
    let out = rootlesskit_with_env(
        &["--list-drivers"],
        &[("ROOTLESSKIT_DRIVER_PATH", dir.to_str().unwrap())],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("broken"), "{}", stdout(&out));
    assert!(stdout(&out).contains("error:"), "{}", stdout(&out));
}

#[test]
fn messages_use_the_name_the_user_typed() {
    let dir = user_temp_dir("nodrv");
    // Only the empty directory and system dirs: rk-gvtap is not found.
    let bin = dir.join("rootlesskit");
    link_or_copy(&bin_dir().join("rootlesskit"), &bin);
    chmod(&bin, 0o755);
    let out = as_test_user(bin.to_str().unwrap())
        .args(["--net=gvisor-tap-vsock", "true"])
        .output()
        .unwrap();
    expect_failure(&out, "\"gvisor-tap-vsock\"");
    assert!(
        stderr(&out).contains("rootlesskit-rs-gvisor-tap-vsock"),
        "the message names the package to install: {}",
        stderr(&out)
    );
}

#[test]
fn empty_values_mean_unset_or_are_refused_as_rootlesskit_does() {
    expect_failure(
        &rootlesskit(&["--net=", "true"]).output().unwrap(),
        "unknown network mode",
    );
    expect_failure(
        &rootlesskit(&["--port-driver=", "true"]).output().unwrap(),
        "--port-driver= is empty",
    );
    // Empty --cidr, --ifname, --evacuate-cgroup2 and --slirp4netns-* are
    // RootlessKit's defaults.
    expect_success(&run_sh(
        &[
            "--net=slirp4netns",
            "--disable-host-loopback",
            "--cidr=",
            "--ifname=",
            "--evacuate-cgroup2=",
            "--slirp4netns-sandbox=",
            "--slirp4netns-seccomp=",
        ],
        "ip -4 addr show tap0 | grep -q 10.0.2.100",
    ));
}

#[test]
fn a_command_killed_by_a_signal_gives_255_and_gos_wording() {
    for pidns in ["--pidns=false", "--pidns=true"] {
        let out = run_sh(&[pidns], "kill -USR1 $$");
        assert_eq!(out.status.code(), Some(255), "{pidns}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("user defined signal 1"),
            "{pidns}: {}",
            stderr(&out)
        );
    }
    // As RootlessKit's integration-exit-code.sh does it: the signal comes
    // from outside, to the pid in child_pid.
    // Under /tmp itself: a state dir's parent must not be writable by others
    // unless it is sticky.
    let state = std::env::temp_dir().join(format!("rk-t-sig-state-{}", std::process::id()));
    let child = rootlesskit(&[&format!("--state-dir={}", state.display()), "sleep", "100"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = state.join("child_pid");
    assert!(
        poll_until(Duration::from_secs(10), || pid_file.exists()),
        "no child_pid"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with a pid read from the state dir.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("user defined signal 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn detach_netns_leaves_etc_alone_and_writes_the_state_dirs_files() {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for net in ["slirp4netns", "gvisor-tap-vsock"] {
        let out = expect_success(&run_sh(
            &[
                &format!("--net={net}"),
                "--detach-netns",
                "--disable-host-loopback",
                "--copy-up=/etc",
            ],
            "cat /etc/resolv.conf; echo @@; cat $ROOTLESSKIT_STATE_DIR/resolv.conf; echo @@; \
             cat $ROOTLESSKIT_STATE_DIR/hosts; echo @@; grep -c . /etc/hosts",
        ));
        let parts: Vec<&str> = out.split("@@\n").collect();
        assert_eq!(parts.len(), 4, "{out}");
        assert_eq!(
            parts[0], host_resolv,
            "{net}: CMD keeps the host's network, so it keeps the host's resolv.conf"
        );
        assert!(
            parts[1].starts_with("nameserver 10.0.2."),
            "{net}: the driver's view goes to $STATE_DIR/resolv.conf: {out}"
        );
        assert!(parts[2].contains("127.0.0.1 "), "{net}: {out}");
    }
    // Without --detach-netns the driver's resolver is installed.
    let out = expect_success(&run_sh(
        &[
            "--net=slirp4netns",
            "--disable-host-loopback",
            "--copy-up=/etc",
        ],
        "cat /etc/resolv.conf; cat $ROOTLESSKIT_STATE_DIR/resolv.conf",
    ));
    assert_eq!(out, "nameserver 10.0.2.3\nnameserver 10.0.2.3\n");
}

/// A cgroup2 group delegated to the test user, made as root, holding the
/// shell that runs rootlesskit. None where cgroup2 is not mounted.
fn delegated_cgroup2(tag: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let group = mount.join(format!("rk-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&group).ok()?;
    let st = Command::new("chown")
        .args(["-R", &format!("{TEST_USER}:{TEST_USER}"), group.to_str()?])
        .status()
        .ok()?;
    st.success().then_some(group)
}

#[test]
fn evacuate_cgroup2_moves_the_processes_into_the_named_group() {
    expect_failure(
        &rootlesskit(&["--evacuate-cgroup2=ev", "true"])
            .output()
            .unwrap(),
        "requires --cgroupns",
    );
    expect_failure(
        &rootlesskit(&["--cgroupns", "--evacuate-cgroup2=ev", "true"])
            .output()
            .unwrap(),
        "requires --pidns",
    );
    expect_failure(
        &rootlesskit(&["--cgroupns", "--pidns", "--evacuate-cgroup2=a/b", "true"])
            .output()
            .unwrap(),
        "no '/'",
    );
    assert!(
        is_root(),
        "this test delegates a cgroup2 group, which needs root"
    );
    let group = delegated_cgroup2("evac").expect("cgroup2 is mounted on this machine");
    let bin = bin_dir().join("rootlesskit");
    // The shell moves itself into the delegated group (as root, before
    // dropping to the test user), then runs rootlesskit there.
    let script = format!(
        "echo $$ > {g}/cgroup.procs && exec setpriv --reuid={u} --regid={u} --init-groups \
         env HOME=/home/{u} {bin} --pidns --cgroupns --evacuate-cgroup2=evac cat /proc/self/cgroup",
        g = group.display(),
        u = TEST_USER,
        bin = bin.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    let text = expect_success(&out);
    assert!(group.join("evac").is_dir(), "the group was made");
    assert!(
        text.lines().any(|l| l == "0::/evac"),
        "CMD runs in the evacuation group: {text}"
    );
    let _ = std::fs::remove_dir(group.join("evac"));
    let _ = std::fs::remove_dir(&group);
}

#[test]
fn systemd_socket_activation_gives_cmd_the_sockets_and_its_own_listen_pid() {
    let dir = user_temp_dir("sdact");
    for (n, pidns) in ["--pidns=false", "--pidns=true"].into_iter().enumerate() {
        let sock = dir.join(format!("s{n}.sock"));
        let out_file = dir.join(format!("out-{pidns}"));
        let script = format!(
            "echo \"$LISTEN_FDS $LISTEN_PID $$ $(readlink /proc/self/fd/3)\" > {}",
            out_file.display()
        );
        let mut act = as_test_user("systemd-socket-activate")
            .args(["-l", sock.to_str().unwrap()])
            .arg(bin_dir().join("rootlesskit"))
            .args([pidns, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(
            poll_until(Duration::from_secs(10), || sock.exists()),
            "systemd-socket-activate did not listen"
        );
        // The first connection starts the command.
        let _ = std::os::unix::net::UnixStream::connect(&sock);
        assert!(
            poll_until(Duration::from_secs(20), || std::fs::read_to_string(
                &out_file
            )
            .is_ok_and(|s| s.ends_with('\n'))),
            "the command did not run"
        );
        terminate(&mut act);
        let line = std::fs::read_to_string(&out_file).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 4, "{pidns}: {line}");
        assert_eq!(f[0], "1", "{pidns}: LISTEN_FDS: {line}");
        assert_eq!(f[1], f[2], "{pidns}: LISTEN_PID must be CMD's pid: {line}");
        assert!(f[3].starts_with("socket:"), "{pidns}: fd 3: {line}");
    }
}

/// A driver that never answers: the shell script stays in the process
/// table under its own path until it is killed.
fn hanging_driver() -> PathBuf {
    let dir = user_temp_dir("hang");
    let drv = dir.join("rk-hang");
    std::fs::write(&drv, "#!/bin/sh\nwhile :; do sleep 1; done\n").unwrap();
    chmod(&drv, 0o755);
    dir
}

#[test]
fn a_signal_during_start_up_aborts_it_at_once_and_cleanly() {
    let dir = hanging_driver();
    // The driver's command line (not rootlesskit's, whose environment
    // names the directory until it execs).
    let needle = format!("sh {}/rk-hang", dir.display());
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let rk = rootlesskit_with_env(
            &["--net=hang", "true"],
            &[("ROOTLESSKIT_DRIVER_PATH", dir.to_str().unwrap())],
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        assert!(
            poll_until(Duration::from_secs(10), || !processes_matching(&needle)
                .is_empty()),
            "the driver did not start"
        );
        // setpriv execs rootlesskit, so the pid is rootlesskit's.
        let started = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(rk.id() as i32, sig) };
        let out = rk.wait_with_output().unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("start-up aborted by SIG"),
            "{}",
            stderr(&out)
        );
        assert!(took < Duration::from_secs(3), "took {took:?}");
        let left = processes_matching(&needle);
        assert!(left.is_empty(), "the driver outlived rootlesskit: {left:?}");
    }
}

/// Runs `rootlesskit ARGS true` as the test user as the first process of a
/// fresh PID namespace (made as root), then lists every process left in
/// that namespace: nothing rootlesskit started may be there, not even a
/// zombie, once it has returned.
fn leftovers_after(args: &[&str]) -> (String, Vec<String>) {
    let bin = bin_dir().join("rootlesskit");
    let script = format!(
        "setpriv --reuid={u} --regid={u} --init-groups env HOME=/home/{u} \
         PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin {bin} {args} true; \
         echo rc=$?; ps -eo pid=,stat=,args=",
        u = TEST_USER,
        bin = bin.display(),
        args = args.join(" ")
    );
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&out);
    let left = text
        .lines()
        .skip_while(|l| !l.starts_with("rc="))
        .skip(1)
        .filter(|l| !l.contains("ps -eo") && !l.contains("sh -c setpriv"))
        .map(str::to_owned)
        .collect();
    (format!("{text}\n{}", stderr(&out)), left)
}

#[test]
fn nothing_rootlesskit_started_remains_once_it_returns() {
    assert!(is_root(), "a fresh PID namespace needs root");
    for args in [
        vec!["--net=slirp4netns", "--disable-host-loopback"],
        vec!["--net=gvisor-tap-vsock", "--disable-host-loopback"],
        vec!["--net=pasta", "--disable-host-loopback"],
        vec!["--net=lxc-user-nic"],
        vec![
            "--net=slirp4netns",
            "--disable-host-loopback",
            "--port-driver=builtin",
        ],
    ] {
        let (out, left) = leftovers_after(&args);
        assert!(out.contains("rc=0"), "{args:?}: {out}");
        assert!(left.is_empty(), "{args:?} left {left:?}\n{out}");
    }
}

#[test]
fn the_driver_answer_is_checked_before_use() {
    // A driver that answers garbage for the nameserver: a Python driver
    // written from docs/driver-protocol.md is in tests/fixtures; here a
    // tiny one answers a nameserver with a newline in it.
    let dir = user_temp_dir("baddns");
    let drv = dir.join("rk-baddns");
    std::fs::write(&drv, BAD_DNS_DRIVER).unwrap();
    chmod(&drv, 0o755);
    let out = rootlesskit_with_env(
        &["--net=baddns", "--copy-up=/etc", "cat", "/etc/resolv.conf"],
        &[("ROOTLESSKIT_DRIVER_PATH", dir.to_str().unwrap())],
    )
    .output()
    .unwrap();
    expect_failure(
        &out,
        "network driver baddns: answered an invalid nameserver",
    );
    assert!(!stdout(&out).contains("ndots"), "{}", stdout(&out));
}

const BAD_DNS_DRIVER: &str = r#"#!/usr/bin/python3
import json, os, socket
s = socket.socket(fileno=int(os.environ["RK_DRIVER_FD"]))
def recv():
    data, fds, _, _ = socket.recv_fds(s, 65536, 8)
    return json.loads(data)
def send(m):
    s.send(json.dumps(m).encode())
recv()
send({"type": "hello", "protocol_version": 1, "driver": "baddns", "version": "0"})
recv()
send({"type": "configured", "interface": "lo", "mtu": 65536 - 15,
      "dns": ["10.0.2.3\noptions ndots:15"], "configured_by_driver": True})
try:
    recv()
except Exception:
    pass
"#;

/// Polls `cond` every 20 ms for up to `limit`; whether it became true.
fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn programs_are_never_run_from_the_current_directory() {
    let dir = user_temp_dir("cwdpath");
    let marker = dir.join("ran");
    for name in ["newuidmap", "newgidmap", "mycmd", "rk-evil"] {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho {name} >> {}\nexit 1\n", marker.display()),
        )
        .unwrap();
        chmod(&p, 0o755);
    }
    for path in [".:/usr/bin:/bin", ":/usr/bin:/bin", "/usr/bin::/bin"] {
        // CMD found only through the empty or relative entry is not found.
        let out = rootlesskit_with_env(&["mycmd"], &[("PATH", path)])
            .current_dir(&dir)
            .output()
            .unwrap();
        expect_failure(&out, "not found");
        // newuidmap comes from /usr/bin, not from here.
        let out = rootlesskit_with_env(&["true"], &[("PATH", path)])
            .current_dir(&dir)
            .output()
            .unwrap();
        expect_success(&out);
        // A relative driver path is skipped.
        let out = rootlesskit_with_env(
            &["--net=evil", "true"],
            &[("PATH", path), ("ROOTLESSKIT_DRIVER_PATH", ".")],
        )
        .current_dir(&dir)
        .output()
        .unwrap();
        expect_failure(&out, "unknown network driver \"evil\"");
    }
    assert!(
        !marker.exists(),
        "ran {:?}",
        std::fs::read_to_string(&marker)
    );
}
