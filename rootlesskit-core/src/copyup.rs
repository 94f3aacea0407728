//! `--copy-up=DIR` in tmpfs+symlink mode: DIR becomes a writable tmpfs whose
//! entries are symlinks into the original contents, kept at DIR/.ro*.

use nix::mount::{mount, MsFlags};
use std::path::{Path, PathBuf};

/// Copies up `dir`. Needs the mount namespace's propagation not shared.
pub fn copy_up(dir: &Path) -> Result<(), String> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        format!("copy-up of {}: {what}: {e}", dir.display())
    };
    let staging = nix::unistd::mkdtemp(&std::env::temp_dir().join("rootlesskit-bXXXXXX"))
        .map_err(|e| err("making a staging directory", &e))?;
    let result = copy_up_via(dir, &staging);
    let _ = std::fs::remove_dir(&staging);
    result.map_err(|(what, e)| err(&what, &e))
}

fn copy_up_via(dir: &Path, staging: &Path) -> Result<(), (String, String)> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: nix::Error| (what, e.to_string())
    };
    mount(
        Some(dir),
        staging,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail("bind-mounting the original"))?;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )
    .map_err(fail("mounting tmpfs"))?;
    let ro_name = format!(".ro{}", std::process::id());
    let ro: PathBuf = dir.join(&ro_name);
    std::fs::create_dir(&ro).map_err(|e| ("making the .ro directory".to_owned(), e.to_string()))?;
    mount(
        Some(staging),
        &ro,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(fail("moving the original under .ro"))?;
    let entries =
        std::fs::read_dir(&ro).map_err(|e| ("reading the original".to_owned(), e.to_string()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let is_link = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        // Symlinks keep their own target; everything else points into .ro.
        let target = if is_link {
            std::fs::read_link(e.path()).unwrap_or_else(|_| Path::new(&ro_name).join(&name))
        } else {
            Path::new(&ro_name).join(&name)
        };
        std::os::unix::fs::symlink(&target, dir.join(&name)).map_err(|err| {
            (
                format!("linking {}", dir.join(&name).display()),
                err.to_string(),
            )
        })?;
    }
    Ok(())
}
