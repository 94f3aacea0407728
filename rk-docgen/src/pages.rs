//! The man pages and completions: rootlesskit(1) from its clap `Cli`,
//! rootlessctl(1) from its clap `Cli`, a page per driver (the driver's part of
//! rootlesskit's flags), and rootlesskit-driver-protocol(7) from the
//! protocol document.

use crate::drivers::{DriverDoc, DRIVERS};
use crate::markdown;
use crate::roff;
use clap::{Arg, Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use std::fs;
use std::path::Path;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MANUAL: &str = "rootlesskit manual";
/// The name of the protocol page, section 7.
pub const PROTOCOL_PAGE: &str = "rootlesskit-driver-protocol";

pub fn write_all(out: &Path, protocol: &Path) -> Result<(), String> {
    let man1 = out.join("man1");
    let man7 = out.join("man7");
    for d in [&man1, &man7] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let date = source_date();
    write(&man1.join("rootlesskit.1"), &rootlesskit_page(&date)?)?;
    let ctl = rootlessctl::cli::Cli::command();
    write(&man1.join("rootlessctl.1"), &rootlessctl_page(ctl, &date)?)?;
    for d in &DRIVERS {
        write(
            &man1.join(format!("{}.1", d.binary)),
            &driver_page(d, &date)?,
        )?;
    }
    let md = fs::read_to_string(protocol)
        .map_err(|e| format!("cannot read {}: {e}", protocol.display()))?;
    write(
        &man7.join(format!("{PROTOCOL_PAGE}.7")),
        &markdown::to_man(&md, PROTOCOL_PAGE, "7", VERSION, &date),
    )?;
    Ok(())
}

pub fn write_completions(out: &Path) -> Result<(), String> {
    let commands = [
        rootlesskit_core::cli::Cli::command(),
        rootlessctl::cli::Cli::command(),
    ];
    for (shell, dir, file) in [
        (Shell::Bash, "bash", "{}"),
        (Shell::Zsh, "zsh", "_{}"),
        (Shell::Fish, "fish", "{}.fish"),
    ] {
        let dir = out.join(dir);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for cmd in &commands {
            let mut cmd = cmd.clone();
            let name = cmd.get_name().to_owned();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut buf);
            let text = String::from_utf8(buf).map_err(|_| "completion is not UTF-8".to_owned())?;
            write(&dir.join(file.replace("{}", &name)), &text)?;
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn render(man: &Man) -> Result<String, String> {
    let mut buf = Vec::new();
    man.render(&mut buf).map_err(|e| e.to_string())?;
    String::from_utf8(buf).map_err(|_| "page is not UTF-8".to_owned())
}

fn man_of(cmd: Command, date: &str) -> Man {
    Man::new(cmd)
        .section("1")
        .date(date)
        .source(format!("rootlesskit {VERSION}"))
        .manual(MANUAL)
}

fn rootlesskit_page(date: &str) -> Result<String, String> {
    let cmd = rootlesskit_core::cli::Cli::command();
    let mut page = render(&man_of(cmd, date))?;
    roff::section(&mut page, "Drivers");
    roff::paragraph(
        &mut page,
        "--net=host (the default) and --net=none are built in. Every other network is a separate executable \
         rk-NAME, started by rootlesskit and spoken to over the driver protocol (rootlesskit-driver-protocol(7)). \
         rootlesskit --list-drivers shows those found, with versions and capabilities. They are searched, in order, in:",
    );
    for (tag, text) in [
        ("$ROOTLESSKIT_DRIVER_PATH", "a colon-separated list of directories"),
        ("the directory of the rootlesskit executable", ""),
        (
            "../libexec/rootlesskit/ from it",
            "e.g. /usr/libexec/rootlesskit/ for /usr/bin/rootlesskit: where make install and the packages put them",
        ),
        ("$PATH", "absolute entries only"),
    ] {
        roff::tagged(&mut page, tag, text);
    }
    roff::paragraph(
        &mut page,
        "The drivers of this release, each in a package of its own:",
    );
    for d in &DRIVERS {
        roff::tagged(
            &mut page,
            &format!("--net={}", d.net),
            &format!(
                "{} ({}(1)), package {}; needs {}.",
                d.binary, d.binary, d.package, d.needs
            ),
        );
    }
    roff::section(&mut page, "Environment");
    for (name, text) in [
        (
            "ROOTLESSKIT_DRIVER_PATH",
            "Directories searched first for driver executables.",
        ),
        (
            "ROOTLESSKIT_STATE_DIR",
            "Set for COMMAND: the state directory (api.sock for rootlessctl(1), child_pid, lock).",
        ),
        (
            "ROOTLESSKIT_PARENT_EUID, ROOTLESSKIT_PARENT_EGID",
            "Set for COMMAND: the user and group who ran rootlesskit.",
        ),
    ] {
        roff::tagged(&mut page, name, text);
    }
    roff::section(&mut page, "Exit status");
    roff::paragraph(
        &mut page,
        "The exit status of COMMAND; 255 when a signal ended it, as RootlessKit (the message names the signal). \
         1 when rootlesskit itself fails (an unknown flag, a missing driver, a failed namespace set-up): the \
         message on standard error says what to change.",
    );
    roff::section(&mut page, "Requirements");
    roff::paragraph(
        &mut page,
        "Linux with unprivileged user namespaces; newuidmap and newgidmap (package uidmap) and ranges for the user \
         in /etc/subuid and /etc/subgid; /dev/net/tun usable by the user for the tap-based drivers.",
    );
    see_also(
        &mut page,
        &["rootlessctl(1)", &format!("{PROTOCOL_PAGE}(7)")],
        true,
    );
    Ok(page)
}

fn rootlessctl_page(cmd: Command, date: &str) -> Result<String, String> {
    let man = man_of(cmd.clone(), date);
    let mut page = String::new();
    // clap_mangen's list of subcommands points at a page per subcommand;
    // here they are described on this page instead.
    for part in [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ] {
        let mut buf = Vec::new();
        part(&man, &mut buf).map_err(|e| e.to_string())?;
        page.push_str(&String::from_utf8_lossy(&buf));
    }
    roff::section(&mut page, "Commands");
    for sub in cmd.get_subcommands() {
        let bin = format!("rootlessctl {}", sub.get_name());
        let usage = sub
            .clone()
            .bin_name(Box::leak(bin.into_boxed_str()) as &'static str)
            .render_usage()
            .to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        page.push_str(&format!(
            ".SS \"{}\"\n",
            roff::escape(usage).replace('"', "\\(dq")
        ));
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|s| s.to_string());
        if let Some(about) = about {
            roff::paragraph(&mut page, &about);
        }
        for arg in sub.get_arguments() {
            roff::tagged(
                &mut page,
                &arg_tag(arg),
                &arg.get_help().map(|h| h.to_string()).unwrap_or_default(),
            );
        }
    }
    roff::section(&mut page, "Environment");
    roff::tagged(
        &mut page,
        "ROOTLESSKIT_STATE_DIR",
        "The state directory of the rootlesskit to talk to: its api.sock is used when --socket is not given. \
         rootlesskit sets it for the command it runs.",
    );
    roff::section(&mut page, "Examples");
    roff::verbatim(
        &mut page,
        "rootlesskit --net=slirp4netns --port-driver=builtin --state-dir=$XDG_RUNTIME_DIR/rk -- sleep infinity &\n\
         rootlessctl --socket=$XDG_RUNTIME_DIR/rk/api.sock add-ports 127.0.0.1:8080:80/tcp\n\
         rootlessctl --socket=$XDG_RUNTIME_DIR/rk/api.sock list-ports\n\
         rootlessctl --socket=$XDG_RUNTIME_DIR/rk/api.sock remove-ports 1",
    );
    see_also(&mut page, &["rootlesskit(1)"], false);
    Ok(page)
}

fn driver_page(d: &DriverDoc, date: &str) -> Result<String, String> {
    let all = rootlesskit_core::cli::Cli::command();
    let mut flags = Vec::new();
    for id in d.flag_ids() {
        let arg = all
            .get_arguments()
            .find(|a| a.get_id() == id)
            .ok_or_else(|| {
                format!(
                    "rootlesskit has no flag with id {id:?} (named on the page of {})",
                    d.binary
                )
            })?;
        flags.push(
            arg.clone()
                .help_heading("Options of rootlesskit for this driver"),
        );
    }
    let cmd = Command::new(d.binary)
        .about(d.summary)
        .disable_help_flag(true)
        .args(flags);
    let man = man_of(cmd, date);
    let mut page = String::new();
    for part in [Man::render_title, Man::render_name_section] {
        let mut buf = Vec::new();
        part(&man, &mut buf).map_err(|e| e.to_string())?;
        page.push_str(&String::from_utf8_lossy(&buf));
    }
    roff::section(&mut page, "Synopsis");
    page.push_str(&format!(
        "\\fBrootlesskit\\fR \\fB\\-\\-net={}\\fR [\\fIOPTIONS\\fR] [\\-\\-] \\fICOMMAND\\fR [\\fIARGS\\fR]\n",
        roff::escape(d.net)
    ));
    roff::section(&mut page, "Description");
    for p in d.description {
        roff::paragraph(&mut page, p);
    }
    roff::paragraph(
        &mut page,
        &format!(
            "{} is started by rootlesskit(1) for --net={} and speaks the driver protocol ({PROTOCOL_PAGE}(7)) on the \
             descriptor rootlesskit gives it; it is not run by hand, except as \"{} --version\".",
            d.binary, d.net, d.binary
        ),
    );
    let mut buf = Vec::new();
    man.render_options_section(&mut buf)
        .map_err(|e| e.to_string())?;
    page.push_str(&String::from_utf8_lossy(&buf));
    roff::section(&mut page, "Requirements");
    roff::paragraph(&mut page, &format!("Needs {}.", d.needs));
    roff::section(&mut page, "Files");
    roff::tagged(
        &mut page,
        &format!("libexec/rootlesskit/{}", d.binary),
        &format!(
            "Under rootlesskit's installation prefix (/usr/libexec/rootlesskit/{} from the package {}).",
            d.binary, d.package
        ),
    );
    roff::tagged(
        &mut page,
        &format!("doc/rootlesskit-rs/{}", d.doc),
        "Under share/ of the prefix: the driver's full documentation (flags, behaviour, differences from RootlessKit).",
    );
    see_also(
        &mut page,
        &["rootlesskit(1)", &format!("{PROTOCOL_PAGE}(7)")],
        false,
    );
    Ok(page)
}

fn see_also(page: &mut String, pages: &[&str], with_drivers: bool) {
    roff::section(page, "See also");
    let mut all: Vec<String> = pages.iter().map(|p| (*p).to_owned()).collect();
    if with_drivers {
        all.extend(DRIVERS.iter().map(|d| format!("{}(1)", d.binary)));
    }
    page.push_str(".PP\n");
    page.push_str(&roff::escape(&all.join(", ")));
    page.push('\n');
}

/// `-s, --long <VALUE>` or `<VALUE>...` for a tagged paragraph.
fn arg_tag(arg: &Arg) -> String {
    let values: Vec<String> = arg
        .get_value_names()
        .map(|v| v.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    let mut names = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("--{l}"));
    }
    if names.is_empty() {
        let v = values
            .first()
            .cloned()
            .unwrap_or_else(|| arg.get_id().to_string());
        return format!("{v}...");
    }
    let mut tag = names.join(", ");
    if arg.get_action().takes_values() {
        for v in &values {
            tag.push_str(&format!(" <{v}>"));
        }
    }
    tag
}

/// `SOURCE_DATE_EPOCH` as YYYY-MM-DD (reproducible builds); empty without it.
fn source_date() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(|secs| {
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            format!("{y:04}-{m:02}-{d:02}")
        })
        .unwrap_or_default()
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_epoch() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_425), (2025, 12, 3));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn every_driver_page_names_real_flags() {
        for d in &DRIVERS {
            let page = driver_page(d, "2026-01-01").unwrap();
            assert!(
                page.contains(&format!("\\-\\-net={}", roff::escape(d.net))),
                "{page}"
            );
            assert!(page.contains(&roff::escape(d.package)), "{page}");
        }
    }

    #[test]
    fn rootlesskit_page_has_its_flags_and_drivers() {
        let page = rootlesskit_page("").unwrap();
        for needle in [
            "\\-\\-list\\-drivers",
            "\\-\\-copy\\-up",
            "ROOTLESSKIT_DRIVER_PATH",
            "rootlesskit\\-rs\\-pasta",
        ] {
            assert!(page.contains(needle), "missing {needle}");
        }
    }
}
