//! The network drivers this workspace builds, as a packager sees them: the
//! `--net` name the user types, the executable, the Debian package that
//! carries it and what that package needs. packaging/drivers lists the same
//! for `make deb`; tests/tests/packaging.rs checks that both agree.

pub struct DriverDoc {
    /// The `--net=` value.
    pub net: &'static str,
    /// The executable, installed in `<prefix>/libexec/rootlesskit/`.
    pub binary: &'static str,
    /// The Debian package of `make deb`.
    pub package: &'static str,
    /// One line for NAME.
    pub summary: &'static str,
    /// DESCRIPTION paragraphs.
    pub description: &'static [&'static str],
    /// What must be installed for it to work.
    pub needs: &'static str,
    /// rootlesskit's flags (clap ids) that concern this driver.
    pub flags: &'static [&'static str],
    /// Its document in docs/.
    pub doc: &'static str,
}

const COMMON: [&str; 3] = ["mtu", "detach_netns", "net_opt"];

pub const DRIVERS: [DriverDoc; 5] = [
    DriverDoc {
        net: "slirp4netns",
        binary: "rk-slirp4netns",
        package: "rootlesskit-rs-slirp4netns",
        summary: "rootlesskit network driver for slirp4netns",
        description: &[
            "Gives the child's network namespace a tap device connected to slirp4netns, a user-mode TCP/IP stack that \
             relays the child's connections through the host's sockets. The gateway is 10.0.2.2, the DNS server \
             10.0.2.3 and the child 10.0.2.100 in the default 10.0.2.0/24 network.",
            "With --port-driver=slirp4netns, ports are forwarded through slirp4netns's API socket.",
        ],
        needs: "slirp4netns (0.4 or later; 1.x for --slirp4netns-sandbox and --slirp4netns-seccomp)",
        flags: &[
            "cidr",
            "disable_host_loopback",
            "ipv6",
            "port_driver",
            "slirp4netns_binary",
            "slirp4netns_sandbox",
            "slirp4netns_seccomp",
        ],
        doc: "slirp4netns.md",
    },
    DriverDoc {
        net: "pasta",
        binary: "rk-pasta",
        package: "rootlesskit-rs-pasta",
        summary: "rootlesskit network driver for pasta (passt)",
        description: &[
            "Connects the child's network namespace to the host through pasta, which copies the host's addressing \
             into the namespace and translates between layer-2 frames and the host's sockets.",
            "With --port-driver=implicit, pasta forwards the ports itself.",
        ],
        needs: "pasta, from the passt package",
        flags: &[
            "cidr",
            "ifname",
            "disable_host_loopback",
            "ipv6",
            "port_driver",
            "pasta_binary",
        ],
        doc: "pasta.md",
    },
    DriverDoc {
        net: "vpnkit",
        binary: "rk-vpnkit",
        package: "rootlesskit-rs-vpnkit",
        summary: "rootlesskit network driver for vpnkit",
        description: &[
            "Starts vpnkit and pumps ethernet frames between a tap device in the child's network namespace and \
             vpnkit's ethernet socket (the hyperkit protocol); the address comes from vpnkit's DHCP server.",
        ],
        needs: "vpnkit (not packaged by Debian; gvproxy -listen-vpnkit speaks the same protocol)",
        flags: &["ifname", "vpnkit_binary"],
        doc: "vpnkit.md",
    },
    DriverDoc {
        net: "lxc-user-nic",
        binary: "rk-lxc-user-nic",
        package: "rootlesskit-rs-lxc-user-nic",
        summary: "rootlesskit network driver for lxc-user-nic",
        description: &[
            "Asks the SUID helper lxc-user-nic for a veth pair between a host bridge (lxcbr0 by default) and the \
             child's network namespace, and configures it by DHCP from the bridge's server.",
            "The user needs an entry in /etc/lxc/lxc-usernet, e.g. \"USER veth lxcbr0 10\", and the bridge must be up \
             (lxc-net).",
        ],
        needs: "lxc (the SUID /usr/libexec/lxc/lxc-user-nic and the lxc-net bridge)",
        flags: &["ifname", "lxc_user_nic_binary", "lxc_user_nic_bridge"],
        doc: "lxc-user-nic.md",
    },
    DriverDoc {
        net: "gvisor-tap-vsock",
        binary: "rk-gvtap",
        package: "rootlesskit-rs-gvisor-tap-vsock",
        summary: "rootlesskit network driver gvisor-tap-vsock, a userspace network stack",
        description: &[
            "Runs a userspace TCP/IP stack on a tap device in the child's network namespace, with a NAT that relays \
             the child's TCP, UDP and ICMP echo through the host's own sockets. It needs no external program.",
            "With --port-driver=gvisor-tap-vsock, ports are forwarded into the child through the same stack.",
        ],
        needs: "nothing",
        flags: &["cidr", "disable_host_loopback", "port_driver"],
        doc: "gvisor-tap-vsock.md",
    },
];

impl DriverDoc {
    /// Every rootlesskit flag id shown on the driver's page.
    pub fn flag_ids(&self) -> impl Iterator<Item = &'static str> + '_ {
        COMMON.iter().copied().chain(self.flags.iter().copied())
    }
}
