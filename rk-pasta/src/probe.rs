//! What the installed pasta supports, learnt from `pasta --help` (its
//! options) and `pasta --version` (its release, when the build knows it).
//!
//! passt names releases by date (`2023_11_19.4f1709d`). Some builds, such
//! as Debian 12's, print "unknown version"; the options a release added
//! then still give a lower bound.

use rk_driver::helper::probe::quote_tail;
use rk_driver::helper::{Accept, Env, LongOptions, Program, ProgramError};
use std::fmt;
use std::path::PathBuf;

/// pasta as the user knows it.
pub const PASTA: Program = Program {
    name: "pasta",
    flag: crate::options::BINARY,
    install: "install passt (e.g. apt-get install passt)",
    env: Env::Inherit,
};

/// A passt release date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u16, pub u8, pub u8);

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}_{:02}_{:02}", self.0, self.1, self.2)
    }
}

impl Release {
    /// Finds `YYYY_MM_DD` (upstream: `pasta 2024_10_30.ee7d0b6`) or
    /// `gitYYYYMMDD` (distribution versions: `0.0~git20230309.7c7625d`).
    pub fn find(text: &str) -> Option<Release> {
        let bytes = text.as_bytes();
        let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        let num = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<u16>().ok();
        let make = |y: &[u8], m: &[u8], d: &[u8]| {
            let (y, m, d) = (num(y)?, num(m)?, num(d)?);
            ((2020..3000).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
                .then_some(Release(y, m as u8, d as u8))
        };
        for i in 0..bytes.len() {
            let rest = &bytes[i..];
            if rest.len() >= 10
                && digits(&rest[0..4])
                && rest[4] == b'_'
                && digits(&rest[5..7])
                && rest[7] == b'_'
                && digits(&rest[8..10])
            {
                if let Some(r) = make(&rest[0..4], &rest[5..7], &rest[8..10]) {
                    return Some(r);
                }
            }
            if rest.len() >= 11 && rest.starts_with(b"git") && digits(&rest[3..11]) {
                if let Some(r) = make(&rest[3..7], &rest[7..9], &rest[9..11]) {
                    return Some(r);
                }
            }
        }
        None
    }
}

/// pasta options this driver uses, with the passt release that added them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    Foreground,
    ConfigNet,
    NsIfname,
    Mtu,
    Address,
    Netmask,
    Gateway,
    DnsForward,
    Userns,
    Netns,
    TcpPorts,
    UdpPorts,
    TcpNs,
    UdpNs,
    Ipv4Only,
    Pid,
    NoMapGw,
    LogFile,
    Stderr,
    NoNetnsQuit,
    HostLoToNsLo,
    /// Not used; its presence tells a release from June 2023 or later.
    NoCopyRoutes,
    /// Not used; its presence tells a release from October 2024 or later.
    MapHostLoopback,
}

impl Opt {
    pub fn name(self) -> &'static str {
        match self {
            Opt::Foreground => "--foreground",
            Opt::ConfigNet => "--config-net",
            Opt::NsIfname => "--ns-ifname",
            Opt::Mtu => "--mtu",
            Opt::Address => "--address",
            Opt::Netmask => "--netmask",
            Opt::Gateway => "--gateway",
            Opt::DnsForward => "--dns-forward",
            Opt::Userns => "--userns",
            Opt::Netns => "--netns",
            Opt::TcpPorts => "--tcp-ports",
            Opt::UdpPorts => "--udp-ports",
            Opt::TcpNs => "--tcp-ns",
            Opt::UdpNs => "--udp-ns",
            Opt::Ipv4Only => "--ipv4-only",
            Opt::Pid => "--pid",
            Opt::NoMapGw => "--no-map-gw",
            Opt::LogFile => "--log-file",
            Opt::Stderr => "--stderr",
            Opt::NoNetnsQuit => "--no-netns-quit",
            Opt::HostLoToNsLo => "--host-lo-to-ns-lo",
            Opt::NoCopyRoutes => "--no-copy-routes",
            Opt::MapHostLoopback => "--map-host-loopback",
        }
    }

    /// The first passt release that has it (from passt's history).
    pub fn since(self) -> Release {
        match self {
            Opt::Foreground
            | Opt::NsIfname
            | Opt::Mtu
            | Opt::Address
            | Opt::Netmask
            | Opt::Gateway
            | Opt::TcpPorts
            | Opt::UdpPorts
            | Opt::TcpNs
            | Opt::UdpNs
            | Opt::Ipv4Only
            | Opt::Stderr => Release(2021, 9, 1),
            Opt::Userns | Opt::Netns => Release(2021, 10, 7),
            Opt::ConfigNet | Opt::Pid | Opt::NoMapGw => Release(2021, 10, 14),
            Opt::DnsForward | Opt::NoNetnsQuit => Release(2022, 2, 21),
            Opt::LogFile => Release(2022, 10, 14),
            Opt::NoCopyRoutes => Release(2023, 6, 3),
            Opt::HostLoToNsLo | Opt::MapHostLoopback => Release(2024, 10, 30),
        }
    }
}

