//! The core without a network driver: namespaces, id maps, exit codes,
//! signals, reaping, state dir, copy-up, and bad input.

use rk_tests::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn host_net_gives_root_with_full_subordinate_range() {
    let out = expect_success(&run_sh(
        &["--net=host"],
        "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; \
         echo state=$ROOTLESSKIT_STATE_DIR euid=$ROOTLESSKIT_PARENT_EUID egid=$ROOTLESSKIT_PARENT_EGID",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(lines[1], "0", "{out}");
    let uid_map: Vec<Vec<&str>> = lines[2..4]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(uid_map[0][0], "0");
    assert_eq!(uid_map[0][2], "1");
    assert_eq!((uid_map[1][0], uid_map[1][2]), ("1", "65536"), "{out}");
    let test_uid = if is_root() {
        user_id(TEST_USER)
    } else {
        unsafe { libc::geteuid() }
    };
    assert_eq!(uid_map[0][1], test_uid.to_string(), "{out}");
    assert!(out.contains(&format!("euid={test_uid}")), "{out}");
    assert!(out.contains("state=/"), "{out}");
}

fn user_id(name: &str) -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn host_net_keeps_the_host_network_namespace() {
    let host = std::fs::read_link("/proc/1/ns/net").ok();
    let out = expect_success(&run_sh(
        &[],
        "readlink /proc/self/ns/net; readlink /proc/self/ns/user",
    ));
    let mut lines = out.lines();
    let net = lines.next().unwrap();
    if let Some(h) = host {
        assert_eq!(
            net,
            h.to_string_lossy(),
            "--net=host must stay in the host netns"
        );
    }
    let user = lines.next().unwrap();
    assert_ne!(
        user,
        std::fs::read_link("/proc/self/ns/user")
            .unwrap()
            .to_string_lossy()
    );
}

#[test]
fn net_none_has_only_loopback_and_it_is_up() {
    let out = expect_success(&run_sh(&["--net=none"], "ip -o link show"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].contains(": lo:") && lines[0].contains(",UP"),
        "lo is not up: {out}"
    );
}

#[test]
fn exit_status_of_command_is_returned() {
    assert_eq!(run_sh(&[], "exit 0").status.code(), Some(0));
    assert_eq!(run_sh(&[], "exit 42").status.code(), Some(42));
    assert_eq!(
        run_sh(&["--net=none", "--pidns"], "exit 3").status.code(),
        Some(3)
    );
}

#[test]
fn command_killed_by_signal_gives_255_and_names_it() {
    let out = run_sh(&[], "kill -KILL $$");
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("signal: killed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("SIGKILL"), "{}", stderr(&out));
}

#[test]
fn missing_command_is_a_clear_error() {
    let out = rootlesskit(&["--", "/nonexistent/cmd"]).output().unwrap();
    expect_failure(&out, "not found");
    let out = rootlesskit(&[]).output().unwrap();
    expect_failure(&out, "no command specified");
}

#[test]
fn signals_sent_to_rootlesskit_reach_the_command() {
    for sig in ["TERM", "USR1", "HUP"] {
        let mut child = rootlesskit(&[
            "--",
            "sh",
            "-c",
            &format!(
                "trap 'echo got {sig}; exit 7' {sig}; echo ready; while :; do sleep 0.05; done"
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        wait_for_output(&mut stdout, "ready");
        let pid = rootlesskit_pid_of(child.id());
        assert_eq!(
            std::process::Command::new("kill")
                .args([&format!("-{sig}"), &pid.to_string()])
                .status()
                .unwrap()
                .code(),
            Some(0)
        );
        let status = child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        assert_eq!(status.code(), Some(7), "SIG{sig}: {rest}");
        assert!(rest.contains(&format!("got {sig}")), "SIG{sig}: {rest}");
    }
}

/// The rootlesskit parent: `setpriv` execs into it, so it is the same pid.
fn rootlesskit_pid_of(spawned: u32) -> u32 {
    let exe = std::fs::read_link(format!("/proc/{spawned}/exe")).unwrap();
    assert!(exe.to_string_lossy().contains("rootlesskit"), "{exe:?}");
    spawned
}

fn wait_for_output(r: &mut impl std::io::Read, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&got).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {:?}",
            String::from_utf8_lossy(&got)
        );
        let n = r.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "EOF before {needle:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn orphans_are_reaped_without_pidns() {
    // An orphan's parent becomes rootlesskit's child (a subreaper): it must
    // not stay a zombie. RootlessKit leaves these as zombies.
    let out = expect_success(&run_sh(
        &[],
        "sh -c 'sleep 0.2 & exit 0'; sleep 1; \
         for f in /proc/[0-9]*/stat; do cat $f 2>/dev/null; echo; done | \
         awk -v p=$PPID '$3 == \"Z\" && $4 == p' | wc -l; \
         cat /proc/$PPID/status | grep -i '^Name'",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "zombies left under the child: {out}");
}

#[test]
fn pidns_makes_the_child_init_and_mounts_proc() {
    let out = expect_success(&run_sh(
        &["--pidns"],
        "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2", "CMD should be pid 2 under the child: {out}");
    assert!(lines[1].contains("rootlesskit"), "{out}");
    let n: u32 = lines[2].trim().parse().unwrap();
    assert!(n < 10, "/proc shows host processes: {out}");
}

#[test]
fn uts_ipc_cgroup_namespaces_are_new_when_asked() {
    let me = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let out = expect_success(&run_sh(
        &["--utsns", "--ipcns", "--cgroupns"],
        "readlink /proc/self/ns/uts /proc/self/ns/ipc /proc/self/ns/cgroup; hostname inside-uts && hostname",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], me("uts"));
    assert_ne!(lines[1], me("ipc"));
    assert_ne!(lines[2], me("cgroup"));
    assert_eq!(lines[3], "inside-uts");
}

#[test]
fn copy_up_makes_etc_writable_without_touching_the_host() {
    let name = marker("copyup");
    let out = expect_success(&run_sh(
        &["--copy-up=/etc"],
        &format!("echo hello > /etc/{name} && cat /etc/{name}; readlink /etc/passwd; grep -c root /etc/passwd"),
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hello");
    assert!(
        lines[1].contains(".ro"),
        "entries should link into the original: {out}"
    );
    assert_ne!(lines[2], "0");
    assert!(
        !std::path::Path::new(&format!("/etc/{name}")).exists(),
        "copy-up leaked to the host"
    );
}

#[test]
fn propagation_is_applied() {
    // Under a shared root (as on systemd hosts), rslave keeps a master and
    // rprivate cuts it.
    let show = ["--", "grep", " / / ", "/proc/self/mountinfo"];
    let rslave = rootlesskit(&[&["--propagation=rslave"][..], &show].concat());
    let out = expect_success(&in_root_mount_ns("shared", "", &rslave).output().unwrap());
    assert!(
        out.contains("master:"),
        "rslave root mount should have a master: {out}"
    );
    let rprivate = rootlesskit(&[&["--propagation=rprivate"][..], &show].concat());
    let out = expect_success(&in_root_mount_ns("shared", "", &rprivate).output().unwrap());
    assert!(
        !out.contains("master:") && !out.contains("shared:"),
        "{out}"
    );
}

#[test]
fn explicit_state_dir_has_child_pid_and_lock_and_is_cleaned() {
    let dir = user_temp_dir("state");
    let sd = dir.join("sd");
    let arg = format!("--state-dir={}", sd.display());
    let out = expect_success(&run_sh(
        &[&arg],
        "cat $ROOTLESSKIT_STATE_DIR/child_pid; echo; ls $ROOTLESSKIT_STATE_DIR; echo $$",
    ));
    let lines: Vec<&str> = out.lines().collect();
    // Without --pidns CMD takes the child's place, so child_pid is CMD.
    assert_eq!(
        lines[0],
        lines.last().unwrap().trim(),
        "child_pid must be CMD: {out}"
    );
    assert!(out.contains("lock"), "{out}");
    assert!(!sd.join("child_pid").exists(), "child_pid left after exit");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn default_state_dir_is_private_and_removed() {
    let out = expect_success(&run_sh(
        &[],
        "echo $ROOTLESSKIT_STATE_DIR; stat -c %a $ROOTLESSKIT_STATE_DIR",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "700", "{out}");
    assert!(
        !std::path::Path::new(lines[0]).exists(),
        "{} left behind",
        lines[0]
    );
}

#[test]
fn second_run_on_a_busy_state_dir_is_refused_and_stale_dir_after_kill9_is_reused() {
    let dir = user_temp_dir("busy");
    let arg = format!("--state-dir={}", dir.join("sd").display());
    let mark = marker("busy");
    let mut first = rootlesskit(&[
        &arg,
        "--",
        "sh",
        "-c",
        &format!("echo ready; sleep 30 # {mark}"),
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_output(first.stdout.as_mut().unwrap(), "ready");
    let out = run_sh(&[&arg], "true");
    expect_failure(&out, "in use");
    // kill -9 the parent: everything goes, and the stale dir is usable.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    first.wait().unwrap();
    let left = wait_until_gone(&mark, 3);
    assert!(left.is_empty(), "left behind after kill -9: {left:?}");
    let out = run_sh(&[&arg], "echo again");
    assert_eq!(expect_success(&out).trim(), "again");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_flags_fail_before_anything_starts() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--net=nosuchdriver"],
            "unknown network driver \"nosuchdriver\"",
        ),
        (&["--net=slirp4netns", "--mtu=abc"], "not a number"),
        (&["--net=slirp4netns", "--mtu=10"], "too small"),
        (&["--net=slirp4netns", "--mtu=70000"], "too large"),
        (
            &["--net=slirp4netns", "--cidr=10.0.2.100/24"],
            "network address",
        ),
        (
            &["--net=slirp4netns", "--cidr=nonsense"],
            "not an IPv4 network",
        ),
        (
            &["--net=slirp4netns", "--ifname=waytoolonginterfacename"],
            "at most 15",
        ),
        (
            &["--net=host", "--cidr=10.0.3.0/24"],
            "--cidr is not supported for --net=host",
        ),
        (
            &["--net=host", "--detach-netns"],
            "--detach-netns needs a network namespace",
        ),
        (&["--reaper=true"], "--reaper=true requires --pidns"),
        (&["--propagation=bogus"], "--propagation"),
        (&["--subid-source=bogus"], "--subid-source"),
        (
            &["--net=slirp4netns", "--slirp4netns-sandbox=maybe"],
            "--slirp4netns-sandbox",
        ),
        (
            &["--net=slirp4netns", "--port-driver=implicit"],
            "--port-driver=implicit is not one of none, builtin, slirp4netns",
        ),
        (
            &["--net=lxc-user-nic", "--cidr=10.0.3.0/24"],
            "network driver lxc-user-nic does not support --cidr",
        ),
        (&["-p", "127.0.0.1:8080:80/tcp"], "needs a port driver"),
        (&["--copy-up=relative"], "absolute"),
    ];
    for (args, needle) in cases {
        let mark = marker("bad");
        let mut all = args.to_vec();
        all.extend(["--", "sh", "-c", &mark]);
        let out = rootlesskit(&all).output().unwrap();
        expect_failure(&out, needle);
        assert!(
            processes_matching(&mark).is_empty(),
            "{args:?} left a process"
        );
    }
}

#[test]
fn unknown_driver_error_lists_the_drivers_found() {
    let out = run_sh(&["--net=nosuchdriver"], "true");
    expect_failure(&out, "Drivers found:");
    assert!(stderr(&out).contains("slirp4netns ("), "{}", stderr(&out));
}

#[test]
fn missing_newuidmap_is_a_clear_error() {
    let out = rootlesskit_with_env(&["--", "true"], &[("PATH", "/nonexistent")])
        .output()
        .unwrap();
    expect_failure(&out, "newuidmap not found");
    expect_failure(&out, "uidmap");
}

#[test]
fn user_without_subordinate_ids_gets_the_fix_named() {
    if !is_root() {
        panic!("this test needs root to run as the user {NOSUB_USER} (made by .ci/setup-host)");
    }
    let prog = bin_dir().join("rootlesskit");
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={NOSUB_USER}"),
            &format!("--regid={NOSUB_USER}"),
            "--init-groups",
            prog.to_str().unwrap(),
            "--subid-source=static",
            "true",
        ])
        .output()
        .unwrap();
    expect_failure(&out, "no subordinate uid range");
    expect_failure(&out, "usermod --add-subuids");
}

const NOSUB_USER: &str = "rk-nosubid";

#[test]
fn list_drivers_shows_built_drivers_with_versions() {
    let out = rootlesskit(&["--list-drivers"]).output().unwrap();
    let text = expect_success(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("slirp4netns "))
        .unwrap_or_else(|| panic!("no slirp4netns in:\n{text}"));
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
}

#[test]
fn print_semver_and_version() {
    let out = rootlesskit(&["--print-semver=major"]).output().unwrap();
    assert_eq!(
        expect_success(&out).trim(),
        env!("CARGO_PKG_VERSION").split('.').next().unwrap()
    );
    let out = rootlesskit(&["--version"]).output().unwrap();
    assert!(expect_success(&out).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn command_starts_with_an_empty_signal_mask() {
    for extra in [&[][..], &["--pidns"][..], &["--net=slirp4netns"][..]] {
        let out = expect_success(&run_sh(extra, "grep -E '^Sig(Blk|Ign)' /proc/self/status"));
        assert!(
            out.contains("SigBlk:\t0000000000000000"),
            "{extra:?}: {out}"
        );
    }
}
