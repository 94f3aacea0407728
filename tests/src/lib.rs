//! Harness for the end-to-end tests: runs the built binaries as the
//! unprivileged test user (`rk-test`, made by `.ci/setup-host`) and starts
//! servers on the host's loopback for them to reach.
//!
//! The binaries come from `$RK_BIN_DIR`, else the workspace's `target/debug`
//! (build them first: `cargo build --workspace --bins`). They are copied to a
//! world-readable temporary directory so that the test user can run them
//! wherever the checkout lives.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The unprivileged user the tests run rootlesskit as when they run as root.
pub const TEST_USER: &str = "rk-test";

/// Every binary the workspace builds that the tests run.
const BINARIES: &[&str] = &[
    "rootlesskit",
    "rootlessctl",
    "rk-slirp4netns",
    "rk-pasta",
    "rk-vpnkit",
    "rk-lxc-user-nic",
    "rk-gvtap",
    // The builtin port driver's relay, found next to rootlesskit.
    "rootlesskit-port-builtin",
];

fn source_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RK_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

/// The directory holding copies of the built binaries, readable by the test user.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = source_bin_dir();
        assert!(
            src.join("rootlesskit").is_file(),
            "{} has no rootlesskit binary: run `cargo build --workspace --bins` first (or set RK_BIN_DIR)",
            src.display()
        );
        let dir = std::env::temp_dir().join(format!("rk-tests-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        remove_at_exit(&dir);
        for b in BINARIES {
            let from = src.join(b);
            if from.is_file() {
                link_or_copy(&from, &dir.join(b));
            }
        }
        chmod(&dir, 0o755);
        dir
    })
}

/// A hard link of `from` at `to` (no space used: the test binaries are
/// hundreds of MiB in a debug build), or a copy where linking is not
/// possible (another filesystem).
pub fn link_or_copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
    }
}

/// Directories this test process made, removed when it exits (libtest
/// exits normally after the last test, failed or not), so that runs do not
/// pile up in /tmp.
static TO_REMOVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

