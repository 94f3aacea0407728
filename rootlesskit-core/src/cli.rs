//! Command-line flags, named and defaulted as RootlessKit's so that existing
//! scripts work unchanged.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "rootlesskit",
    disable_version_flag = true,
    about = "Linux-native fakeroot using user namespaces, with pluggable network drivers",
    after_help = "Examples:\n  rootlesskit bash\n  rootlesskit --copy-up=/etc --net=slirp4netns --disable-host-loopback bash\n  rootlesskit --list-drivers",
    trailing_var_arg = true,
    // RootlessKit (urfave/cli) takes the last value of a flag given twice:
    // dockerd-rootless.sh appends $DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS after
    // its own flags to override them.
    args_override_self = true
)]
pub struct Cli {
    /// Print the version of rootlesskit and of each driver found, and exit.
    #[arg(short = 'v', long)]
    pub version: bool,

    /// Debug mode.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub debug: bool,

    /// Print a version component as a decimal integer [major, minor, patch].
    #[arg(long, value_name = "COMPONENT")]
    pub print_semver: Option<String>,

    /// List the network drivers that can be found, with versions, and exit.
    #[arg(long)]
    pub list_drivers: bool,

    /// State directory (default: a private directory under $XDG_RUNTIME_DIR, else /tmp, removed on exit).
    #[arg(long)]
    pub state_dir: Option<String>,

    /// Network driver [host, none, slirp4netns, pasta, vpnkit, lxc-user-nic, gvisor-tap-vsock, or any rk-NAME found].
    #[arg(long, default_value = "host")]
    pub net: String,

    /// MTU for non-host networks (0: the driver's default: 65520 for slirp4netns, pasta and gvisor-tap-vsock, 1500 for others).
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub mtu: String,

    /// CIDR for slirp4netns, pasta and gvisor-tap-vsock networks (default: 10.0.2.0/24).
    #[arg(long)]
    pub cidr: Option<String>,

    /// Network interface name (default: tap0; eth0 for lxc-user-nic).
    #[arg(long)]
    pub ifname: Option<String>,

    /// Prohibit connecting to 127.0.0.1:* on the host namespace.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub disable_host_loopback: bool,

    /// Enable IPv6 routing (slirp4netns, pasta).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub ipv6: bool,

    /// Mount a filesystem and copy-up the contents, e.g. --copy-up=/etc (typically required for non-host networks).
    #[arg(long, value_delimiter = ',')]
    pub copy_up: Vec<String>,

    /// Copy-up mode [tmpfs+symlink].
    #[arg(long, default_value = "tmpfs+symlink")]
    pub copy_up_mode: String,

    /// Port driver [none, builtin, slirp4netns, implicit, gvisor-tap-vsock].
    #[arg(long, default_value = "none")]
    pub port_driver: String,

    /// Publish ports, e.g. 127.0.0.1:8080:80/tcp.
    #[arg(short = 'p', long, value_delimiter = ',')]
    pub publish: Vec<String>,

    /// Let servers inside see the client's source address (builtin port driver).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true")]
    pub source_ip_transparent: bool,

    /// Create a PID namespace.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub pidns: bool,

    /// Create a cgroup namespace.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub cgroupns: bool,

    /// Create a UTS namespace.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub utsns: bool,

    /// Create an IPC namespace.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub ipcns: bool,

    /// Detach the network namespace: CMD stays in the host's network, the new one is at $ROOTLESSKIT_STATE_DIR/netns.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub detach_netns: bool,

    /// Mount propagation [rprivate, rslave].
    #[arg(long, default_value = "rprivate")]
    pub propagation: String,

    /// Process reaper [auto, true, false]; without --pidns the child is a subreaper anyway.
    #[arg(long, default_value = "auto")]
    pub reaper: String,

    /// Evacuate processes into the given cgroup v2 subgroup (requires --pidns and --cgroupns).
    #[arg(long)]
    pub evacuate_cgroup2: Option<String>,

