//! Every process of ours is confined while CMD runs: each task (thread) of
//! rootlesskit, of every driver and of every helper process of ours shows
//! `Seccomp: 2` and `NoNewPrivs: 1` in /proc/PID/task/TID/status. The
//! external programs (slirp4netns, pasta, lxc-user-nic, gvproxy) sandbox
//! themselves or not; they are not ours and not checked here. No process
//! of ours is an exception once set-up is over: rk-lxc-user-nic runs the
//! set-user-ID lxc-user-nic only while it configures (docs/security.md).

use rk_tests::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A process of ours: its executable is one of the binaries under test.
fn ours(pid: u32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let exe = exe
        .to_string_lossy()
        .trim_end_matches(" (deleted)")
        .to_owned();
    Path::new(&exe).starts_with(bin_dir()).then(|| {
        Path::new(&exe)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    })
}

/// (pid, binary, tid, Seccomp, NoNewPrivs) of every task of every process
/// of ours under `root` (rootlesskit itself included).
fn tasks_of_ours(root: u32) -> Vec<(u32, String, u32, u32, u32)> {
    let mut pids = vec![root];
    pids.extend(descendants(root).into_iter().map(|(p, _)| p));
    let mut out = Vec::new();
    for pid in pids {
        let Some(name) = ours(pid) else { continue };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let tid: u32 = t.file_name().to_string_lossy().parse().unwrap();
            let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
                continue;
            };
            let field = |k: &str| -> u32 {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(99)
            };
            out.push((
                pid,
                name.clone(),
                tid,
                field("Seccomp:"),
                field("NoNewPrivs:"),
            ));
        }
    }
    out
}

/// The gvproxy shim as `vpnkit` (see tests/vpnkit.rs), in a directory the
/// test user can read.
fn vpnkit_shim_dir() -> PathBuf {
    let dir = user_temp_dir("sandbox-vpnkit");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vpnkit-shim/vpnkit");
    std::fs::copy(&src, dir.join("vpnkit")).unwrap();
    chmod(&dir.join("vpnkit"), 0o755);
    dir
}

/// Starts rootlesskit with ARGS and a CMD that says ready and waits, reads
/// the table while CMD runs, then stops it.
fn table(args: &[&str], env: &[(&str, &str)]) -> Vec<(u32, String, u32, u32, u32)> {
    let mut all = args.to_vec();
    all.extend(["--", "sh", "-c", "echo ready; sleep 30"]);
    let mut rk = rootlesskit_with_env(&all, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(rk.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "{args:?} did not start");
    // Let set-up finish in every process (drivers confine themselves
    // right after answering configure).
    std::thread::sleep(Duration::from_millis(300));
    let rows = tasks_of_ours(rk.id());
    terminate(&mut rk);
    rows
}

/// Seccomp 2 (filter) and NoNewPrivs 1.
fn confined(r: &(u32, String, u32, u32, u32)) -> bool {
    r.3 == 2 && r.4 == 1
}

#[track_caller]
fn assert_confined(args: &[&str], env: &[(&str, &str)], exceptions: &[&str]) {
    let rows = table(args, env);
    assert!(
        rows.iter().any(|r| r.1 == "rootlesskit"),
        "{args:?}: rootlesskit itself not found: {rows:?}"
    );
    let bad: Vec<_> = rows
        .iter()
        .filter(|r| !confined(r) && !exceptions.contains(&r.1.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "{args:?}: tasks not confined (pid, binary, tid, Seccomp, NoNewPrivs): {bad:?}\nall: {rows:?}"
    );
}

#[test]
fn slirp4netns_with_each_port_driver_is_confined() {
    let base = ["--net=slirp4netns", "--disable-host-loopback"];
    for pd in ["none", "builtin", "slirp4netns"] {
        let mut args = base.to_vec();
        let flag = format!("--port-driver={pd}");
        args.push(&flag);
        assert_confined(&args, &[], &[]);
    }
}

#[test]
fn pasta_with_implicit_ports_is_confined() {
    assert_confined(
        &[
            "--net=pasta",
            "--disable-host-loopback",
            "--port-driver=implicit",
        ],
        &[],
        &[],
    );
}

#[test]
fn gvisor_tap_vsock_with_its_port_driver_is_confined() {
    assert_confined(
        &[
            "--net=gvisor-tap-vsock",
            "--disable-host-loopback",
            "--port-driver=gvisor-tap-vsock",
        ],
        &[],
        &[],
    );
    assert_confined(
        &["--net=gvisor-tap-vsock", "--port-driver=builtin"],
        &[],
        &[],
    );
}

#[test]
fn vpnkit_is_confined() {
    let shim = vpnkit_shim_dir();
    let path = format!("{}:/usr/bin:/bin", shim.display());
    assert_confined(&["--net=vpnkit"], &[("PATH", &path)], &[]);
}

#[test]
fn lxc_user_nic_driver_and_its_guard_are_confined() {
    // lxc-user-nic (set-user-ID) runs only during configure; afterwards the
    // driver, its renewal thread and its cleanup guard (which deletes the
    // veth over netlink, without lxc-user-nic) are all confined.
    for args in [
        &["--net=lxc-user-nic"][..],
        &["--net=lxc-user-nic", "--detach-netns"][..],
    ] {
        let rows = table(args, &[]);
        let pids: std::collections::BTreeSet<u32> = rows
            .iter()
            .filter(|r| r.1 == "rk-lxc-user-nic")
            .map(|r| r.0)
            .collect();
        assert!(
            pids.len() >= 2,
            "{args:?}: expected the driver and its guard: {rows:?}"
        );
        let threads = rows.iter().filter(|r| r.1 == "rk-lxc-user-nic").count();
        assert!(
            threads > pids.len(),
            "{args:?}: expected the driver's DHCP renewal thread: {rows:?}"
        );
        let bad: Vec<_> = rows.iter().filter(|r| !confined(r)).collect();
        assert!(
            bad.is_empty(),
            "{args:?}: tasks not confined (pid, binary, tid, Seccomp, NoNewPrivs): {bad:?}\nall: {rows:?}"
        );
    }
}
