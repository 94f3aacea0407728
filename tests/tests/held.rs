//! What an attack and fault campaign found holding, kept holding (issue 11's
//! closing list): path-like driver names, `--copy-up=/`, exhausted
//! descriptors, a missing tun device and a full disk all end
//! in a clear error, with no panic and nothing left running.

use rk_tests::*;
use std::process::{Command, Output};

/// A clean failure: non-zero, an `error:` line, no panic, and no process
/// carrying `mark` left behind.
#[track_caller]
fn clean_failure(out: &Output, mark: &str, needle: &str) {
    assert!(
        !out.status.success(),
        "expected a failure\nstdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("error"), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr does not mention {needle:?}:\n{err}"
    );
    let left = wait_until_gone(mark, 3);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `rootlesskit ARGS -- sh -c MARK` as the test user, started by `launcher`
/// (`exec`, or e.g. `ulimit -n 12; exec`, `exec prlimit ... --`), as root in
/// a private mount namespace after `setup`.
fn run_limited(shell_prefix: &str, setup: &str, args: &[&str], mark: &str) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", mark]);
    let rk = bin_dir().join("rootlesskit");
    let quoted: Vec<String> = all.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "{setup}\n{shell_prefix} setpriv --reuid={u} --regid={u} --init-groups env HOME=/home/{u} \
         PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin {rk} {args}",
        u = TEST_USER,
        rk = rk.display(),
        args = quoted.join(" ")
    );
    assert!(is_root(), "these tests set limits and mounts as root");
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn path_like_driver_names_are_refused() {
    for name in ["../x", "/bin/sh", "a/b", ".hidden", "-x"] {
        let out = rootlesskit(&[&format!("--net={name}"), "true"])
            .output()
            .unwrap();
        expect_failure(&out, "not a valid driver name");
    }
}

#[test]
fn copy_up_of_the_root_is_refused_and_deletes_nothing() {
    let dir = user_temp_dir("copyroot");
    let keep = dir.join("precious");
    std::fs::write(&keep, "mine").unwrap();
    let out = rootlesskit(&["--copy-up=/", "true"])
        .current_dir(&dir)
        .output()
        .unwrap();
    expect_failure(&out, "cannot be copied up");
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "mine");
}

#[test]
fn too_few_descriptors_is_a_clear_error() {
    let mark = marker("nofile");
    // 12 descriptors: too few for the driver's set-up.
    let out = run_limited(
        "ulimit -n 12; exec",
        "",
        &["--net=slirp4netns", "--disable-host-loopback"],
        &mark,
    );
    if out.status.success() {
        // Fine as long as it really worked; then nothing may be left.
        assert!(wait_until_gone(&mark, 3).is_empty());
    } else {
        clean_failure(&out, &mark, "");
    }
}

#[test]
fn a_missing_tun_device_is_a_clear_error() {
    let mark = marker("notun");
    for net in ["slirp4netns", "gvisor-tap-vsock"] {
        let out = run_limited(
            "exec",
            "mount --bind /dev/null /dev/net/tun",
            &[&format!("--net={net}"), "--disable-host-loopback"],
            &mark,
        );
        clean_failure(&out, &mark, "tun");
    }
}

#[test]
fn a_full_disk_under_the_state_dir_is_a_clear_error() {
    let mark = marker("full");
    let base = std::env::temp_dir().join(format!("rk-t-full-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let setup = format!(
        "mount -t tmpfs -o size=16k,mode=1777 tmpfs {b} && \
         su -s /bin/sh {u} -c 'mkdir -m 700 {b}/sd; dd if=/dev/zero of={b}/sd/fill bs=4k count=100 2>/dev/null; true'",
        b = base.display(),
        u = TEST_USER
    );
    let state = format!("--state-dir={}/sd", base.display());
    let out = run_limited("exec", &setup, &[&state, "--net=slirp4netns"], &mark);
    // The state dir holds a file rootlesskit did not make: refused before
    // anything is written, which is the safe answer for a full disk too.
    clean_failure(&out, &mark, "");
    let _ = std::fs::remove_dir_all(&base);
}
