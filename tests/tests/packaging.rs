//! Shipping as a distribution does: `make install` into a DESTDIR as an
//! unprivileged user, `make deb`'s split packages unpacked one by one into a
//! scratch root (the core alone first, then each driver), the man pages, and
//! the licence check. Everything runs the installed binaries as the test
//! user, with a PATH that holds no driver, so only the installed layout
//! (`bin/` and `../libexec/rootlesskit/`) can make the drivers found.
//!
//! Needs the debug build (`cargo build --workspace --bins`, which includes
//! rootlesskit-docgen); nothing here runs cargo build.

use rk_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// PATH for the installed programs: system directories only, none of which
/// holds an rk-* driver.
const SYSTEM_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";
const CORE_PACKAGE: &str = "rootlesskit-rs";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The directory of the debug build (as the harness finds it).
fn build_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RK_BIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"))
        .join("debug")
}

struct DriverLine {
    net: String,
    binary: String,
    package: String,
    depends: String,
    suggests: String,
}

/// packaging/drivers, the list `make deb` builds from.
fn drivers() -> Vec<DriverLine> {
    let text = std::fs::read_to_string(repo().join("packaging/drivers")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            assert_eq!(f.len(), 5, "packaging/drivers: 5 fields expected in {l:?}");
            DriverLine {
                net: f[0].into(),
                binary: f[1].into(),
                package: f[2].into(),
                depends: f[3].into(),
                suggests: f[4].into(),
            }
        })
        .collect()
}

fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `make ARGS` in `dir` as the current user (root in CI).
fn make(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new("make");
    c.arg("--no-print-directory").arg("-C").arg(dir).args(args);
    run(c)
}

/// The generated pages, completions and inventory, and a copy of the
/// debug binaries, in directories the test user can read (the checkout
/// may not be).
struct Built {
    bin: PathBuf,
    gen: PathBuf,
}

fn built(tag: &str) -> Built {
    let gen = user_temp_dir(&format!("{tag}-gen"));
    let gen_arg = format!("GEN_DIR={}", gen.display());
    let build_arg = format!("BUILD_DIR={}", build_dir().display());
    // Only the documentation step: docgen exists, the binaries too.
    make(
        &repo(),
        &["docs", "licences", "NO_BUILD=1", &gen_arg, &build_arg],
    );
    let bin = user_temp_dir(&format!("{tag}-bin"));
    for d in drivers().iter().map(|d| d.binary.as_str()).chain([
        "rootlesskit",
        "rootlessctl",
        "rootlesskit-port-builtin",
    ]) {
        link_or_copy(&build_dir().join(d), &bin.join(d));
    }
    chmod_tree(&gen);
    Built { bin, gen }
}

fn chmod_tree(dir: &Path) {
    run({
        let mut c = Command::new("chmod");
        c.arg("-R").arg("a+rX").arg(dir);
        c
    });
}

/// The installed rootlesskit as the test user, nothing but the system on PATH.
fn installed_rootlesskit(bin: &Path, args: &[&str]) -> Output {
    let mut c = as_test_user_with_env(
        bin.join("rootlesskit").to_str().unwrap(),
        &[("PATH", SYSTEM_PATH)],
    );
    c.env_remove("ROOTLESSKIT_DRIVER_PATH");
    c.args(args).stdin(std::process::Stdio::null());
    c.output().unwrap()
}

/// Driver names and paths from `--list-drivers` (the header line skipped).
fn listed(out: &Output) -> Vec<(String, String)> {
    stdout(out)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.iter().find(|x| x.starts_with('/'))?;
            Some((f[0].to_owned(), (*path).to_owned()))
        })
        .collect()
}

