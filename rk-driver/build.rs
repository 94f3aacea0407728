//! Records the git commit the workspace is built from, so that every
//! binary (`rootlesskit --version`, `--list-drivers`) can say it. A build
//! outside a git checkout (a release tarball) takes `RK_GIT_COMMIT` from
//! the environment, else says `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RK_GIT_COMMIT");
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = top.join(".git");
    if git.is_dir() {
        println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
        println!(
            "cargo:rerun-if-changed={}",
            git.join("refs/heads").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            git.join("packed-refs").display()
        );
    }
    let from_git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&top)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let commit = std::env::var("RK_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or(from_git)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RK_GIT_COMMIT={commit}");
}
