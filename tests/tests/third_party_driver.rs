//! Drivers from outside the workspace: `examples/drivers/rk-pyslirp` is
//! a network driver written in Python from `docs/driver-protocol.md` alone.
//! If rootlesskit can find it, list it and network a child through it (with
//! the real slirp4netns), third parties can build on the protocol. A broken
//! driver must fail clearly and leave nothing behind.

use rk_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DRIVER_PATH_ENV: &str = "ROOTLESSKIT_DRIVER_PATH";
const PYSLIRP_VERSION: &str = "1.0.0";

/// A directory the test user can read holding a copy of the driver
/// `rk-NAME` from `examples/drivers` (a complete example for driver
/// authors) or `tests/fixtures/drivers` (broken on purpose); the checkout
/// itself may not be readable by that user.
fn driver_dir(name: &str) -> PathBuf {
    let file = format!("rk-{name}");
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = [
        top.join("../examples/drivers"),
        top.join("fixtures/drivers"),
    ]
    .into_iter()
    .map(|d| d.join(&file))
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("no driver {file} in examples/drivers or tests/fixtures/drivers"));
    let dir = user_temp_dir(name);
    std::fs::copy(&source, dir.join(&file))
        .unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
    chmod(&dir.join(&file), 0o755);
    chmod(&dir, 0o755);
    dir
}

/// `rootlesskit ARGS` as the test user, finding drivers in `driver_dir` first.
fn rootlesskit_with_drivers(driver_dir: &Path, args: &[&str]) -> Command {
    rootlesskit_with_env(args, &[(DRIVER_PATH_ENV, driver_dir.to_str().unwrap())])
}

/// Waits up to two seconds for no process to mention `needle` in its command
/// line; returns (and kills) those that remain.
fn leftovers(needle: &str) -> Vec<(u32, String)> {
    let left = wait_until_gone(needle, 2);
    for (pid, _) in &left {
        // SAFETY: kill with a pid and a signal number; the worst case is
        // signalling a process that has just exited.
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
    }
    left
}

/// The pid slirp4netns got, from the driver's debug log.
fn slirp4netns_pid(stderr: &str) -> u32 {
    let tail = stderr
        .split("rk-pyslirp: started slirp4netns (pid ")
        .nth(1)
        .unwrap_or_else(|| panic!("rk-pyslirp did not log starting slirp4netns:\n{stderr}"));
    tail[..tail.find(')').unwrap()].parse().unwrap()
}

fn is_slirp4netns(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("slirp4netns"))
        .unwrap_or(false)
}

