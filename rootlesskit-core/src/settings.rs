//! Validated settings: every flag checked before any namespace exists, so
//! that bad input fails fast and leaves nothing behind.

use crate::cli::Cli;
use rk_driver::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The network mode chosen with `--net`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NetMode {
    /// The host's network namespace.
    Host,
    /// A new network namespace with only `lo`.
    Isolated,
    /// A new network namespace networked by the driver `rk-NAME`.
    Driver(String),
}

impl NetMode {
    pub fn new_netns(&self) -> bool {
        !matches!(self, NetMode::Host)
    }
}

/// Mount propagation of the new mount namespace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Propagation {
    Private,
    RPrivate,
    Slave,
    RSlave,
    Shared,
    RShared,
}

/// Validated settings the parent decides and the child follows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub command: Vec<String>,
    pub net: NetMode,
    /// `--net` as the user typed it, for messages.
    pub net_name: String,
    pub mtu: Option<u32>,
    pub cidr: Option<Ipv4Net>,
    pub ifname: Option<String>,
    pub disable_host_loopback: bool,
    pub ipv6: bool,
    pub detach_netns: bool,
    pub copy_up: Vec<PathBuf>,
    pub propagation: Propagation,
    pub pidns: bool,
    pub cgroupns: bool,
    pub utsns: bool,
    pub ipcns: bool,
    pub reaper: bool,
    pub subid_source: String,
    /// `--evacuate-cgroup2`: the child group the current cgroup's
    /// processes move to.
    pub evacuate_cgroup2: Option<String>,
    /// systemd's `LISTEN_FDS` were addressed to rootlesskit: CMD gets them.
    pub socket_activation: bool,
    pub debug: bool,
    pub state_dir: Option<PathBuf>,
    pub driver_options: Vec<(String, String)>,
    /// `--port-driver`, normalised (`gvisortapvsock` → `gvisor-tap-vsock`).
    pub port_driver: String,
    /// `-p/--publish`, parsed and validated.
    pub publish: Vec<rk_ports::PortSpec>,
    /// `--source-ip-transparent`.
    pub source_ip_transparent: bool,
}

pub type Result<T> = std::result::Result<T, String>;

/// Checks every flag; the error names the flag and the fix.
pub fn validate(cli: &Cli) -> Result<(Settings, Vec<String>)> {
    let mut warnings = Vec::new();
    if cli.command.is_empty() {
        return Err(
            "no command specified: usage is `rootlesskit [flags] [--] COMMAND [ARGS...]`".into(),
        );
    }
    let net = parse_net(&cli.net)?;
    let mtu = parse_mtu(&cli.mtu, cli.ipv6)?;
    // As RootlessKit: an empty value of these means "not given", so that
    // scripts passing `--state-dir="$UNSET"` get the default.
    let cidr = match non_empty(&cli.cidr) {
        Some(c) => Some(parse_cidr(c)?),
        None => None,
    };
    let ifname = non_empty(&cli.ifname).map(str::to_owned);
    if let Some(name) = &ifname {
        check_ifname(name)?;
    }
    match &net {
        NetMode::Host | NetMode::Isolated => {
            let what = if net == NetMode::Host { "host" } else { "none" };
            if cidr.is_some() {
                return Err(format!(
                    "--cidr is not supported for --net={what}: drop it or choose a network driver"
                ));
            }
            if ifname.is_some() {
                return Err(format!("--ifname cannot be specified for --net={what}"));
            }
            if mtu.is_some() {
                warnings.push(format!("--mtu is ignored for --net={what}"));
            }
            if cli.detach_netns && net == NetMode::Host {
                return Err("--detach-netns needs a network namespace: choose a network driver with --net=NAME, not host (rootlesskit --list-drivers lists the installed ones)".into());
            }
        }
        // What a driver honours is read from its hello (capabilities.rs).
        NetMode::Driver(_) => {}
    }
    let propagation = parse_propagation(&cli.propagation)?;
    let copy_up = parse_copy_up(&cli.copy_up, &cli.copy_up_mode, propagation)?;
    let reaper = match cli.reaper.as_str() {
        "auto" => cli.pidns,
        "true" if !cli.pidns => return Err("--reaper=true requires --pidns".into()),
        "true" => true,
        "false" => false,
        other => {
            return Err(format!(
                "--reaper={other:?} is not one of auto, true, false"
            ))
        }
    };
    if !["auto", "dynamic", "static"].contains(&cli.subid_source.as_str()) {
        return Err(format!(
            "--subid-source={:?} is not one of auto, dynamic, static",
            cli.subid_source
        ));
    }
    // A driver's own flags (cli::DRIVER_FLAGS) are checked by that driver.
    let evacuate_cgroup2 = match non_empty(&cli.evacuate_cgroup2) {
        None => None,
        Some(name) => {
            if !cli.cgroupns {
                return Err("--evacuate-cgroup2 requires --cgroupns".into());
            }
            if !cli.pidns {
                return Err("--evacuate-cgroup2 requires --pidns".into());
            }
            if name.contains('/') || name == "." || name == ".." {
                return Err(format!(
                    "--evacuate-cgroup2={name:?}: give the name of a child group (no '/'), e.g. rootlesskit_evacuation"
                ));
            }
            Some(name.to_owned())
        }
    };
    let port_driver = check_port_driver(cli, &net)?;
    let publish = parse_publish(&cli.publish)?;
    let driver_name = match &net {
        NetMode::Driver(n) => n.as_str(),
        _ => "",
    };
    let driver_options = cli.driver_options(driver_name)?;
    let state_dir = non_empty(&cli.state_dir).map(absolute);
    Ok((
        Settings {
            command: cli.command.clone(),
            net,
            net_name: cli.net.clone(),
            mtu,
            cidr,
            ifname,
            disable_host_loopback: cli.disable_host_loopback,
            ipv6: cli.ipv6,
            detach_netns: cli.detach_netns,
            copy_up,
            propagation,
            pidns: cli.pidns,
            cgroupns: cli.cgroupns,
            utsns: cli.utsns,
            ipcns: cli.ipcns,
            reaper,
            subid_source: cli.subid_source.clone(),
            evacuate_cgroup2,
            socket_activation: crate::activation::listen_fds_for_us(),
            debug: cli.debug,
            state_dir,
            driver_options,
            port_driver,
            publish,
            source_ip_transparent: cli.source_ip_transparent,
        },
        warnings,
    ))
}