    /// Source of subordinate ids [auto, dynamic (getsubids), static (/etc/subuid, /etc/subgid)].
    #[arg(long, default_value = "auto")]
    pub subid_source: String,

    /// slirp4netns binary for --net=slirp4netns.
    #[arg(long, default_value = "slirp4netns")]
    pub slirp4netns_binary: String,

    /// slirp4netns sandbox [auto, true, false].
    #[arg(long, default_value = "false")]
    pub slirp4netns_sandbox: String,

    /// slirp4netns seccomp [auto, true, false].
    #[arg(long, default_value = "false")]
    pub slirp4netns_seccomp: String,

    /// pasta binary for --net=pasta.
    #[arg(long, default_value = "pasta")]
    pub pasta_binary: String,

    /// vpnkit binary for --net=vpnkit.
    #[arg(long, default_value = "vpnkit")]
    pub vpnkit_binary: String,

    /// lxc-user-nic binary for --net=lxc-user-nic (default: found in the distribution's libexec).
    #[arg(long)]
    pub lxc_user_nic_binary: Option<String>,

    /// lxc-user-nic bridge.
    #[arg(long, default_value = "lxcbr0")]
    pub lxc_user_nic_bridge: String,

    /// Driver-specific option KEY=VALUE passed to the driver as it is (for third-party drivers).
    #[arg(long = "net-opt", value_name = "KEY=VALUE")]
    pub net_opt: Vec<String>,

    /// The command to run inside, and its arguments.
    pub command: Vec<String>,
}

/// RootlessKit's driver-specific flags and the driver option each becomes:
/// (network driver, option key, the flag's value). The only place the core
/// names drivers, besides the `gvisor-tap-vsock` alias. A flag's option is
/// sent to its driver only; `None` (an optional flag not given) sends
/// nothing.
type DriverFlag = (&'static str, &'static str, fn(&Cli) -> Option<String>);

pub const DRIVER_FLAGS: &[DriverFlag] = &[
    ("slirp4netns", "slirp4netns-binary", |c| {
        Some(c.slirp4netns_binary.clone())
    }),
    ("slirp4netns", "slirp4netns-sandbox", |c| {
        Some(tri_state(&c.slirp4netns_sandbox))
    }),
    ("slirp4netns", "slirp4netns-seccomp", |c| {
        Some(tri_state(&c.slirp4netns_seccomp))
    }),
    ("pasta", "pasta-binary", |c| Some(c.pasta_binary.clone())),
    ("vpnkit", "vpnkit-binary", |c| Some(c.vpnkit_binary.clone())),
    ("lxc-user-nic", "lxc-user-nic-binary", |c| {
        c.lxc_user_nic_binary.clone()
    }),
    ("lxc-user-nic", "lxc-user-nic-bridge", |c| {
        Some(c.lxc_user_nic_bridge.clone())
    }),
];

/// Empty is RootlessKit's default of an `auto|true|false` flag: false.
fn tri_state(v: &str) -> String {
    if v.is_empty() { "false" } else { v }.to_owned()
}

impl Cli {
    /// The driver options to pass on: the driver's own flags from
    /// [`DRIVER_FLAGS`] (defaults included), `port-driver`, and `--net-opt`
    /// pairs.
    pub fn driver_options(&self, net: &str) -> Result<Vec<(String, String)>, String> {
        let mut out: Vec<(String, String)> = DRIVER_FLAGS
            .iter()
            .filter(|(driver, _, _)| *driver == net)
            .filter_map(|(_, key, value)| value(self).map(|v| ((*key).to_owned(), v)))
            .collect();
        if !self.port_driver.is_empty() && self.port_driver != "none" {
            out.push(("port-driver".to_owned(), self.port_driver.clone()));
        }
        for kv in &self.net_opt {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(format!("--net-opt {kv:?} is not KEY=VALUE"));
            };
            out.push((k.to_owned(), v.to_owned()));
        }
        Ok(out)
    }
}