#[test]
fn python_driver_written_from_the_protocol_document_networks_the_child() {
    let drivers = driver_dir("pyslirp");
    let port = servers::tcp_echo("127.0.0.1");
    let script = format!(
        "echo mtu=$(cat /sys/class/net/tap0/mtu)
         echo route=$(awk '$2 == \"00000000\" {{ print $1 \"/\" $3 }}' /proc/net/route)
         echo address=$(grep -c '10.0.2.100' /proc/net/fib_trie)
         echo nameserver=$(awk '/^nameserver/ {{ print $2 }}' /etc/resolv.conf | tr '\\n' ' ')
         echo tcp=$(echo hi | socat -t5 - TCP:10.0.2.2:{port})"
    );
    let cmd = rootlesskit_with_drivers(
        &drivers,
        &[
            "--debug",
            "--net=pyslirp",
            "--copy-up=/etc",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let out = output_within(cmd, Duration::from_secs(60));
    let text = expect_success(&out);

    assert_eq!(
        field(&text, "tcp"),
        "reply: hi",
        "TCP through 10.0.2.2 to the host's loopback"
    );
    // /proc/net/route is little-endian hex: 10.0.2.2 is 0202000A.
    assert_eq!(
        field(&text, "route"),
        "tap0/0202000A",
        "default route via the driver's gateway"
    );
    assert_ne!(field(&text, "address"), "0", "10.0.2.100 on tap0:\n{text}");
    assert_eq!(
        field(&text, "nameserver").trim(),
        "10.0.2.3",
        "resolv.conf from the driver's dns"
    );

    let slirp = slirp4netns_pid(&stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(2);
    while is_slirp4netns(slirp) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !is_slirp4netns(slirp),
        "slirp4netns (pid {slirp}) outlived rootlesskit"
    );
    let left = leftovers(drivers.to_str().unwrap());
    assert!(left.is_empty(), "the driver outlived rootlesskit: {left:?}");
    // Last, as it needs more than the driver: like RootlessKit, the child
    // must see its own network namespace in /sys (a sysfs mounted inside).
    assert_eq!(
        field(&text, "mtu"),
        "65520",
        "the MTU the driver answered, in the child's /sys/class/net"
    );
}

#[test]
fn list_drivers_shows_the_python_driver_with_its_version() {
    let drivers = driver_dir("pyslirp");
    let cmd = rootlesskit_with_drivers(&drivers, &["--list-drivers"]);
    let out = output_within(cmd, Duration::from_secs(30));
    let text = expect_success(&out);
    let line = text
        .lines()
        .find(|l| l.contains(drivers.join("rk-pyslirp").to_str().unwrap()))
        .unwrap_or_else(|| {
            panic!(
                "--list-drivers does not list {}:\n{text}",
                drivers.display()
            )
        });
    assert!(line.split_whitespace().next() == Some("pyslirp"), "{line}");
    assert!(line.contains(PYSLIRP_VERSION), "no version in {line:?}");
    assert!(line.contains("cidr"), "no capabilities in {line:?}");
    let left = leftovers(drivers.to_str().unwrap());
    assert!(
        left.is_empty(),
        "--list-drivers left drivers running: {left:?}"
    );
}

#[test]
fn driver_options_reach_the_driver_and_unknown_ones_fail_clearly() {
    let drivers = driver_dir("pyslirp");
    let cmd = rootlesskit_with_drivers(
        &drivers,
        &["--net=pyslirp", "--net-opt=colour=blue", "--", "true"],
    );
    let out = output_within(cmd, Duration::from_secs(60));
    expect_failure(&out, "network driver pyslirp: unknown option 'colour'");
    let left = leftovers(drivers.to_str().unwrap());
    assert!(left.is_empty(), "the driver outlived rootlesskit: {left:?}");
}

#[test]
fn missing_helper_program_is_reported_with_the_fix() {
    let drivers = driver_dir("pyslirp");
    let cmd = rootlesskit_with_drivers(
        &drivers,
        &[
            "--net=pyslirp",
            "--net-opt=binary=/nonexistent/slirp4netns",
            "--",
            "true",
        ],
    );
    let out = output_within(cmd, Duration::from_secs(60));
    expect_failure(&out, "/nonexistent/slirp4netns is not an executable");
    expect_failure(&out, "install slirp4netns");
}

#[test]
fn driver_answering_garbage_fails_clearly_and_leaves_nothing_behind() {
    let drivers = driver_dir("garbage");
    let started = Instant::now();
    let cmd = rootlesskit_with_drivers(&drivers, &["--net=garbage", "--", "true"]);
    // rk-garbage hangs after its answer: only rootlesskit can end it.
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "rootlesskit waited {:?} for a driver that had already answered garbage",
        started.elapsed()
    );
    expect_failure(&out, "rk-garbage");
    let err = stderr(&out);
    assert!(
        ["protocol", "malformed", "JSON"]
            .iter()
            .any(|w| err.contains(w)),
        "the message does not say what is wrong with the driver:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let left = leftovers(drivers.to_str().unwrap());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[test]
fn unknown_driver_name_lists_the_drivers_that_were_found() {
    let drivers = driver_dir("pyslirp");
    let cmd = rootlesskit_with_drivers(&drivers, &["--net=nosuchdriver", "--", "true"]);
    let out = output_within(cmd, Duration::from_secs(30));
    expect_failure(&out, "rk-nosuchdriver");
    expect_failure(&out, "pyslirp");
}

/// A free TCP port on the host's loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `text` to 127.0.0.1:`port` and reads the answer (bounded).
fn roundtrip(port: u16, text: &str) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(text.as_bytes())?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match attempt {
            Ok(out) if !out.is_empty() => return out,
            _ if Instant::now() > deadline => return String::new(),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn a_python_driver_offers_its_own_port_driver_at_start_and_through_rootlessctl() {
    let drivers = driver_dir("pyslirp");
    let (at_start, later) = (free_port(), free_port());
    let state = std::env::temp_dir().join(format!("rk-t-pyports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    // Inside: an echo server on port 80 for both forwards; the later port
    // is added with rootlessctl from inside (ROOTLESSKIT_STATE_DIR).
    let script = format!(
        "socat TCP-LISTEN:80,fork,reuseaddr EXEC:cat & \
         rootlessctl add-ports 127.0.0.1:{later}:80/tcp; \
         echo added; sleep 20"
    );
    let path = format!("{}:/usr/bin:/bin", bin_dir().display());
    let mut rk = rootlesskit_with_env(
        &[
            &format!("--state-dir={}", state.display()),
            // The echo server inside dies with the PID namespace.
            "--pidns",
            "--net=pyslirp",
            "--port-driver=pyslirp",
            &format!("-p=127.0.0.1:{at_start}:80/tcp"),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[
            ("ROOTLESSKIT_DRIVER_PATH", drivers.to_str().unwrap()),
            ("PATH", &path),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut first = String::new();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(rk.stdout.take().unwrap());
    // rootlessctl prints the id, then the script says "added".
    while !first.contains("added") {
        let mut l = String::new();
        if lines.read_line(&mut l).unwrap() == 0 {
            break;
        }
        first.push_str(&l);
    }
    let got_start = roundtrip(at_start, "published at start\n");
    let got_later = roundtrip(later, "added later\n");
    let list = as_test_user(bin_dir().join("rootlessctl").to_str().unwrap())
        .args([
            &format!("--socket={}", state.join("api.sock").display()),
            "list-ports",
        ])
        .output()
        .unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(rk.id() as i32, libc::SIGTERM) };
    let out = rk.wait_with_output().unwrap();
    assert!(first.contains("added"), "{first}\n{}", stderr(&out));
    assert_eq!(got_start, "published at start\n", "{}", stderr(&out));
    assert_eq!(got_later, "added later\n", "{}", stderr(&out));
    let list = stdout(&list);
    assert!(list.contains(&at_start.to_string()), "{list}");
    assert!(list.contains(&later.to_string()), "{list}");
    let _ = std::fs::remove_dir_all(&state);
}
