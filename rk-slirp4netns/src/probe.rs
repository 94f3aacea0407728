//! Learning what a slirp4netns binary can do from its `--help` and
//! `--version`.

use crate::binary::{self, BinaryError};
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

/// The command-line flags this driver cares about, with the slirp4netns
/// release that introduced each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    ReadyFd,
    ExitFd,
    Mtu,
    EnableIpv6,
    Cidr,
    DisableHostLoopback,
    ApiSocket,
    NetnsType,
    UsernsPath,
    EnableSandbox,
    EnableSeccomp,
}

impl Flag {
    pub fn name(self) -> &'static str {
        match self {
            Flag::ReadyFd => "--ready-fd",
            Flag::ExitFd => "--exit-fd",
            Flag::Mtu => "--mtu",
            Flag::EnableIpv6 => "--enable-ipv6",
            Flag::Cidr => "--cidr",
            Flag::DisableHostLoopback => "--disable-host-loopback",
            Flag::ApiSocket => "--api-socket",
            Flag::NetnsType => "--netns-type",
            Flag::UsernsPath => "--userns-path",
            Flag::EnableSandbox => "--enable-sandbox",
            Flag::EnableSeccomp => "--enable-seccomp",
        }
    }

    /// The first slirp4netns release with the flag.
    pub fn since(self) -> &'static str {
        match self {
            Flag::ReadyFd | Flag::ExitFd => "0.1",
            Flag::Mtu | Flag::EnableIpv6 => "0.2",
            Flag::Cidr | Flag::DisableHostLoopback | Flag::ApiSocket => "0.3",
            Flag::NetnsType | Flag::UsernsPath | Flag::EnableSandbox | Flag::EnableSeccomp => "0.4",
        }
    }
}

/// The long options a slirp4netns binary lists in its `--help`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    long_options: BTreeSet<String>,
}

impl Features {
    pub fn from_help(text: &str) -> Self {
        let long_options = text
            .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .filter_map(|word| {
                let name = word.strip_prefix("--")?;
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                (!name.is_empty()).then(|| format!("--{name}"))
            })
            .collect();
        Features { long_options }
    }

    pub fn has(&self, flag: Flag) -> bool {
        self.long_options.contains(flag.name())
    }
}

/// A release number, e.g. 1.2.0 of `1.2.0-beta.1+dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Reads the leading `MAJOR.MINOR[.PATCH]`, ignoring any suffix.
    pub fn parse(text: &str) -> Option<Self> {
        let core = text.split(['-', '+', '~']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().unwrap_or(Some(0))?;
        Some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// What `slirp4netns --version` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionInfo {
    /// As printed, e.g. `1.2.0`.
    pub version: Option<String>,
    pub libslirp: Option<String>,
    pub libseccomp: Option<String>,
}

impl VersionInfo {
    pub fn from_output(text: &str) -> Self {
        let mut info = VersionInfo::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("slirp4netns version") {
                info.version = first_word(rest);
            } else if let Some(rest) = line.strip_prefix("libslirp:") {
                info.libslirp = first_word(rest);
            } else if let Some(rest) = line.strip_prefix("libseccomp:") {
                info.libseccomp = first_word(rest);
            }
        }
        info
    }
}

fn first_word(text: &str) -> Option<String> {
    text.split_whitespace().next().map(str::to_owned)
}

/// Everything learnt about one slirp4netns binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The resolved path that is run.
    pub path: PathBuf,
    pub features: Features,
    pub version: VersionInfo,
}

impl Probe {
    /// The release for messages: `1.2.0`, or `(unknown version)`.
    pub fn version_label(&self) -> &str {
        self.version
            .version
            .as_deref()
            .unwrap_or("(unknown version)")
    }

    pub fn numeric_version(&self) -> Option<Version> {
        self.version.version.as_deref().and_then(Version::parse)
    }
}