/// Options every use needs.
pub const REQUIRED: [Opt; 15] = [
    Opt::Foreground,
    Opt::ConfigNet,
    Opt::NsIfname,
    Opt::Mtu,
    Opt::Address,
    Opt::Netmask,
    Opt::Gateway,
    Opt::DnsForward,
    Opt::Userns,
    Opt::Netns,
    Opt::TcpPorts,
    Opt::UdpPorts,
    Opt::TcpNs,
    Opt::UdpNs,
    Opt::Pid,
];

/// The release from which pasta's own `-t auto` keeps forwarding TCP ports
/// that are bound after it started (passt commit 418f75a; before it, the
/// periodic scan ran only together with `-T auto`).
pub const TCP_AUTO_SCAN: Release = Release(2023, 3, 21);
/// The release from which `-u auto` rescans UDP ports periodically (before,
/// only ports bound when pasta started were forwarded).
pub const UDP_AUTO_SCAN: Release = Release(2023, 11, 19);
/// Recommended in messages: every feature this driver uses works natively.
pub const RECOMMENDED: Release = UDP_AUTO_SCAN;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(
        "\"{} --help\" printed no options: is it pasta (from passt)? fix --pasta-binary{}",
        path.display(), quote_tail(output)
    )]
    NotPasta { path: PathBuf, output: String },
    #[error(
        "pasta at {} ({version}) lacks {}, which passt has since {}: install a newer passt \
         ({RECOMMENDED} or later is recommended){why}",
        path.display(), opt.name(), opt.since()
    )]
    Missing {
        path: PathBuf,
        version: String,
        opt: Opt,
        /// Why it is needed, when only some flags need it.
        why: String,
    },
}

/// Everything learnt about one pasta binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The resolved path that is run.
    pub path: PathBuf,
    /// Long option names (with dashes) that `--help` mentions.
    options: LongOptions,
    /// The first line of `--version`, e.g. "pasta unknown version".
    pub version_line: Option<String>,
}

impl Probe {
    pub fn from_outputs(path: PathBuf, help: &str, version: Option<&str>) -> Self {
        let options = LongOptions::from_help(help);
        let version_line = version
            .and_then(|v| v.lines().map(str::trim).find(|l| !l.is_empty()))
            .map(str::to_owned);
        Probe {
            path,
            options,
            version_line,
        }
    }

    pub fn has(&self, opt: Opt) -> bool {
        self.options.has(opt.name())
    }

    /// For messages: "pasta 2024_10_30.ee7d0b6" or "pasta unknown version".
    pub fn version_label(&self) -> &str {
        self.version_line.as_deref().unwrap_or("version unknown")
    }

    /// The oldest release this binary can be: its own date if it prints
    /// one, else the newest release whose options it has.
    pub fn at_least(&self) -> Option<Release> {
        let by_options = [Opt::MapHostLoopback, Opt::HostLoToNsLo, Opt::NoCopyRoutes]
            .into_iter()
            .filter(|o| self.has(*o))
            .map(Opt::since)
            .max();
        let by_version = self.version_line.as_deref().and_then(Release::find);
        by_options.max(by_version)
    }

    /// An error unless `opt` is there; `why` explains a conditional need.
    pub fn require(&self, opt: Opt, why: &str) -> Result<(), ProbeError> {
        if self.has(opt) {
            return Ok(());
        }
        Err(ProbeError::Missing {
            path: self.path.clone(),
            version: self.version_label().to_owned(),
            opt,
            why: why.to_owned(),
        })
    }
}

