//! Deciding what to ask of slirp4netns: which features the request needs,
//! whether the probed binary has them, and what `auto` turns into.

use crate::host::Host;
use crate::options::{DriverOptions, Mode, API_SOCKET, SANDBOX, SECCOMP};
use crate::probe::{Flag, Probe};
use rk_driver::helper::Version;
use rk_driver::plan::{RequestedNetwork as Network, Shape};
use std::path::PathBuf;

/// The first release whose sandbox also binds an `/etc/resolv.conf` that
/// links outside `/etc` and `/run` (before it, DNS breaks in the sandbox).
const SANDBOX_RESOLV_FIX: Version = Version(1, 2, 1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "slirp4netns {version} at {path} lacks {flag}, which {wanted_by} needs: \
         install slirp4netns ≥ {since}{remedy}",
        path = path.display(), flag = flag.name(), since = flag.since()
    )]
    Unsupported {
        path: PathBuf,
        version: String,
        flag: Flag,
        wanted_by: String,
        /// How to do without, e.g. ` or use --slirp4netns-sandbox=auto`.
        remedy: String,
    },
    #[error(
        "--{SECCOMP}=true: this kernel has no seccomp filters (CONFIG_SECCOMP_FILTER): \
         use --{SECCOMP}=auto or false"
    )]
    KernelSeccomp,
}

/// slirp4netns's network: RootlessKit's user-mode plan (gateway at
/// network+2, DNS forwarder at +3, the guest at +100; with `--enable-ipv6`
/// `fd00::/64`, gateway `fd00::2`, DNS `fd00::3`); slirp4netns refuses an
/// MTU larger than 65521.
pub const SHAPE: Shape = Shape::user_mode("slirp4netns", 65521);

/// What the request, the options and the binary settle on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `--enable-sandbox`.
    pub sandbox: bool,
    /// `--enable-seccomp`.
    pub seccomp: bool,
    /// Why `auto` went the way it did, for the debug log.
    pub notes: Vec<String>,
    /// Things the user should know even without `--debug`.
    pub warnings: Vec<String>,
}

/// What the request asks of slirp4netns beyond the network itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wants {
    pub disable_host_loopback: bool,
    pub detach_netns: bool,
}

pub fn resolve(
    net: &Network,
    wants: Wants,
    options: &DriverOptions,
    probe: &Probe,
    host: &Host,
) -> Result<Plan, PlanError> {
    let require = |flag: Flag, wanted_by: &str, remedy: &str| {
        if probe.has(flag) {
            Ok(())
        } else {
            Err(PlanError::Unsupported {
                path: probe.path.clone(),
                version: probe.version_label().to_owned(),
                flag,
                wanted_by: wanted_by.to_owned(),
                remedy: remedy.to_owned(),
            })
        }
    };
    // Namespaces are passed as /proc/self/fd paths, which needs 0.4.
    for flag in [
        Flag::NetnsType,
        Flag::UsernsPath,
        Flag::ReadyFd,
        Flag::ExitFd,
        Flag::Mtu,
    ] {
        require(flag, "rootlesskit", "")?;
    }
    if net.custom_cidr {
        require(Flag::Cidr, "--cidr", " or drop --cidr")?;
    }
    if net.ipv6.is_some() {
        require(Flag::EnableIpv6, "--ipv6", " or drop --ipv6")?;
    }
    if wants.disable_host_loopback {
        require(
            Flag::DisableHostLoopback,
            "--disable-host-loopback",
            " or drop --disable-host-loopback",
        )?;
    }
    if options.api_socket.is_some() {
        require(
            Flag::ApiSocket,
            &format!("--{API_SOCKET} (the slirp4netns port driver)"),
            " or use --port-driver=builtin",
        )?;
    }

    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let sandbox = match options.sandbox {
        Mode::Off => false,
        Mode::On => {
            require(
                Flag::EnableSandbox,
                &format!("--{SANDBOX}=true"),
                &format!(" or use --{SANDBOX}=auto"),
            )?;
            if let Some(why) = sandbox_breaks_dns(probe, host) {
                warnings.push(format!("--{SANDBOX}=true: {why}"));
            }
            true
        }
        Mode::Auto if !probe.has(Flag::EnableSandbox) => {
            notes.push(format!(
                "sandbox off: slirp4netns {} lacks --enable-sandbox",
                probe.version_label()
            ));
            false
        }
        Mode::Auto => match sandbox_breaks_dns(probe, host) {
            Some(why) => {
                notes.push(format!("sandbox off: {why}"));
                false
            }
            None => true,
        },
    };
    if sandbox && wants.detach_netns {
        // slirp4netns issue #317 (RootlessKit refuses this combination) is
        // avoided by entering the user namespace before exec.
        notes.push(
            "sandbox with --detach-netns: slirp4netns starts inside the child's user \
             namespace (works around slirp4netns#317)"
                .to_owned(),
        );
    }

    let seccomp = match options.seccomp {
        Mode::Off => false,
        Mode::On => {
            require(
                Flag::EnableSeccomp,
                &format!("--{SECCOMP}=true"),
                &format!(" or use --{SECCOMP}=auto"),
            )?;
            if !host.kernel_seccomp {
                return Err(PlanError::KernelSeccomp);
            }
            true
        }
        Mode::Auto if !probe.has(Flag::EnableSeccomp) => {
            notes.push(format!(
                "seccomp off: slirp4netns {} lacks --enable-seccomp",
                probe.version_label()
            ));
            false
        }
        Mode::Auto if !host.kernel_seccomp => {
            notes.push("seccomp off: the kernel has no seccomp filters".to_owned());
            false
        }
        Mode::Auto => true,
    };
    Ok(Plan {
        sandbox,
        seccomp,
        notes,
        warnings,
    })
}

