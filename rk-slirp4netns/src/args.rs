//! The slirp4netns command line.

use crate::plan::Plan;
use rk_driver::plan::RequestedNetwork as Network;
use rk_driver::Ipv4Net;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::Path;

/// The descriptor numbers slirp4netns will find open at exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildFds {
    /// The child's network namespace.
    pub netns: RawFd,
    /// The child's user namespace; `None` when slirp4netns starts inside it
    /// already (the sandbox case).
    pub userns: Option<RawFd>,
    /// Write end of the pipe slirp4netns writes "1" to once it is ready.
    pub ready: RawFd,
    /// Read end of a pipe whose write end this driver holds: slirp4netns
    /// exits when it closes.
    pub exit: RawFd,
}

/// Everything that goes on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    pub mtu: u32,
    /// `None`: slirp4netns's default network (10.0.2.0/24).
    pub cidr: Option<Ipv4Net>,
    pub disable_host_loopback: bool,
    pub sandbox: bool,
    pub seccomp: bool,
    pub ipv6: bool,
    pub api_socket: Option<&'a Path>,
    pub ifname: &'a str,
    pub fds: ChildFds,
}

impl<'a> Invocation<'a> {
    pub fn new(
        net: &'a Network,
        plan: &Plan,
        disable_host_loopback: bool,
        api_socket: Option<&'a Path>,
        fds: ChildFds,
    ) -> Self {
        Invocation {
            mtu: net.mtu,
            cidr: net.custom_cidr.then_some(net.plan.network),
            disable_host_loopback,
            sandbox: plan.sandbox,
            seccomp: plan.seccomp,
            ipv6: net.ipv6.is_some(),
            api_socket,
            ifname: &net.ifname,
            fds,
        }
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |s: String| args.push(s.into());
        if let Some(userns) = self.fds.userns {
            push(format!("--userns-path=/proc/self/fd/{userns}"));
        }
        push("--netns-type=path".to_owned());
        push(format!("--mtu={}", self.mtu));
        if let Some(cidr) = self.cidr {
            push(format!("--cidr={cidr}"));
        }
        if self.disable_host_loopback {
            push("--disable-host-loopback".to_owned());
        }
        if self.sandbox {
            push("--enable-sandbox".to_owned());
        }
        if self.seccomp {
            push("--enable-seccomp".to_owned());
        }
        if self.ipv6 {
            push("--enable-ipv6".to_owned());
        }
        push(format!("--ready-fd={}", self.fds.ready));
        push(format!("--exit-fd={}", self.fds.exit));
        if let Some(socket) = self.api_socket {
            let mut arg = OsString::from("--api-socket=");
            arg.push(socket);
            args.push(arg);
        }
        args.push(format!("/proc/self/fd/{}", self.fds.netns).into());
        args.push(self.ifname.into());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::SHAPE;

    const FDS: ChildFds = ChildFds {
        netns: 4,
        userns: Some(3),
        ready: 5,
        exit: 6,
    };

    fn minimal() -> Invocation<'static> {
        Invocation {
            mtu: 65520,
            cidr: None,
            disable_host_loopback: false,
            sandbox: false,
            seccomp: false,
            ipv6: false,
            api_socket: None,
            ifname: "tap0",
            fds: FDS,
        }
    }

    fn strings(inv: &Invocation<'_>) -> Vec<String> {
        inv.args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn minimal_command_line_passes_namespaces_as_proc_fd_paths() {
        assert_eq!(
            strings(&minimal()),
            [
                "--userns-path=/proc/self/fd/3",
                "--netns-type=path",
                "--mtu=65520",
                "--ready-fd=5",
                "--exit-fd=6",
                "/proc/self/fd/4",
                "tap0",
            ]
        );
    }

    #[test]
    fn every_option_appears_before_the_positional_arguments() {
        let socket = Path::new("/run/user/1000/rk/.s4nn.sock");
        let inv = Invocation {
            mtu: 1500,
            cidr: Some("10.0.2.0/24".parse().unwrap()),
            disable_host_loopback: true,
            sandbox: true,
            seccomp: true,
            ipv6: true,
            api_socket: Some(socket),
            ifname: "eth0",
            fds: ChildFds {
                userns: None,
                ..FDS
            },
        };
        assert_eq!(
            strings(&inv),
            [
                "--netns-type=path",
                "--mtu=1500",
                "--cidr=10.0.2.0/24",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                "--enable-ipv6",
                "--ready-fd=5",
                "--exit-fd=6",
                "--api-socket=/run/user/1000/rk/.s4nn.sock",
                "/proc/self/fd/4",
                "eth0",
            ]
        );
    }

    #[test]
    fn cidr_goes_on_the_command_line_only_when_asked_for() {
        let net = Network::from_request(&Default::default(), &SHAPE).unwrap();
        let plan = Plan {
            sandbox: false,
            seccomp: true,
            notes: vec![],
            warnings: vec![],
        };
        let inv = Invocation::new(&net, &plan, false, None, FDS);
        assert_eq!(inv.cidr, None);
        assert!(inv.seccomp);
        let custom = Network {
            custom_cidr: true,
            ..net.clone()
        };
        assert_eq!(
            Invocation::new(&custom, &plan, false, None, FDS).cidr,
            Some(net.plan.network)
        );
    }
}