#[test]
fn every_built_driver_is_packaged_and_documented() {
    let lines = drivers();
    let mut workspace_drivers: Vec<String> = std::fs::read_dir(build_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("rk-") && !n.ends_with(".d") && build_dir().join(n).is_file())
        .collect();
    workspace_drivers.sort();
    let mut packaged: Vec<String> = lines.iter().map(|d| d.binary.clone()).collect();
    packaged.sort();
    assert_eq!(
        workspace_drivers, packaged,
        "packaging/drivers must list exactly the rk-* binaries the workspace builds"
    );
    // rk-docgen's own table (its man pages) must say the same.
    let b = built("docs");
    let page = std::fs::read_to_string(b.gen.join("man/man1/rootlesskit.1")).unwrap();
    for d in &lines {
        let esc = |s: &str| s.replace('-', "\\-");
        let entry = format!(
            "{} ({}(1)), package {};",
            esc(&d.binary),
            esc(&d.binary),
            esc(&d.package)
        );
        assert!(page.contains(&entry), "rootlesskit.1 lacks {entry:?} (rk-docgen/src/drivers.rs disagrees with packaging/drivers)");
        assert!(
            page.contains(&format!("\\-\\-net={}", esc(&d.net))),
            "rootlesskit.1 lacks --net={}",
            d.net
        );
    }
}

#[test]
fn make_install_into_a_destdir_needs_no_root_and_finds_its_drivers() {
    let b = built("install");
    // A copy of the files make install reads, readable by the test user.
    let src = user_temp_dir("install-src");
    for f in ["Makefile", "LICENSE", "README.md"] {
        std::fs::copy(repo().join(f), src.join(f)).unwrap();
    }
    for d in ["docs", "packaging"] {
        run({
            let mut c = Command::new("cp");
            c.arg("-r").arg(repo().join(d)).arg(&src);
            c
        });
    }
    chmod_tree(&src);
    let dest = user_temp_dir("install-dest");
    let args = [
        "install".to_owned(),
        "NO_BUILD=1".to_owned(),
        format!("DESTDIR={}", dest.display()),
        format!("BUILD_DIR={}", b.bin.display()),
        format!("GEN_DIR={}", b.gen.display()),
    ];
    let mut c = as_test_user("make");
    c.arg("--no-print-directory")
        .arg("-C")
        .arg(&src)
        .args(&args);
    run(c);

    let prefix = dest.join("usr/local");
    let mut expected: Vec<String> = vec![
        "bin/rootlesskit".into(),
        "bin/rootlessctl".into(),
        "share/man/man1/rootlesskit.1".into(),
        "share/man/man1/rootlessctl.1".into(),
        "share/man/man7/rootlesskit-driver-protocol.7".into(),
        "share/bash-completion/completions/rootlesskit".into(),
        "share/bash-completion/completions/rootlessctl".into(),
        "share/zsh/site-functions/_rootlesskit".into(),
        "share/zsh/site-functions/_rootlessctl".into(),
        "share/fish/vendor_completions.d/rootlesskit.fish".into(),
        "share/fish/vendor_completions.d/rootlessctl.fish".into(),
        "share/doc/rootlesskit-rs/LICENSE".into(),
        "share/doc/rootlesskit-rs/README.md".into(),
        "share/doc/rootlesskit-rs/driver-protocol.md".into(),
        "share/doc/rootlesskit-rs/licences.txt".into(),
    ];
    for d in drivers() {
        expected.push(format!("libexec/rootlesskit/{}", d.binary));
        expected.push(format!("share/man/man1/{}.1", d.binary));
    }
    let uid = Command::new("id").args(["-u", TEST_USER]).output().unwrap();
    let uid: u32 = stdout(&uid).trim().parse().unwrap_or(0);
    for rel in &expected {
        let p = prefix.join(rel);
        let meta =
            std::fs::metadata(&p).unwrap_or_else(|_| panic!("make install did not install {rel}"));
        use std::os::unix::fs::MetadataExt;
        if is_root() {
            assert_eq!(
                meta.uid(),
                uid,
                "{rel} is not owned by the unprivileged user who ran make install"
            );
        }
    }
    let completion =
        std::fs::read_to_string(prefix.join("share/bash-completion/completions/rootlesskit"))
            .unwrap();
    assert!(
        completion.contains("--list-drivers"),
        "bash completion lacks --list-drivers"
    );
    for shell_file in ["rootlesskit", "rootlessctl"] {
        let p = prefix
            .join("share/bash-completion/completions")
            .join(shell_file);
        let out = Command::new("bash").arg("-n").arg(&p).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            p.display(),
            stderr(&out)
        );
    }

    // The installed rootlesskit finds every driver in ../libexec/rootlesskit.
    let out = installed_rootlesskit(&prefix.join("bin"), &["--list-drivers"]);
    assert!(
        out.status.success(),
        "--list-drivers failed: {}",
        stderr(&out)
    );
    let found = listed(&out);
    for d in drivers() {
        let want = prefix.join("libexec/rootlesskit").join(&d.binary);
        assert!(
            found.iter().any(|(_, p)| Path::new(p) == want),
            "{} not listed from {}:\n{}",
            d.binary,
            want.display(),
            stdout(&out)
        );
    }

    // And uninstall removes what install put there.
    let mut c = as_test_user("make");
    c.arg("--no-print-directory")
        .arg("-C")
        .arg(&src)
        .arg("uninstall")
        .args(&args[1..]);
    run(c);
    let left = Command::new("find")
        .arg(&dest)
        .args(["-type", "f"])
        .output()
        .unwrap();
    assert_eq!(stdout(&left), "", "make uninstall left files behind");
}

