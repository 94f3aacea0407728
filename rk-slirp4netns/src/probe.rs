//! The slirp4netns program: finding it, and learning what it can do from
//! its `--help` and `--version` (through the SDK's helper module).

use rk_driver::helper::{Accept, Env, LongOptions, Program, ProgramError, Version};
use std::path::PathBuf;

/// slirp4netns as the user knows it; it gets only the locale, `PATH` and
/// its own debugging variables.
pub const SLIRP4NETNS: Program = Program {
    name: "slirp4netns",
    flag: crate::options::BINARY,
    install: "install slirp4netns ≥ 0.4",
    env: Env::Only(&["G_MESSAGES_DEBUG", "SLIRP_DEBUG"]),
};

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
        use rk_driver::helper::probe::value_after;
        VersionInfo {
            version: value_after(text, "slirp4netns version"),
            libslirp: value_after(text, "libslirp:"),
            libseccomp: value_after(text, "libseccomp:"),
        }
    }
}

/// Everything learnt about one slirp4netns binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The resolved path that is run.
    pub path: PathBuf,
    pub options: LongOptions,
    pub version: VersionInfo,
}

impl Probe {
    pub fn has(&self, flag: Flag) -> bool {
        self.options.has(flag.name())
    }

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
pub fn probe(binary: &str) -> Result<Probe, ProgramError> {
    let answers = SLIRP4NETNS.ask(binary, Accept::Success)?;
    Ok(Probe {
        options: LongOptions::from_help(&answers.help),
        // A slirp4netns without --version still works; its version is unknown.
        version: answers
            .version
            .map(|text| VersionInfo::from_output(&text))
            .unwrap_or_default(),
        path: answers.path,
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

    pub fn probe_of(help: &str, version: &str) -> Probe {
        Probe {
            path: PathBuf::from("/usr/bin/slirp4netns"),
            options: LongOptions::from_help(help),
            version: VersionInfo {
                version: Some(version.to_owned()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn help_of_1_2_0_offers_every_flag() {
        let p = probe_of(HELP_1_2_0, "1.2.0");
        for flag in ALL_FLAGS {
            assert!(p.has(flag), "{}", flag.name());
        }
    }

    #[test]
    fn help_of_0_3_0_lacks_the_0_4_flags() {
        let p = probe_of(HELP_0_3_0, "0.3.0");
        for flag in ALL_FLAGS {
            assert_eq!(p.has(flag), flag.since() != "0.4", "{}", flag.name());
        }
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
    fn a_missing_binary_names_what_was_looked_for_and_the_fix() {
        let e = probe("no-such-slirp4netns").unwrap_err();
        assert_eq!(
            e.to_string(),
            "slirp4netns not found (looked for \"no-such-slirp4netns\" in the absolute \
             directories of $PATH): install slirp4netns ≥ 0.4 or pass --slirp4netns-binary=PATH"
        );
        let e = probe("/nonexistent/slirp4netns").unwrap_err();
        assert!(e.to_string().contains("fix --slirp4netns-binary"), "{e}");
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
            assert!(p.has(flag), "{}", flag.name());
        }
        assert!(p.numeric_version().unwrap() >= Version(0, 4, 0));
        assert!(p.version.libslirp.is_some());
    }
}