/// `Some(value)` unless the flag was absent or given as an empty string.
fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn absolute(p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

/// `--net`: `host`, `none`, or a driver name (aliases resolved).
pub fn parse_net(s: &str) -> Result<NetMode> {
    match s {
        "" => Err("unknown network mode \"\" (--net= is empty): choose host, none, or the name of an installed network driver (rootlesskit --list-drivers lists them)".into()),
        "host" => Ok(NetMode::Host),
        "none" => Ok(NetMode::Isolated),
        "gvisor-tap-vsock" | "gvisortapvsock" => Ok(NetMode::Driver("gvtap".into())),
        name => {
            let ok = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                && !name.starts_with('.')
                && !name.starts_with('-');
            if !ok {
                return Err(format!(
                    "--net={name:?} is not a valid driver name (letters, digits, '-', '_', '.')"
                ));
            }
            Ok(NetMode::Driver(name.to_owned()))
        }
    }
}

/// `--mtu`: 0 means the driver's default.
pub fn parse_mtu(s: &str, ipv6: bool) -> Result<Option<u32>> {
    let n: i64 = s.trim().parse().map_err(|_| {
        format!("--mtu={s:?} is not a number: give an MTU between 68 and 65521, or 0 for the driver's default")
    })?;
    let min = if ipv6 { 1280 } else { 68 };
    match n {
        0 => Ok(None),
        n if n < 0 => Err(format!(
            "--mtu={n} is negative: give an MTU between {min} and 65521"
        )),
        n if n > 65521 => Err(format!("--mtu={n} is too large: the largest MTU is 65521")),
        n if n < min => Err(format!(
            "--mtu={n} is too small: the smallest MTU is {min}{}",
            if ipv6 { " with --ipv6" } else { "" }
        )),
        n => Ok(Some(n as u32)),
    }
}

/// An IPv4 network given as `--cidr`: a network address (no host bits).
/// How small a network may be is the driver's to say.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("--cidr={s:?} is not an IPv4 network like 10.0.2.0/24"))?;
    if net.addr() != net.network() {
        return Err(format!(
            "--cidr must be a network address like {}, not like {s}",
            net.trunc()
        ));
    }
    Ok(net)
}