/// `dpkg-deb -f DEB FIELD`.
fn field_of(deb: &Path, name: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(name)
        .output()
        .unwrap();
    stdout(&out).trim().to_owned()
}

#[test]
fn split_packages_install_one_by_one_into_a_scratch_root() {
    let b = built("deb");
    let debs = user_temp_dir("debs");
    make(
        &repo(),
        &[
            "deb",
            "NO_BUILD=1",
            "DEB_COMPRESS=none",
            &format!("DEB_DIR={}", debs.display()),
            &format!("BUILD_DIR={}", b.bin.display()),
            &format!("GEN_DIR={}", b.gen.display()),
        ],
    );
    let deb_of = |pkg: &str| -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&debs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {pkg}_*.deb expected in {}",
            debs.display()
        );
        found.pop().unwrap()
    };

    // Control fields.
    let core = deb_of(CORE_PACKAGE);
    assert_eq!(field_of(&core, "Conflicts"), "rootlesskit");
    assert_eq!(field_of(&core, "Replaces"), "rootlesskit");
    assert!(field_of(&core, "Depends").contains("uidmap"));
    let version = field_of(&core, "Version");
    for d in drivers() {
        let deb = deb_of(&d.package);
        let depends = field_of(&deb, "Depends");
        assert!(
            depends.contains(&format!("{CORE_PACKAGE} (= {version})")),
            "{}: Depends {depends:?} lacks the core",
            d.package
        );
        if !d.depends.is_empty() {
            assert!(
                depends.contains(&d.depends),
                "{}: Depends {depends:?} lacks {}",
                d.package,
                d.depends
            );
        }
        let suggests = field_of(&deb, "Suggests");
        assert_eq!(suggests, d.suggests, "{}: Suggests", d.package);
        for program in ["slirp4netns", "passt", "lxc", "vpnkit"] {
            let expected = d.depends.contains(program);
            assert_eq!(
                depends
                    .split(", ")
                    .any(|x| x.split_whitespace().next() == Some(program)),
                expected,
                "{}: Depends {depends:?} and {program}",
                d.package
            );
        }
    }
    let expect_program = |net: &str, program: &str| {
        let d = drivers().into_iter().find(|d| d.net == net).unwrap();
        let deb = deb_of(&d.package);
        let (deps, sugg) = (field_of(&deb, "Depends"), field_of(&deb, "Suggests"));
        (deps.contains(program), sugg.contains(program))
    };
    assert_eq!(expect_program("slirp4netns", "slirp4netns"), (true, false));
    assert_eq!(expect_program("pasta", "passt"), (true, false));
    assert_eq!(expect_program("lxc-user-nic", "lxc"), (true, false));
    assert_eq!(expect_program("vpnkit", "vpnkit"), (false, true));

    // The core alone: no driver, and the message names the package.
    let root = user_temp_dir("deb-root");
    let unpack = |deb: &Path| {
        run({
            let mut c = Command::new("dpkg-deb");
            c.arg("-x").arg(deb).arg(&root);
            c
        });
    };
    unpack(&core);
    let bin = root.join("usr/bin");
    let libexec = root.join("usr/libexec/rootlesskit");
    let out = installed_rootlesskit(&bin, &["--list-drivers"]);
    assert!(
        out.status.success(),
        "--list-drivers with no driver failed: {}",
        stderr(&out)
    );
    assert_eq!(
        listed(&out),
        Vec::<(String, String)>::new(),
        "the core alone lists drivers:\n{}",
        stdout(&out)
    );
    for d in drivers() {
        let out = installed_rootlesskit(&bin, &[&format!("--net={}", d.net), "--", "true"]);
        expect_failure(&out, &d.package);
    }

    // Then each driver package: it is listed from ../libexec/rootlesskit,
    // and the drivers not yet installed still name their packages.
    let all = drivers();
    for (i, d) in all.iter().enumerate() {
        unpack(&deb_of(&d.package));
        let out = installed_rootlesskit(&bin, &["--list-drivers"]);
        assert!(
            out.status.success(),
            "--list-drivers after {} failed: {}",
            d.package,
            stderr(&out)
        );
        let found = listed(&out);
        assert_eq!(found.len(), i + 1, "after {}:\n{}", d.package, stdout(&out));
        for done in &all[..=i] {
            let want = libexec.join(&done.binary);
            assert!(
                found.iter().any(|(_, p)| Path::new(p) == want),
                "{} not listed from {} after installing {}:\n{}",
                done.binary,
                want.display(),
                d.package,
                stdout(&out)
            );
        }
        for missing in &all[i + 1..] {
            let out =
                installed_rootlesskit(&bin, &[&format!("--net={}", missing.net), "--", "true"]);
            expect_failure(&out, &missing.package);
        }
    }

    // dpkg itself accepts them: installed into an empty package database
    // (dependencies outside it forced), listed as installed, and removed
    // again without leaving a file behind.
    if is_root() {
        let db_root = user_temp_dir("dpkg-root");
        for d in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
        ] {
            std::fs::create_dir_all(db_root.join(d)).unwrap();
        }
        std::fs::write(db_root.join("var/lib/dpkg/status"), "").unwrap();
        let root_arg = format!("--root={}", db_root.display());
        let mut packages: Vec<String> = vec![CORE_PACKAGE.to_owned()];
        packages.extend(drivers().into_iter().map(|d| d.package));
        run({
            let mut c = Command::new("dpkg");
            c.args([
                &root_arg,
                "--force-depends",
                "--force-script-chrootless",
                "--install",
            ]);
            c.args(packages.iter().map(|p| deb_of(p)));
            c
        });
        let status = std::fs::read_to_string(db_root.join("var/lib/dpkg/status")).unwrap();
        for p in &packages {
            assert!(
                status.contains(&format!("Package: {p}\nStatus: install ok installed")),
                "dpkg does not list {p} as installed:\n{status}"
            );
        }
        assert!(db_root.join("usr/libexec/rootlesskit/rk-gvtap").is_file());
        run({
            let mut c = Command::new("dpkg");
            c.args([&root_arg, "--force-script-chrootless", "--remove"]);
            c.args(&packages);
            c
        });
        let left = Command::new("find")
            .arg(db_root.join("usr"))
            .args(["-type", "f"])
            .output()
            .unwrap();
        assert_eq!(stdout(&left), "", "dpkg --remove left files behind");
    }

    // The installed tree really works: a child networked by the packaged
    // userspace driver, which needs no external program.
    let out = installed_rootlesskit(
        &bin,
        &[
            "--net=gvisor-tap-vsock",
            "--disable-host-loopback",
            "--",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "tap0",
        ],
    );
    assert!(
        out.status.success(),
        "rootlesskit from the packages failed: {}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("inet 10.0.2.100/24"),
        "tap0 in the child has not the driver's address: {}",
        stdout(&out)
    );
}

