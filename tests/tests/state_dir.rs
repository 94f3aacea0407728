//! The state directory rules (docs/security.md): rootlesskit never removes
//! a file it did not make, and never uses a state directory another user
//! could have prepared or can still change. The runs are as the test user;
//! the files of "another user" belong to `rk-other` (made by
//! `.ci/setup-host`, or here when missing).

use rk_tests::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

/// Another local user (`$RK_OTHER_USER`, as `.ci/setup-host` names it).
fn other_user() -> String {
    std::env::var("RK_OTHER_USER").unwrap_or_else(|_| "rk-other".into())
}

const LIMIT: Duration = Duration::from_secs(60);

fn uid_of(user: &str) -> Option<u32> {
    let out = std::process::Command::new("id")
        .args(["-u", user])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The test user's uid (ours when the tests are not root).
fn test_uid() -> u32 {
    if is_root() {
        uid_of(TEST_USER).expect("the test user is missing: run .ci/setup-host")
    } else {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() }
    }
}

/// The other user's uid, creating the user when root and it is missing.
fn other_uid() -> u32 {
    static UID: OnceLock<u32> = OnceLock::new();
    *UID.get_or_init(|| {
        let name = other_user();
        if let Some(uid) = uid_of(&name) {
            return uid;
        }
        assert!(is_root(), "user {name} is missing: run .ci/setup-host");
        let st = std::process::Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", &name])
            .status()
            .unwrap();
        // A parallel test may have made it first.
        assert!(st.success() || uid_of(&name).is_some(), "useradd {name}");
        uid_of(&name).unwrap()
    })
}

fn chown(p: &Path, uid: u32) {
    if is_root() {
        std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    }
}

/// A fresh directory `mode`, owned by `uid`, under the temporary directory.
fn dir_of(uid: u32, tag: &str, mode: u32) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("rk-sdt-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir(&d).unwrap();
    chown(&d, uid);
    chmod(&d, mode);
    d
}

/// A directory of the test user's, as their home or project would be.
fn users_dir(tag: &str) -> PathBuf {
    dir_of(test_uid(), tag, 0o755)
}

fn sub_dir(parent: &Path, name: &str, uid: u32, mode: u32) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir(&d).unwrap();
    chown(&d, uid);
    chmod(&d, mode);
    d
}

fn put_file(p: &Path, content: &str, uid: u32) {
    std::fs::write(p, content).unwrap();
    chown(p, uid);
}

fn put_socket(p: &Path, uid: u32) {
    drop(std::os::unix::net::UnixListener::bind(p).unwrap());
    chown(p, uid);
}

