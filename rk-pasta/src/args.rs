//! The command line pasta is started with.

use crate::nspaths::NsPaths;
use crate::probe::{Opt, Probe, ProbeError};
use rk_driver::plan::RequestedNetwork as Network;

/// pasta's log goes to its stderr, which the driver reads: `--log-file`
/// keeps it off syslog (pasta logs there unless told otherwise), and
/// stderr is one of the three descriptors even a pasta that closes
/// inherited ones keeps. Pipes are opened through /proc like files.
const LOG_FILE: &str = "/proc/self/fd/2";
/// pasta writes its pid to stdout, a pipe the driver reads, once the
/// namespace is fully configured: that is the ready signal.
const PID_FILE: &str = "/proc/self/fd/1";

/// Which ports pasta forwards from the host into the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PastaPorts {
    pub tcp: bool,
    pub udp: bool,
}

/// Everything that decides pasta's arguments.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub network: &'a Network,
    pub namespaces: &'a NsPaths,
    pub disable_host_loopback: bool,
    /// pasta's own automatic forwarding (`-t auto`, `-u auto`).
    pub ports: PastaPorts,
    /// How the driver learns that pasta is ready.
    pub ready: Ready,
}

/// How the driver learns that pasta has set the namespace up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ready {
    /// pasta writes its pid (`--pid`) to its stdout, a pipe.
    #[default]
    PidLine,
    /// pasta installs its seccomp filter (seen in `/proc/PID/status`),
    /// which it does after everything else. For a low open-file limit:
    /// pasta fills its socket pools up to the limit before it opens the
    /// `--pid` file, and fails there when the limit is reached.
    Sandboxed,
}