/// Why DNS would not work inside slirp4netns's sandbox, if it would not.
fn sandbox_breaks_dns(probe: &Probe, host: &Host) -> Option<String> {
    let real = host.escaped_resolv_conf.as_ref()?;
    let fixed = probe
        .numeric_version()
        .is_some_and(|v| v >= SANDBOX_RESOLV_FIX);
    (!fixed).then(|| {
        format!(
            "/etc/resolv.conf links to {}, outside /etc and /run, which the sandbox of \
             slirp4netns {} hides (DNS would fail; fixed in {SANDBOX_RESOLV_FIX})",
            real.display(),
            probe.version_label()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::{probe_of, HELP_0_3_0, HELP_1_2_0};

    /// A 0.4.0 whose help lacks the given flags.
    fn probe_without(flag: &str) -> Probe {
        let help: String = HELP_1_2_0
            .lines()
            .filter(|l| !l.contains(flag))
            .map(|l| format!("{l}\n"))
            .collect();
        probe_of(&help, "0.4.0")
    }

    /// One decision: a default request, 1.2.0, a kernel with seccomp.
    struct Case {
        net: Network,
        wants: Wants,
        options: DriverOptions,
        probe: Probe,
        host: Host,
    }

    fn case() -> Case {
        Case {
            net: Network::from_request(&Default::default(), &SHAPE).unwrap(),
            wants: Wants::default(),
            options: DriverOptions::parse(&Default::default()).unwrap(),
            probe: probe_of(HELP_1_2_0, "1.2.0"),
            host: Host {
                kernel_seccomp: true,
                escaped_resolv_conf: None,
            },
        }
    }

    impl Case {
        fn sandbox(mut self, mode: Mode) -> Self {
            self.options.sandbox = mode;
            self
        }
        fn seccomp(mut self, mode: Mode) -> Self {
            self.options.seccomp = mode;
            self
        }
        fn probe(mut self, probe: Probe) -> Self {
            self.probe = probe;
            self
        }
        fn plan(&self) -> Plan {
            self.result().unwrap()
        }
        fn error(&self) -> String {
            self.result().unwrap_err().to_string()
        }
        fn result(&self) -> Result<Plan, PlanError> {
            resolve(
                &self.net,
                self.wants,
                &self.options,
                &self.probe,
                &self.host,
            )
        }
    }

    #[test]
    fn auto_turns_sandbox_and_seccomp_on_when_supported() {
        let plan = case().plan();
        assert!(plan.sandbox && plan.seccomp);
        assert!(plan.notes.is_empty() && plan.warnings.is_empty());
    }

    #[test]
    fn false_turns_them_off() {
        let plan = case().sandbox(Mode::Off).seccomp(Mode::Off).plan();
        assert!(!plan.sandbox && !plan.seccomp);
    }

    #[test]
    fn slirp4netns_older_than_0_4_is_refused_naming_the_version_needed() {
        assert_eq!(
            case().probe(probe_of(HELP_0_3_0, "0.3.0")).error(),
            "slirp4netns 0.3.0 at /usr/bin/slirp4netns lacks --netns-type, which rootlesskit \
             needs: install slirp4netns ≥ 0.4"
        );
    }

    #[test]
    fn sandbox_true_without_support_is_an_error_auto_is_off() {
        let without = case().probe(probe_without("--enable-sandbox"));
        let plan = without.plan();
        assert!(!plan.sandbox && plan.seccomp);
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert_eq!(
            without.sandbox(Mode::On).error(),
            "slirp4netns 0.4.0 at /usr/bin/slirp4netns lacks --enable-sandbox, which \
             --slirp4netns-sandbox=true needs: install slirp4netns ≥ 0.4 or use \
             --slirp4netns-sandbox=auto"
        );
    }

    #[test]
    fn seccomp_needs_both_the_flag_and_the_kernel() {
        let mut no_kernel = case();
        no_kernel.host.kernel_seccomp = false;
        assert!(!no_kernel.plan().seccomp);
        assert_eq!(
            no_kernel.seccomp(Mode::On).result(),
            Err(PlanError::KernelSeccomp)
        );
        let without = case().probe(probe_without("--enable-seccomp"));
        assert!(!without.plan().seccomp);
        assert!(without
            .seccomp(Mode::On)
            .error()
            .contains("lacks --enable-seccomp"));
    }

    #[test]
    fn requested_features_must_be_present() {
        let mut ipv6 = case().probe(probe_without("--enable-ipv6"));
        assert!(ipv6.result().is_ok());
        ipv6.net.ipv6 = Some(rk_driver::plan::Ipv6Plan::new(2, 3));
        assert!(ipv6
            .error()
            .contains("lacks --enable-ipv6, which --ipv6 needs"));

        let mut cidr = case().probe(probe_without("--cidr"));
        assert!(cidr.result().is_ok());
        cidr.net.custom_cidr = true;
        assert!(cidr.error().ends_with("or drop --cidr"));

        let mut loopback = case().probe(probe_without("--disable-host-loopback"));
        assert!(loopback.result().is_ok());
        loopback.wants.disable_host_loopback = true;
        assert!(loopback.result().is_err());

        let mut api = case().probe(probe_without("--api-socket"));
        assert!(api.result().is_ok());
        api.options.api_socket = Some(PathBuf::from("/tmp/s.sock"));
        assert!(api.error().contains("--slirp4netns-api-socket"));
    }

    #[test]
    fn sandbox_stays_available_with_detach_netns() {
        let mut detached = case().sandbox(Mode::On);
        detached.wants.detach_netns = true;
        assert!(detached.plan().sandbox);
    }

    #[test]
    fn auto_avoids_the_sandbox_when_it_would_hide_resolv_conf() {
        let mut old = case();
        old.host.escaped_resolv_conf = Some(PathBuf::from("/mnt/wsl/resolv.conf"));
        let plan = old.plan();
        assert!(!plan.sandbox);
        assert!(
            plan.notes[0].contains("/mnt/wsl/resolv.conf"),
            "{:?}",
            plan.notes
        );

        let forced = old.sandbox(Mode::On).plan();
        assert!(forced.sandbox);
        assert_eq!(forced.warnings.len(), 1);

        let mut fixed = case().probe(probe_of(HELP_1_2_0, "1.2.1"));
        fixed.host.escaped_resolv_conf = Some(PathBuf::from("/mnt/wsl/resolv.conf"));
        assert!(fixed.plan().sandbox);
    }

    #[test]
    fn defaults_and_limits_are_slirp4netns_s() {
        let req = rk_driver::ConfigureRequest {
            ipv6: true,
            mtu: Some(65521),
            ..Default::default()
        };
        let cfg = Network::from_request(&req, &SHAPE).unwrap().config();
        assert_eq!(cfg.interface, "tap0");
        assert_eq!(cfg.ipv4, Some("10.0.2.100/24".parse().unwrap()));
        assert_eq!(cfg.gateway4, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(cfg.ipv6, Some("fd00::100/64".parse().unwrap()));
        assert_eq!(cfg.gateway6, Some("fd00::2".parse().unwrap()));
        let dns: Vec<String> = cfg.dns.iter().map(ToString::to_string).collect();
        assert_eq!(dns, ["10.0.2.3", "fd00::3"]);
        assert_eq!(cfg.mtu, 65521);
        let too_big = rk_driver::ConfigureRequest {
            mtu: Some(65522),
            ..Default::default()
        };
        let e = Network::from_request(&too_big, &SHAPE).unwrap_err();
        assert!(e.to_string().contains("slirp4netns takes 68..65521"), "{e}");
        let small = rk_driver::ConfigureRequest {
            cidr: Some("10.0.2.0/26".parse().unwrap()),
            ..Default::default()
        };
        assert!(Network::from_request(&small, &SHAPE).is_err());
    }
}