/// Every entry under `dir` (recursively, not following links) with its
/// kind, owner, mode and content: what must not change.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else if m.is_file() {
                format!("{:?}", std::fs::read_to_string(&p).unwrap_or_default())
            } else {
                "special".into()
            };
            out.push(format!(
                "{} {what} uid={} mode={:o}",
                p.strip_prefix(dir).unwrap().display(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
    }
    out.sort();
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `rootlesskit ARGS -- sh -c SCRIPT` as the test user in `cwd`.
fn run_in(cwd: &Path, args: &[&str], script: &str) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", script]);
    let mut cmd = rootlesskit(&all);
    cmd.current_dir(cwd);
    output_within(cmd, LIMIT)
}

fn state_arg(p: &Path) -> String {
    format!("--state-dir={}", p.display())
}

#[test]
fn empty_state_dir_flag_in_a_directory_of_user_files_deletes_nothing() {
    let project = users_dir("empty-flag");
    let uid = test_uid();
    for (name, content) in [
        ("main.c", "int main(void) { return 0; }\n"),
        ("notes.txt", "keep me\n"),
        // Names rootlesskit uses, but the user's own.
        ("hosts", "10.1.1.1 build\n"),
        ("child_pid", "1\n"),
    ] {
        put_file(&project.join(name), content, uid);
    }
    sub_dir(&project, "src", uid, 0o755);
    put_file(&project.join("src/lib.rs"), "// x\n", uid);
    let before = snapshot(&project);
    // Whether an empty value means "unset" (RootlessKit) or names the
    // current directory, nothing of the user's may go.
    let out = run_in(&project, &["--state-dir=", "--net=host"], "true");
    assert_eq!(
        snapshot(&project),
        before,
        "the user's files changed; rootlesskit said:\n{}",
        stderr(&out)
    );
    // The current directory named outright: refused, untouched.
    let out = run_in(&project, &["--state-dir=.", "--net=host"], "true");
    expect_failure(&out, "main.c (not made by rootlesskit)");
    assert_eq!(snapshot(&project), before, "--state-dir=. changed files");
    let _ = std::fs::remove_dir_all(project);
}

#[test]
fn a_state_dir_holding_a_foreign_file_is_refused_and_the_file_survives() {
    let base = users_dir("foreign");
    let uid = test_uid();
    let sd = sub_dir(&base, "sd", uid, 0o700);
    put_file(&sd.join("report.txt"), "the user's\n", uid);
    put_file(&sd.join("child_pid"), "4242424", uid);
    let before = snapshot(&base);
    let out = run_in(&base, &[&state_arg(&sd), "--net=host"], "true");
    expect_failure(&out, &sd.join("report.txt").display().to_string());
    expect_failure(&out, "empty or missing");
    assert_eq!(snapshot(&base), before, "something was removed or added");
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn a_symlink_as_the_state_dir_is_refused() {
    let base = users_dir("symlink");
    let uid = test_uid();
    let real = sub_dir(&base, "real", uid, 0o700);
    put_file(&real.join("keep"), "x", uid);
    let link = base.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    chown(&link, uid);
    let before = snapshot(&base);
    let out = run_in(&base, &[&state_arg(&link), "--net=host"], "true");
    expect_failure(&out, "symbolic link");
    assert_eq!(snapshot(&base), before);
    let _ = std::fs::remove_dir_all(base);
}

/// The attack of issue 11: another user prepares the victim's state dir
/// in a shared directory, with a fake API socket and resolv.conf pointing
/// at a file of the victim's.
#[test]
fn a_state_dir_prepared_by_another_user_is_refused() {
    let shared = dir_of(0, "shared", 0o1777);
    let victim_file = users_dir("victim").join("precious");
    put_file(&victim_file, "precious\n", test_uid());
    let other = other_uid();
    let sd = sub_dir(&shared, "sd", other, 0o777);
    put_socket(&sd.join("api.sock"), other);
    std::os::unix::fs::symlink(&victim_file, sd.join("resolv.conf")).unwrap();
    chown(&sd.join("resolv.conf"), other);
    let before = snapshot(&shared);
    let out = run_in(
        victim_file.parent().unwrap(),
        &[&state_arg(&sd), "--net=host"],
        "true",
    );
    expect_failure(&out, &format!("belongs to uid {other}"));
    assert_eq!(snapshot(&shared), before);
    assert_eq!(std::fs::read_to_string(&victim_file).unwrap(), "precious\n");
    // Nor is a link of theirs followed into a directory of the victim's.
    let link = shared.join("link");
    std::os::unix::fs::symlink(victim_file.parent().unwrap(), &link).unwrap();
    chown(&link, other);
    let out = run_in(
        &shared,
        &[&state_arg(&link.join("sd")), "--net=host"],
        "true",
    );
    expect_failure(&out, &format!("symbolic link of uid {other}"));
    assert!(!victim_file.parent().unwrap().join("sd").exists());
    // Below a directory of the other user's, even a missing one is refused.
    let theirs = sub_dir(&shared, "theirs", other, 0o755);
    let out = run_in(
        &shared,
        &[&state_arg(&theirs.join("sd")), "--net=host"],
        "true",
    );
    expect_failure(
        &out,
        &format!("{} belongs to uid {other}", theirs.display()),
    );
    let _ = std::fs::remove_dir_all(shared);
    let _ = std::fs::remove_dir_all(victim_file.parent().unwrap());
}

#[test]
fn a_state_dir_writable_by_others_is_refused() {
    let base = users_dir("mode");
    let sd = sub_dir(&base, "sd", test_uid(), 0o777);
    let out = run_in(&base, &[&state_arg(&sd), "--net=host"], "true");
    expect_failure(&out, "writable by other users (mode 0777)");
    expect_failure(&out, &format!("chmod 700 {}", sd.display()));
    assert!(names(&sd).is_empty(), "{:?}", names(&sd));
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn a_state_dir_in_a_world_writable_parent_needs_its_sticky_bit() {
    let open = dir_of(0, "open", 0o777);
    let sd = open.join("sd");
    let out = run_in(&open, &[&state_arg(&sd), "--net=host"], "true");
    expect_failure(&out, "no sticky bit");
    assert!(!sd.exists(), "made before refusing");
    // The same as /tmp: sticky, so only its owner can replace sd.
    chmod(&open, 0o1777);
    let out = run_in(&open, &[&state_arg(&sd), "--net=host"], "echo ran");
    assert_eq!(expect_success(&out).trim(), "ran");
    assert!(names(&open).is_empty(), "left: {:?}", names(&open));
    let _ = std::fs::remove_dir_all(open);
}

#[test]
fn leftovers_of_an_earlier_run_are_accepted_and_cleaned() {
    let base = users_dir("leftovers");
    let uid = test_uid();
    let sd = sub_dir(&base, "sd", uid, 0o700);
    put_file(&sd.join("lock"), "", uid);
    put_file(&sd.join("child_pid"), "4242424", uid);
    put_file(&sd.join("netns"), "", uid);
    put_socket(&sd.join("api.sock"), uid);
    put_socket(&sd.join(".s4nn.sock"), uid);
    let out = run_in(
        &base,
        &[&state_arg(&sd), "--net=host"],
        "sd=$ROOTLESSKIT_STATE_DIR; for i in $(seq 100); do [ -s $sd/child_pid ] && break; sleep 0.05; done; \
         echo pid=$(cat $sd/child_pid); echo self=$$; echo ls=$(ls -A $sd); \
         [ -S $sd/api.sock ] && echo api=socket",
    );
    let text = expect_success(&out);
    assert_eq!(field(&text, "pid"), field(&text, "self"), "{text}");
    assert_eq!(field(&text, "ls"), "api.sock child_pid lock", "{text}");
    assert_eq!(field(&text, "api"), "socket", "{text}");
    assert!(names(&sd).is_empty(), "left: {:?}", names(&sd));
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn after_a_run_only_what_was_there_before_remains() {
    let base = users_dir("after");
    let uid = test_uid();
    put_file(&base.join("mine"), "x", uid);
    let before = snapshot(&base);
    // Missing, with missing parents: made, then removed whole. A driver,
    // its API socket and a detached netns put the most files there.
    let sd = base.join("a/b/sd");
    let args = [
        state_arg(&sd),
        "--net=slirp4netns".into(),
        "--port-driver=slirp4netns".into(),
        "--detach-netns".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in(
        &base,
        &args,
        "for i in $(seq 100); do [ -s $ROOTLESSKIT_STATE_DIR/child_pid ] && break; sleep 0.05; done; \
         echo ls=$(ls -A $ROOTLESSKIT_STATE_DIR)",
    );
    let text = expect_success(&out);
    for name in [
        "lock",
        "child_pid",
        "api.sock",
        "netns",
        ".s4nn.sock",
        "resolv.conf",
        "hosts",
    ] {
        assert!(
            field(&text, "ls").split(' ').any(|n| n == name),
            "{name} missing during the run: {text}"
        );
    }
    assert_eq!(snapshot(&base), before, "the run left something");
    // Existing and empty: stays, empty. What CMD writes there is not
    // rootlesskit's to remove.
    let sd = sub_dir(&base, "sd", uid, 0o700);
    let out = run_in(
        &base,
        &[&state_arg(&sd), "--net=slirp4netns"],
        "echo from-cmd > $ROOTLESSKIT_STATE_DIR/cmd-output",
    );
    expect_success(&out);
    assert_eq!(names(&sd), ["cmd-output"]);
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn the_default_state_dir_is_private_and_goes_whole() {
    let out = run_in(
        Path::new("/"),
        &["--net=host"],
        "echo dir=$ROOTLESSKIT_STATE_DIR; stat -c mode=%a $ROOTLESSKIT_STATE_DIR; \
         mkdir $ROOTLESSKIT_STATE_DIR/sub; touch $ROOTLESSKIT_STATE_DIR/sub/f",
    );
    let text = expect_success(&out);
    assert_eq!(field(&text, "mode"), "700", "{text}");
    let dir = Path::new(field(&text, "dir"));
    assert!(dir.is_absolute(), "{text}");
    assert!(!dir.exists(), "{} left", dir.display());
}