impl Invocation<'_> {
    /// The arguments, after checking that `probe`'s pasta has each option.
    pub fn args(&self, probe: &Probe) -> Result<Vec<String>, ProbeError> {
        let n = self.network;
        let mut args: Vec<String> = Vec::new();
        let mut push = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));
        push(&["--foreground"]);
        if probe.has(Opt::LogFile) {
            push(&["--log-file", LOG_FILE]);
        } else {
            // Older pasta: stderr as well as syslog.
            probe.require(Opt::Stderr, "")?;
            push(&["--stderr"]);
        }
        if self.ready == Ready::PidLine {
            push(&["--pid", PID_FILE]);
        }
        push(&["--ns-ifname", &n.ifname]);
        push(&["--mtu", &n.mtu.to_string()]);
        push(&["--config-net"]);
        push(&["--address", &n.plan.guest.to_string()]);
        push(&["--netmask", &n.plan.network.prefix_len().to_string()]);
        push(&["--gateway", &n.plan.gateway.to_string()]);
        push(&["--dns-forward", &n.plan.dns.to_string()]);
        if self.disable_host_loopback {
            probe.require(Opt::NoMapGw, " (needed for --disable-host-loopback)")?;
            push(&["--no-map-gw"]);
        }
        if n.ipv6.is_none() {
            probe.require(Opt::Ipv4Only, "")?;
            push(&["--ipv4-only"]);
        }
        let auto = |on: bool| if on { "auto" } else { "none" };
        push(&["--tcp-ports", auto(self.ports.tcp)]);
        push(&["--udp-ports", auto(self.ports.udp)]);
        // Not pasta's default (auto): that binds every port the host
        // listens on inside the namespace and splices it to the host's
        // loopback, which would undo --disable-host-loopback and take port
        // numbers away from the command. 10.0.2.2 reaches the host instead.
        push(&["--tcp-ns", "none", "--udp-ns", "none"]);
        if (self.ports.tcp || self.ports.udp) && probe.has(Opt::HostLoToNsLo) {
            // pasta ≥ 2024_10_30 would otherwise deliver connections to
            // the host's 127.0.0.1 through the tap device, missing servers
            // that listen on the namespace's loopback (RootlessKit does the
            // same).
            push(&["--host-lo-to-ns-lo"]);
        }
        if probe.has(Opt::NoNetnsQuit) {
            // The namespace is named by a /proc path, not a file pasta can
            // watch; the driver stops pasta itself.
            push(&["--no-netns-quit"]);
        }
        push(&["--userns", &self.namespaces.userns]);
        push(&["--netns", &self.namespaces.netns]);
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::HELP_2023_03_09;
    use rk_driver::ConfigureRequest;
    use std::path::PathBuf;

    fn network(ipv6: bool) -> Network {
        let request = ConfigureRequest {
            child_pid: 42,
            state_dir: "/s".into(),
            ipv6,
            ..Default::default()
        };
        Network::from_request(&request, &crate::driver::SHAPE).unwrap()
    }

    fn paths() -> NsPaths {
        NsPaths {
            userns: "/proc/42/ns/user".into(),
            netns: "/proc/42/ns/net".into(),
        }
    }

    fn probe(help: &str) -> Probe {
        Probe::from_outputs(
            PathBuf::from("/usr/bin/pasta"),
            help,
            Some("pasta unknown version"),
        )
    }

    #[test]
    fn default_invocation_on_2023_03_09() {
        let net = network(false);
        let ns = paths();
        let args = Invocation {
            network: &net,
            namespaces: &ns,
            disable_host_loopback: true,
            ports: PastaPorts::default(),
            ready: Ready::PidLine,
        }
        .args(&probe(HELP_2023_03_09))
        .unwrap();
        assert_eq!(
            args.join(" "),
            "--foreground --log-file /proc/self/fd/2 --pid /proc/self/fd/1 --ns-ifname tap0 \
             --mtu 65520 --config-net --address 10.0.2.100 --netmask 24 --gateway 10.0.2.2 \
             --dns-forward 10.0.2.3 --no-map-gw --ipv4-only --tcp-ports none --udp-ports none \
             --tcp-ns none --udp-ns none --no-netns-quit --userns /proc/42/ns/user \
             --netns /proc/42/ns/net"
        );
    }

    #[test]
    fn ipv6_and_pasta_forwarding_on_a_newer_pasta() {
        let net = network(true);
        let ns = paths();
        let help = format!("{HELP_2023_03_09}\n  --host-lo-to-ns-lo\n");
        let args = Invocation {
            network: &net,
            namespaces: &ns,
            disable_host_loopback: false,
            ports: PastaPorts {
                tcp: true,
                udp: true,
            },
            ready: Ready::Sandboxed,
        }
        .args(&probe(&help))
        .unwrap()
        .join(" ");
        assert!(!args.contains("--ipv4-only"), "{args}");
        assert!(!args.contains("--no-map-gw"), "{args}");
        assert!(!args.contains("--pid"), "{args}");
        assert!(
            args.contains(
                "--tcp-ports auto --udp-ports auto --tcp-ns none --udp-ns none --host-lo-to-ns-lo"
            ),
            "{args}"
        );
    }

    #[test]
    fn an_old_pasta_logs_to_stderr_and_a_missing_flag_is_named() {
        let net = network(false);
        let ns = paths();
        let inv = Invocation {
            network: &net,
            namespaces: &ns,
            disable_host_loopback: true,
            ports: PastaPorts::default(),
            ready: Ready::PidLine,
        };
        let help = HELP_2023_03_09.replace("--log-file", "--log-xxxx");
        let args = inv.args(&probe(&help)).unwrap().join(" ");
        assert!(args.starts_with("--foreground --stderr --pid"), "{args}");
        let help = HELP_2023_03_09.replace("--no-map-gw", "--no-map-xx");
        let e = inv.args(&probe(&help)).unwrap_err().to_string();
        assert!(
            e.contains("lacks --no-map-gw") && e.ends_with("(needed for --disable-host-loopback)"),
            "{e}"
        );
    }
}