extern "C" fn remove_registered() {
    let dirs = std::mem::take(&mut *TO_REMOVE.lock().unwrap_or_else(|p| p.into_inner()));
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Removes `dir` (and what is below it) when the test process exits.
pub fn remove_at_exit(dir: &Path) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: atexit with a function that only removes directories.
        unsafe { libc::atexit(remove_registered) };
    });
    TO_REMOVE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_path_buf());
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs `program args` as the test user (directly when the
/// tests are not root).
pub fn as_test_user(program: &str) -> Command {
    as_test_user_with_env(program, &[])
}

/// Like [`as_test_user`], with extra environment variables (they override
/// the defaults, PATH included).
pub fn as_test_user_with_env(program: &str, env: &[(&str, &str)]) -> Command {
    if is_root() {
        let home = format!("/home/{TEST_USER}");
        assert!(
            Path::new(&home).is_dir(),
            "test user {TEST_USER} is missing: run .ci/setup-host as root first"
        );
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={TEST_USER}"),
            &format!("--regid={TEST_USER}"),
            "--init-groups",
            "env",
            &format!("HOME={home}"),
            &format!("USER={TEST_USER}"),
            "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        ]);
        c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(program);
        c
    } else {
        let mut c = Command::new(program);
        c.envs(env.iter().copied());
        c
    }
}

/// `rootlesskit ARGS` as the test user.
pub fn rootlesskit(args: &[&str]) -> Command {
    rootlesskit_with_env(args, &[])
}

/// `rootlesskit ARGS` as the test user with extra environment variables.
pub fn rootlesskit_with_env(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = as_test_user_with_env(bin_dir().join("rootlesskit").to_str().unwrap(), env);
    c.args(args);
    c.stdin(Stdio::null());
    c
}

/// Spawns `c` (a rootlesskit, usually) with stdout and stderr piped;
/// returns it with its stdout to read line by line.
pub fn spawn_reading(
    mut c: Command,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rootlesskit");
    let out = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
    (child, out)
}

/// Stops a rootlesskit the test started the way a user would, with
/// SIGTERM, so that it removes its state directory (SIGKILL would leave it
/// in /tmp); SIGKILL only if it has not exited within 10 s.
pub fn terminate(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling a child process this test started and has not
        // reaped yet (its pid cannot have been reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `rootlesskit ARGS -- sh -c SCRIPT` and returns its output.
pub fn run_sh(args: &[&str], script: &str) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--", "sh", "-c", script]);
    rootlesskit(&all).output().expect("running rootlesskit")
}

/// Text of stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Text of stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout, showing both streams on failure.
#[track_caller]
pub fn expect_success(o: &Output) -> String {
    assert!(
        o.status.success(),
        "rootlesskit failed with {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Asserts failure whose stderr contains `needle`.
#[track_caller]
pub fn expect_failure(o: &Output, needle: &str) {
    assert!(
        !o.status.success(),
        "expected failure, got success\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    assert!(
        stderr(o).contains(needle),
        "stderr does not mention {needle:?}:\n{}",
        stderr(o)
    );
}

/// A fresh directory the test user can write to.
pub fn user_temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rk-t-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    remove_at_exit(&dir);
    // Sticky, like /tmp: rootlesskit refuses a state dir whose parent others
    // could rename it out of.
    chmod(&dir, 0o1777);
    dir
}

/// A marker unique to this test process and call, to find processes a run
/// left behind (put it in CMD's arguments, e.g. `sleep 1000 # MARKER`).
pub fn marker(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("rkmark-{tag}-{}-{n}", std::process::id())
}

/// Waits up to `secs` for no process to match `needle`; returns those left.
pub fn wait_until_gone(needle: &str, secs: u64) -> Vec<(u32, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let left = processes_matching(needle);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Processes whose command line contains `needle`, as (pid, cmdline).
pub fn processes_matching(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) {
            found.push((pid, cmd));
        }
    }
    found
}

pub mod servers;

/// Runs `cmd` (typically a [`rootlesskit`] command) inside a new mount
/// namespace of root's with the given propagation, after `setup` (a shell
/// snippet run as root there, e.g. bind-mounting a resolv.conf).
pub fn in_root_mount_ns(propagation: &str, setup: &str, cmd: &Command) -> Command {
    assert!(
        is_root(),
        "this test sets up a mount namespace as root: run the tests as root"
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", propagation, "sh", "-c"]);
    c.arg(format!("{setup}\nexec \"$@\""));
    c.arg("sh");
    c.arg(cmd.get_program());
    c.args(cmd.get_args());
    c.stdin(Stdio::null());
    c
}

pub mod dns;

/// All descendants of `pid` (children first), as (pid, comm).
pub fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut all: Vec<(u32, u32, String)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        all.push((p, ppid, comm));
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp, comm) in &all {
            if *pp == parent {
                out.push((*p, comm.clone()));
                frontier.push(*p);
            }
        }
    }
    out
}

/// Reads `pipe` to its end on a thread; the bytes arrive on the receiver.
pub fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// The exit status, or `None` after stopping the process at `deadline`
/// ([`terminate`]: SIGTERM first, so that a rootlesskit removes its state
/// directory).
pub fn wait_until(
    child: &mut std::process::Child,
    deadline: std::time::Instant,
) -> Option<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("waiting for rootlesskit") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            terminate(child);
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `cmd` to the end, failing the test if it takes longer than `limit`
/// or if something it started still holds its stdout or stderr open
/// afterwards (a process left behind).
pub fn output_within(mut cmd: Command, limit: std::time::Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting rootlesskit");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait_until(&mut child, std::time::Instant::now() + limit);
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>, name: &str| {
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap_or_else(|_| {
            panic!("rootlesskit exited ({status:?}) but a process it started still holds its {name} open")
        })
    };
    let stdout = collect(stdout, "stdout");
    let stderr = collect(stderr, "stderr");
    let Some(status) = status else {
        panic!(
            "rootlesskit did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The value after `key=` on a line of the form `key=value` of `text`.
pub fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{text}"))
}

/// Pid of the first process under `parent` whose name (comm) is `comm`.
pub fn child_named(parent: u32, comm: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let name = &stat[stat.find('(').unwrap() + 1..close];
        let ppid: u32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == parent && name == comm {
            return Some(pid);
        }
    }
    None
}