#[test]
fn man_pages_render_without_macro_errors() {
    let Ok(groff) = Command::new("groff").arg("--version").output() else {
        panic!("groff is missing: the man pages cannot be checked (apt-get install groff-base)");
    };
    assert!(groff.status.success());
    let b = built("man");
    let mut pages = 0;
    for section in ["man1", "man7"] {
        for e in std::fs::read_dir(b.gen.join("man").join(section))
            .unwrap()
            .flatten()
        {
            let out = run({
                let mut c = Command::new("groff");
                c.args(["-t", "-man", "-Tutf8", "-Ww", "-wmac", "-z"])
                    .arg(e.path());
                c
            });
            assert_eq!(
                stderr(&out),
                "",
                "groff complains about {}",
                e.path().display()
            );
            pages += 1;
        }
    }
    assert_eq!(
        pages,
        drivers().len() + 3,
        "rootlesskit.1, rootlessctl.1, the protocol page and one per driver"
    );
}

#[test]
fn licence_check_fails_on_a_licence_not_allowed() {
    let docgen = build_dir().join("rootlesskit-docgen");
    let manifest = repo().join("Cargo.toml");
    // The real allow-list passes.
    let mut ok = Command::new(&docgen);
    ok.args(["licences", "--allow"])
        .arg(repo().join("packaging/licences.allow"))
        .arg("--manifest-path")
        .arg(&manifest);
    let out = run(ok);
    assert!(
        stdout(&out).contains("rootlesskit-core"),
        "inventory lacks the core:\n{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("clap "), "inventory lacks clap");
    // Without MIT (many crates are MIT only), it must fail and name one.
    let dir = user_temp_dir("licences");
    let allow = dir.join("allow");
    std::fs::write(&allow, "Apache-2.0\nUnicode-3.0\n").unwrap();
    let out = Command::new(&docgen)
        .args(["licences", "--allow"])
        .arg(&allow)
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the check passed without MIT allowed"
    );
    assert!(
        stderr(&out).contains("(MIT)"),
        "no MIT-only crate named:\n{}",
        stderr(&out)
    );
}