pub fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err("--ifname must not be empty".into());
    }
    if name.len() > 15 {
        return Err(format!(
            "--ifname={name:?} is {} bytes long: Linux interface names have at most 15",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(|c| c.is_whitespace() || c == ':')
    {
        return Err(format!(
            "--ifname={name:?} is not a valid interface name (no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

fn parse_propagation(s: &str) -> Result<Propagation> {
    Ok(match s {
        "private" => Propagation::Private,
        "rprivate" => Propagation::RPrivate,
        "slave" => Propagation::Slave,
        "rslave" => Propagation::RSlave,
        "shared" => Propagation::Shared,
        "rshared" => Propagation::RShared,
        other => {
            return Err(format!(
                "--propagation={other:?} is not one of rprivate, rslave, private, slave, rshared, shared"
            ))
        }
    })
}

fn parse_copy_up(dirs: &[String], mode: &str, prop: Propagation) -> Result<Vec<PathBuf>> {
    if mode != "tmpfs+symlink" {
        return Err(format!(
            "--copy-up-mode={mode:?} is not supported: the only mode is tmpfs+symlink"
        ));
    }
    if !dirs.is_empty() && matches!(prop, Propagation::Shared | Propagation::RShared) {
        return Err(
            "--copy-up does not work with --propagation=shared/rshared: use rslave or rprivate"
                .into(),
        );
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let p = PathBuf::from(d);
        if !p.is_absolute() {
            return Err(format!("--copy-up={d:?} must be an absolute path"));
        }
        let clean: PathBuf = p.components().collect();
        if clean == Path::new("/") || clean == Path::new("/tmp") {
            return Err(format!("--copy-up={d:?}: / and /tmp cannot be copied up"));
        }
        if !clean.is_dir() {
            return Err(format!("--copy-up={d:?} is not a directory"));
        }
        if !out.contains(&clean) {
            out.push(clean);
        }
    }
    Ok(out)
}

/// `--port-driver` against `--net` and `-p`, as far as the core knows
/// without the driver: its own port drivers (`none`, `builtin`) and that
/// others need a network driver. Whether that driver offers the name is
/// read from its hello (capabilities.rs). Returns the normalised name.
fn check_port_driver(cli: &Cli, net: &NetMode) -> Result<String> {
    let name = match cli.port_driver.as_str() {
        "" => return Err("--port-driver= is empty: choose none, builtin, or a port driver your network driver offers (rootlesskit --list-drivers shows them)".into()),
        // RootlessKit's spelling of the alias.
        "gvisortapvsock" => "gvisor-tap-vsock",
        other => other,
    };
    match (name, net) {
        ("none", _) if !cli.publish.is_empty() => Err("-p/--publish needs a port driver: add --port-driver=builtin (or one your network driver offers)".into()),
        ("none", _) => Ok(name.to_owned()),
        ("builtin", NetMode::Host) => Err("--port-driver=builtin needs a network namespace, but --net=host shares the host's: choose a network driver (--net=NAME; rootlesskit --list-drivers lists them) or --port-driver=none".into()),
        ("builtin", _) => Ok(name.to_owned()),
        (other, NetMode::Host | NetMode::Isolated) => Err(format!(
            "--port-driver={other} is offered by network drivers, and --net={} has none: use --port-driver=builtin, or choose a network driver that offers it",
            cli.net
        )),
        (other, NetMode::Driver(_)) => {
            if !other.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("--port-driver={other:?} is not a valid port driver name"));
            }
            Ok(other.to_owned())
        }
    }
}

/// `-p` values: parsed and checked alone and against each other.
fn parse_publish(specs: &[String]) -> Result<Vec<rk_ports::PortSpec>> {
    let mut out: Vec<rk_ports::PortSpec> = Vec::new();
    for s in specs {
        let spec = rk_ports::PortSpec::parse(s).map_err(|e| format!("-p {s}: {e}"))?;
        spec.validate().map_err(|e| format!("-p {s}: {e}"))?;
        if let Some(other) = out.iter().find(|o| {
            o.proto == spec.proto
                && o.parent_ip == spec.parent_ip
                && o.parent_port == spec.parent_port
        }) {
            return Err(format!(
                "-p {s}: the same host port is published twice (also by {}:{}:{}/{})",
                other.parent_ip, other.parent_port, other.child_port, other.proto
            ));
        }
        out.push(spec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_bounds_and_messages() {
        assert_eq!(parse_mtu("0", false), Ok(None));
        assert_eq!(parse_mtu("1500", false), Ok(Some(1500)));
        assert_eq!(parse_mtu("65521", false), Ok(Some(65521)));
        assert!(parse_mtu("65522", false).unwrap_err().contains("too large"));
        assert!(parse_mtu("67", false).unwrap_err().contains("too small"));
        assert!(parse_mtu("1000", true).unwrap_err().contains("1280"));
        assert!(parse_mtu("abc", false)
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_mtu("-5", false).unwrap_err().contains("negative"));
    }

    #[test]
    fn cidr_must_be_an_ipv4_network_address() {
        assert_eq!(
            parse_cidr("10.0.3.0/24"),
            Ok("10.0.3.0/24".parse().unwrap())
        );
        assert!(parse_cidr("10.0.2.100/24")
            .unwrap_err()
            .contains("network address"));
        // How small a network may be is the driver's to say.
        assert!(parse_cidr("10.0.2.0/26").is_ok());
        assert!(parse_cidr("fd00::/64").is_err());
        assert!(parse_cidr("10.0.2.0").is_err());
        assert!(parse_cidr("10.0.2.0/33").is_err());
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("tap0").is_ok());
        assert!(check_ifname("a23456789012345").is_ok());
        assert!(check_ifname("a234567890123456").unwrap_err().contains("15"));
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("").is_err());
    }

    #[test]
    fn net_aliases() {
        assert_eq!(
            parse_net("gvisor-tap-vsock"),
            Ok(NetMode::Driver("gvtap".into()))
        );
        assert_eq!(parse_net("host"), Ok(NetMode::Host));
        assert_eq!(parse_net("none"), Ok(NetMode::Isolated));
        assert!(parse_net("../x").is_err());
        assert!(parse_net("").unwrap_err().contains("unknown network mode"));
    }
}
