//! Unit tests of the state directory rules (run as any user; the parts
//! about other users' files need root and are skipped without it).

use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fresh private directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rk-sd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    chmod(&d, 0o700);
    d
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn is_root() -> bool {
    walk::euid() == 0
}

#[test]
fn second_open_of_the_same_dir_is_refused_and_stale_files_go() {
    let base = scratch("busy");
    std::fs::write(base.join(CHILD_PID), "123").unwrap();
    let first = StateDir::open(Some(&base)).unwrap();
    assert!(!base.join(CHILD_PID).exists(), "stale child_pid stayed");
    // flock locks belong to the open file description, so a second open
    // in the same process conflicts like another process would.
    let err = StateDir::open(Some(&base)).unwrap_err();
    assert!(err.contains("in use"), "{err}");
    assert!(
        base.join(LOCK).exists(),
        "the refused open removed the lock"
    );
    first.cleanup();
    drop(first);
    let again = StateDir::open(Some(&base)).unwrap();
    again.cleanup();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_foreign_file_is_refused_named_and_kept() {
    let base = scratch("foreign");
    std::fs::write(base.join("notes.txt"), "mine").unwrap();
    std::fs::write(base.join(CHILD_PID), "123").unwrap();
    let err = StateDir::open(Some(&base)).unwrap_err();
    assert!(
        err.contains(&base.join("notes.txt").display().to_string()),
        "{err}"
    );
    assert!(err.contains("empty or missing"), "{err}");
    // All or nothing: not even the stale child_pid went, no lock was left.
    assert_eq!(listing(&base), vec![CHILD_PID, "notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(base.join("notes.txt")).unwrap(),
        "mine"
    );
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_missing_dir_and_its_parents_are_made_0700_and_removed() {
    let base = scratch("missing");
    let sd = base.join("a/b/sd");
    let s = StateDir::open(Some(&sd)).unwrap();
    assert_eq!(s.path(), sd);
    for d in [base.join("a"), base.join("a/b"), sd.clone()] {
        assert_eq!(
            std::fs::metadata(&d).unwrap().mode() & 0o7777,
            0o700,
            "{d:?}"
        );
    }
    assert_eq!(
        s.removal_parents(),
        vec![base.clone(), base.join("a"), base.join("a/b")]
    );
    s.write_child_pid(42).unwrap();
    std::fs::write(sd.join("resolv.conf"), "nameserver 10.0.2.3\n").unwrap();
    s.cleanup();
    assert!(listing(&base).is_empty(), "{:?}", listing(&base));
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn an_existing_dir_stays_and_only_our_files_go() {
    let base = scratch("existing");
    let s = StateDir::open(Some(&base)).unwrap();
    assert!(s.removal_parents().is_empty());
    s.write_child_pid(42).unwrap();
    assert_eq!(std::fs::read_to_string(s.file(CHILD_PID)).unwrap(), "42");
    s.write_child_pid(43).unwrap();
    assert_eq!(std::fs::read_to_string(s.file(CHILD_PID)).unwrap(), "43");
    let m = std::fs::symlink_metadata(s.file(CHILD_PID)).unwrap();
    assert!(m.is_file() && m.nlink() == 1, "{m:?}");
    // What CMD puts there during the run is not ours to remove.
    std::fs::write(base.join("cmd-output"), "x").unwrap();
    s.cleanup();
    drop(s);
    assert_eq!(listing(&base), vec!["cmd-output"]);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_made_dir_with_a_foreign_file_is_left_with_that_file() {
    let base = scratch("made-foreign");
    let sd = base.join("sd");
    let s = StateDir::open(Some(&sd)).unwrap();
    std::fs::write(sd.join("cmd-output"), "x").unwrap();
    s.write_child_pid(1).unwrap();
    s.cleanup();
    assert_eq!(listing(&sd), vec!["cmd-output"]);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn leftovers_of_every_kind_are_accepted_and_removed() {
    let base = scratch("leftovers");
    std::fs::write(base.join(LOCK), "").unwrap();
    std::fs::write(base.join(CHILD_PID), "999999").unwrap();
    std::fs::write(base.join(NETNS), "").unwrap();
    std::fs::write(base.join("hosts"), "127.0.0.1 x\n").unwrap();
    for s in ["api.sock", ".s4nn.sock", "vpnkit-ethernet.sock", ".bp.sock"] {
        drop(std::os::unix::net::UnixListener::bind(base.join(s)).unwrap());
    }
    nix::unistd::mkfifo(
        &base.join(".bp-ready.pipe"),
        Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir(base.join("gvisortapvsock")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(base.join("gvisortapvsock/tap.sock")).unwrap());
    let s = StateDir::open(Some(&base)).unwrap();
    assert_eq!(listing(&base), vec![LOCK]);
    s.cleanup();
    drop(s);
    assert!(listing(&base).is_empty(), "{:?}", listing(&base));
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_known_name_of_the_wrong_kind_or_a_symlink_is_refused() {
    let base = scratch("kind");
    let victim = base.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let sd = base.join("sd");
    std::fs::create_dir(&sd).unwrap();
    chmod(&sd, 0o700);
    std::os::unix::fs::symlink(&victim, sd.join("resolv.conf")).unwrap();
    let err = StateDir::open(Some(&sd)).unwrap_err();
    assert!(err.contains("resolv.conf (a symbolic link"), "{err}");
    std::fs::remove_file(sd.join("resolv.conf")).unwrap();
    std::fs::write(sd.join("api.sock"), "").unwrap();
    let err = StateDir::open(Some(&sd)).unwrap_err();
    assert!(err.contains("api.sock (a file"), "{err}");
    std::fs::remove_file(sd.join("api.sock")).unwrap();
    std::fs::create_dir(sd.join("gvisortapvsock")).unwrap();
    std::fs::write(sd.join("gvisortapvsock/other"), "").unwrap();
    let err = StateDir::open(Some(&sd)).unwrap_err();
    assert!(err.contains("gvisortapvsock/other"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_symlink_as_the_state_dir_is_refused() {
    let base = scratch("symlink");
    std::fs::create_dir(base.join("real")).unwrap();
    std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
    let err = StateDir::open(Some(&base.join("link"))).unwrap_err();
    assert!(err.contains("symbolic link"), "{err}");
    assert!(listing(&base.join("real")).is_empty());
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_state_dir_writable_by_others_is_refused() {
    let base = scratch("mode");
    for mode in [0o777, 0o720, 0o702] {
        chmod(&base, mode);
        let err = StateDir::open(Some(&base)).unwrap_err();
        assert!(err.contains("writable by other users"), "{mode:o}: {err}");
        assert!(listing(&base).is_empty(), "{mode:o}: lock left");
    }
    chmod(&base, 0o755);
    StateDir::open(Some(&base)).unwrap().cleanup();
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn other_users_dirs_and_files_are_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to make files of another user");
        return;
    }
    let nobody = 65534;
    let base = scratch("owner");
    let theirs = base.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(nobody), Some(nobody)).unwrap();
    let err = StateDir::open(Some(&theirs)).unwrap_err();
    assert!(err.contains("belongs to uid 65534"), "{err}");
    // Inside a directory of theirs, even a missing state dir is refused.
    let err = StateDir::open(Some(&theirs.join("sd"))).unwrap_err();
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert!(!theirs.join("sd").exists());
    // A planted api.sock of theirs in a dir of ours.
    let ours = base.join("ours");
    std::fs::create_dir(&ours).unwrap();
    chmod(&ours, 0o700);
    drop(std::os::unix::net::UnixListener::bind(ours.join("api.sock")).unwrap());
    std::os::unix::fs::lchown(ours.join("api.sock"), Some(nobody), None).unwrap();
    let err = StateDir::open(Some(&ours)).unwrap_err();
    assert!(err.contains("api.sock (belongs to uid 65534"), "{err}");
    assert!(ours.join("api.sock").exists());
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn the_temporary_dir_is_private_and_goes_whole() {
    let s = StateDir::open(None).unwrap();
    let p = s.path().to_path_buf();
    assert_eq!(s.removal_parents(), vec![p.parent().unwrap().to_path_buf()]);
    let m = std::fs::symlink_metadata(&p).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o700);
    assert_eq!(m.uid(), walk::euid());
    s.write_child_pid(7).unwrap();
    std::fs::create_dir(p.join("made-by-cmd")).unwrap();
    std::fs::write(p.join("made-by-cmd/f"), "").unwrap();
    s.cleanup();
    assert!(!p.exists(), "{} left", p.display());
}