#[test]
fn toolchain_check_refuses_an_old_rustc_and_names_rustup() {
    let script = repo().join("scripts/check-toolchain");
    let fake = user_temp_dir("old-rust");
    for (name, text) in [
        ("rustc", "rustc 1.63.0 (4b91a6ea7 2022-08-08)"),
        ("cargo", "cargo 1.63.0"),
    ] {
        std::fs::write(fake.join(name), format!("#!/bin/sh\necho '{text}'\n")).unwrap();
        chmod(&fake.join(name), 0o755);
    }
    let out = Command::new("bash")
        .arg(&script)
        .env("PATH", format!("{}:/usr/bin:/bin", fake.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "rustc 1.63 accepted");
    let err = stderr(&out);
    assert!(
        err.contains("too old") && err.contains(">= 1.80") && err.contains("rustup"),
        "{err}"
    );

    // No toolchain at all.
    let out = Command::new("bash")
        .arg(&script)
        .env("PATH", "/nonexistent:/bin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no cargo/rustc on PATH"),
        "{}",
        stderr(&out)
    );

    // The toolchain running these tests is recent enough.
    let cargo_dir = Path::new(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let out = Command::new("bash")
        .arg(&script)
        .env("PATH", format!("{}:/usr/bin:/bin", cargo_dir.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