/// Finds `binary` (a path, or a name looked up in `$PATH`) and asks it what
/// it supports.
pub fn probe(binary: &str) -> Result<Probe, ProbeError> {
    // pasta 2023_03_09 exits 1 after printing its --help.
    let answers = PASTA.ask(binary, Accept::AnyExit)?;
    let probe = Probe::from_outputs(
        answers.path.clone(),
        &answers.help,
        answers.version.as_deref(),
    );
    let lower = answers.help.to_ascii_lowercase();
    if probe.options.is_empty() || !(lower.contains("pasta") || lower.contains("passt")) {
        return Err(ProbeError::NotPasta {
            path: answers.path,
            output: answers.help,
        });
    }
    for opt in REQUIRED {
        probe.require(opt, "")?;
    }
    Ok(probe)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `pasta --help` of Debian 12's passt 0.0~git20230309.7c7625d-1, as
    /// recorded (without the "Failed to send ... to syslog" lines).
    pub const HELP_2023_03_09: &str = include_str!("../testdata/help-2023_03_09.txt");

    fn old() -> Probe {
        Probe::from_outputs(
            PathBuf::from("/usr/bin/pasta"),
            HELP_2023_03_09,
            Some("pasta unknown version\nCopyright Red Hat\n"),
        )
    }

    #[test]
    fn options_of_2023_03_09_are_read_whole() {
        let p = old();
        for opt in REQUIRED {
            assert!(p.has(opt), "{}", opt.name());
        }
        for opt in [Opt::NoMapGw, Opt::LogFile, Opt::NoNetnsQuit, Opt::Ipv4Only] {
            assert!(p.has(opt), "{}", opt.name());
        }
        for opt in [Opt::HostLoToNsLo, Opt::NoCopyRoutes, Opt::MapHostLoopback] {
            assert!(!p.has(opt), "{}", opt.name());
        }
        assert!(!p.options.has("--netns-"), "{:?}", p.options);
        assert!(p.options.has("--netns-only"));
    }

    #[test]
    fn release_comes_from_the_version_or_from_options() {
        assert_eq!(old().at_least(), None);
        assert_eq!(old().version_label(), "pasta unknown version");
        let p = Probe::from_outputs(
            PathBuf::from("/p"),
            "--foreground --no-copy-routes",
            Some("pasta unknown version"),
        );
        assert_eq!(p.at_least(), Some(Release(2023, 6, 3)));
        let p = Probe::from_outputs(
            PathBuf::from("/p"),
            "--map-host-loopback ADDR",
            Some("pasta 2025_01_21.4f2c8e7\n"),
        );
        assert_eq!(p.at_least(), Some(Release(2025, 1, 21)));
        let p = Probe::from_outputs(
            PathBuf::from("/p"),
            "--foreground",
            Some("pasta 2023_12_04.b86afe3"),
        );
        assert_eq!(p.at_least(), Some(Release(2023, 12, 4)));
    }

    #[test]
    fn release_dates_are_found_in_both_spellings() {
        assert_eq!(
            Release::find("pasta 2024_10_30.ee7d0b6"),
            Some(Release(2024, 10, 30))
        );
        assert_eq!(
            Release::find("passt 0.0~git20230309.7c7625d-1"),
            Some(Release(2023, 3, 9))
        );
        assert_eq!(Release::find("pasta unknown version"), None);
        assert_eq!(Release::find("9999_99_99"), None);
        assert!(Release(2023, 3, 21) > Release(2023, 3, 9));
        assert_eq!(Release(2023, 3, 9).to_string(), "2023_03_09");
    }

    #[test]
    fn missing_option_error_names_version_and_fix() {
        let p = Probe::from_outputs(
            PathBuf::from("/opt/pasta"),
            "--foreground",
            Some("pasta 2021_12_01.abc"),
        );
        let e = p.require(Opt::DnsForward, "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "pasta at /opt/pasta (pasta 2021_12_01.abc) lacks --dns-forward, which passt has \
             since 2022_02_21: install a newer passt (2023_11_19 or later is recommended)"
        );
    }

    #[test]
    fn probing_a_program_that_is_not_pasta_fails_clearly() {
        let e = probe("/bin/true").unwrap_err();
        assert!(e.to_string().contains("printed no options"), "{e}");
        let e = probe("/nonexistent").unwrap_err();
        assert!(
            matches!(e, ProbeError::Program(ProgramError::Find(_))),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "pasta not found at /nonexistent: install passt (e.g. apt-get install passt) \
             or fix --pasta-binary"
        );
    }

    #[test]
    fn installed_pasta_is_probed_for_real() {
        let p = probe("pasta").expect("pasta (passt) is installed on test machines");
        for opt in REQUIRED {
            assert!(p.has(opt), "{}", opt.name());
        }
    }
}