/// Finds `binary` (a path, or a name looked up in `$PATH`) and asks it what
/// it supports.
pub fn probe(binary: &str) -> Result<Probe, BinaryError> {
    let path = binary::resolve(binary)?;
    // Both questions at once: each is a process start, and start-up time
    // is what users notice.
    let (help, version) = std::thread::scope(|s| {
        let version = s.spawn(|| binary::run(&path, "--version"));
        let help = binary::run(&path, "--help");
        (help, version.join())
    });
    let help = help?;
    // A slirp4netns without --version still works; its version is unknown.
    let version = version
        .ok()
        .and_then(Result::ok)
        .map(|text| VersionInfo::from_output(&text))
        .unwrap_or_default();
    Ok(Probe {
        features: Features::from_help(&help),
        version,
        path,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `slirp4netns --help` of 1.2.0 (Debian 12), as recorded.
    pub const HELP_1_2_0: &str = include_str!("../testdata/help-1.2.0.txt");
    /// `slirp4netns --help` of 0.3.0, rebuilt from that release's usage().
    pub const HELP_0_3_0: &str = include_str!("../testdata/help-0.3.0.txt");

    const ALL_FLAGS: [Flag; 11] = [
        Flag::ReadyFd,
        Flag::ExitFd,
        Flag::Mtu,
        Flag::EnableIpv6,
        Flag::Cidr,
        Flag::DisableHostLoopback,
        Flag::ApiSocket,
        Flag::NetnsType,
        Flag::UsernsPath,
        Flag::EnableSandbox,
        Flag::EnableSeccomp,
    ];

    #[test]
    fn help_of_1_2_0_offers_every_flag() {
        let f = Features::from_help(HELP_1_2_0);
        for flag in ALL_FLAGS {
            assert!(f.has(flag), "{}", flag.name());
        }
    }

    #[test]
    fn help_of_0_3_0_lacks_the_0_4_flags() {
        let f = Features::from_help(HELP_0_3_0);
        for flag in ALL_FLAGS {
            assert_eq!(f.has(flag), flag.since() != "0.4", "{}", flag.name());
        }
    }

    #[test]
    fn a_flag_is_matched_whole_not_as_a_prefix() {
        let f = Features::from_help("--outbound-addr6=IPv6  --enable-sandboxing\n");
        assert!(!f.has(Flag::EnableSandbox));
        assert!(Features::from_help("--mtu").has(Flag::Mtu));
    }

    #[test]
    fn version_output_of_1_2_0_is_read() {
        let v = VersionInfo::from_output(
            "slirp4netns version 1.2.0\ncommit: 656041d45cfca7a4176f6b7eed9e4fe6c11e8383\n\
             libslirp: 4.7.0\nSLIRP_CONFIG_VERSION_MAX: 4\nlibseccomp: 2.5.4\n",
        );
        assert_eq!(v.version.as_deref(), Some("1.2.0"));
        assert_eq!(v.libslirp.as_deref(), Some("4.7.0"));
        assert_eq!(v.libseccomp.as_deref(), Some("2.5.4"));
    }

    #[test]
    fn version_output_of_0_3_0_has_no_library_lines() {
        let v = VersionInfo::from_output("slirp4netns version 0.3.0\ncommit: 8d8b6b5\n");
        assert_eq!(v.version.as_deref(), Some("0.3.0"));
        assert_eq!(v.libslirp, None);
        assert_eq!(VersionInfo::from_output("garbage"), VersionInfo::default());
    }

    #[test]
    fn release_numbers_compare_and_ignore_suffixes() {
        assert_eq!(Version::parse("1.2.0"), Some(Version(1, 2, 0)));
        assert_eq!(Version::parse("1.1.0-beta.1"), Some(Version(1, 1, 0)));
        assert_eq!(Version::parse("1.2.3+dev"), Some(Version(1, 2, 3)));
        assert_eq!(Version::parse("0.4"), Some(Version(0, 4, 0)));
        assert_eq!(Version::parse("unknown"), None);
        assert_eq!(Version::parse(""), None);
        assert!(Version(1, 2, 0) < Version(1, 2, 1));
        assert!(Version(0, 4, 9) < Version(1, 0, 0));
    }

    #[test]
    fn probing_a_program_that_is_not_slirp4netns_fails_clearly() {
        let e = probe("false").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("--help\" failed"), "{text}");
        assert!(text.contains("--slirp4netns-binary"), "{text}");
    }

    #[test]
    fn installed_slirp4netns_is_probed_for_real() {
        let p = probe("slirp4netns").expect("slirp4netns ≥ 0.4 is installed on test machines");
        for flag in ALL_FLAGS {
            assert!(p.features.has(flag), "{}", flag.name());
        }
        assert!(p.numeric_version().unwrap() >= Version(0, 4, 0));
        assert!(p.version.libslirp.is_some());
    }
}
