//! The [`Driver`] implementation: validates the request, probes pasta,
//! starts it and says how the child's interface looks.

use crate::args::{Invocation, PastaPorts};
use crate::launch::Pasta;
use crate::options::{DriverOptions, Ports};
use crate::portfwd::{self, AutoForwarder, Forwarding};
use crate::probe::{self, Probe};
use rk_driver::plan::{RequestedNetwork as Network, Shape};
use rk_driver::{
    ConfigureRequest, Context, Driver, DriverError, DriverInfo, Ipv6Net, NamespaceFds,
    NetworkConfig,
};
use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::os::fd::BorrowedFd;

pub const CAPABILITIES: [&str; 8] = [
    "port-driver:implicit",
    "mtu",
    "cidr",
    "ifname",
    "ipv6",
    "disable-host-loopback",
    "detach-netns",
    "sandbox",
];

/// pasta's network: RootlessKit's user-mode plan (the child at
/// network+100, the gateway at +2, pasta's DNS forwarder at +3); pasta
/// configures the interface itself (`--config-net`) and, with `--ipv6`,
/// copies the host's IPv6 addresses. It refuses an MTU larger than 65520
/// (ETH_MAX_MTU rounded down to 32 bits).
pub const SHAPE: Shape = Shape::user_mode("pasta", 65520);

/// The pasta network driver: one pasta per configured network.
#[derive(Debug, Default)]
pub struct PastaDriver {
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    pasta: Pasta,
    /// The driver's own port forwarding, for what this pasta cannot do.
    _forwarder: Option<AutoForwarder>,
    /// Kept open while pasta runs: a path pasta was given may name them.
    _namespaces: NamespaceFds,
}

/// How long shutdown waits for processes that were killed to be reaped.
const REAP_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Driver for PastaDriver {
    fn configure(
        &mut self,
        request: ConfigureRequest,
        namespaces: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError> {
        let consequence = "the network is not set up";
        crate::contain::run_serving(consequence, || self.configure_network(request, namespaces))
            .unwrap_or_else(|()| {
                Err(DriverError::new(
                    "internal error while setting up the network (see the message above)",
                ))
            })
    }

    fn watch(&self) -> Option<BorrowedFd<'_>> {
        self.running.as_ref().map(|r| r.pasta.exit_fd())
    }

    fn info(&self) -> DriverInfo {
        DriverInfo::new("pasta", env!("CARGO_PKG_VERSION"))
            .with_capabilities(&CAPABILITIES)
            .with_options(&crate::options::ALL)
    }

    fn on_watch(&mut self) -> String {
        match self.running.as_mut() {
            Some(r) => r.pasta.describe_exit(),
            None => "pasta is not running".to_owned(),
        }
    }

    fn shutdown(&mut self) {
        let consequence = "tear-down stops here; pasta dies with the driver";
        let _ = crate::contain::run_serving(consequence, || self.stop_network());
    }
}

impl PastaDriver {
    fn configure_network(
        &mut self,
        request: ConfigureRequest,
        namespaces: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError> {
        #[cfg(debug_assertions)]
        if std::env::var("RK_PASTA_TEST_PANIC").as_deref() == Ok("configure") {
            panic!("RK_PASTA_TEST_PANIC=configure");
        }
        // rk_driver::serve refuses a second configure: one pasta per driver.
        // Cheap checks first: a bad flag never starts anything.
        let options = DriverOptions::parse(&request.options).map_err(user_error)?;
        let network = Network::from_request(&request, &SHAPE).map_err(user_error)?;
        let probe = probe::probe(&options.binary).map_err(user_error)?;
        log::debug!("{} is {}", probe.path.display(), probe.version_label());
        let forwarding = match options.ports {
            Ports::None => Forwarding::default(),
            Ports::Implicit => Forwarding::for_pasta(&probe),
        };
        log::debug!("port forwarding: {forwarding}");
        let ns_paths = crate::nspaths::resolve(
            request.child_pid,
            &request.state_dir,
            request.detach_netns,
            &namespaces,
        );
        let invocation = Invocation {
            network: &network,
            namespaces: &ns_paths,
            disable_host_loopback: request.disable_host_loopback,
            ports: PastaPorts {
                tcp: forwarding.tcp == portfwd::By::Pasta,
                udp: forwarding.udp == portfwd::By::Pasta,
            },
            ready: crate::launch::readiness(),
        };
        let ready = invocation.ready;
        let args = invocation.args(&probe).map_err(user_error)?;
        crate::launch::become_subreaper().context("PR_SET_CHILD_SUBREAPER")?;
        // pasta attaches to it (`IFF_TAP | IFF_NO_PI`, as it asks).
        if let Err(e) = rk_driver::tap::make_persistent(&namespaces, &network.ifname) {
            log::debug!("{e}: pasta makes its own tap");
        }
        let starting = Pasta::spawn(&probe.path, &args, ready).map_err(user_error)?;
        // While pasta sets the namespace up: the forwarder's helper is
        // forked now, with this process still single-threaded.
        let forwarder = forwarding
            .needs_driver()
            .then(|| AutoForwarder::prepare(&namespaces, forwarding))
            .transpose()
            .context("preparing port forwarding")?;
        // From here on this process starts no program: the threads it makes
        // next inherit no_new_privs.
        rk_driver::sandbox::no_new_privs().context("setting no_new_privs")?;
        let mut pasta = starting.wait_ready().map_err(user_error)?;
        log::debug!("pasta (pid {}) is ready", pasta.pid());
        // The answer reads the host's addresses and routes: before the
        // sandbox, which forbids both.
        let mut config = answer(&network, &pasta, &probe, &forwarding)?;
        // Set-up is over: from here on the whole process keeps only what it
        // still does (docs/security.md); the threads that drain pasta's log
        // and forward ports start after this, inside the Landlock domain.
        let started = std::time::Instant::now();
        let sandbox = crate::confinement::confine_driver(forwarder.is_some());
        log::debug!(
            "sandbox: {sandbox} (applied in {:.2} ms)",
            started.elapsed().as_secs_f64() * 1000.0
        );
        config.info.insert("sandbox".to_owned(), sandbox);
        pasta
            .follow_output()
            .context("setting up pasta: log reader thread")?;
        let forwarder = forwarder
            .map(AutoForwarder::start)
            .transpose()
            .context("starting port forwarding")?;

        self.running = Some(Running {
            pasta,
            _forwarder: forwarder,
            _namespaces: namespaces,
        });
        Ok(config)
    }

    fn stop_network(&mut self) {
        let started = std::time::Instant::now();
        if let Some(running) = self.running.take() {
            let Running {
                mut pasta,
                _forwarder: forwarder,
                _namespaces,
            } = running;
            // Everything is signalled first, so that the kernel tears the
            // processes down together; then each is reaped.
            pasta.kill_all();
            if let Some(f) = &forwarder {
                f.kill_helper();
            }
            drop(forwarder);
            log::debug!(
                "forwarder stopped, helper reaped after {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
            pasta.stop();
            log::debug!(
                "pasta reaped after {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        // pasta's own helpers, orphaned by its death, came back to us.
        crate::launch::reap_orphans(REAP_LIMIT);
        log::debug!(
            "stopped and reaped everything in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// An error whose message is already the user's: it names the fix.
fn user_error(e: impl std::fmt::Display) -> DriverError {
    DriverError::new(e.to_string())
}

/// How the child's interface looks, for the core.
fn answer(
    network: &Network,
    pasta: &Pasta,
    probe: &Probe,
    forwarding: &Forwarding,
) -> Result<NetworkConfig, DriverError> {
    let facts = pasta.facts();
    let mut config = NetworkConfig {
        configured_by_driver: true,
        info: info_map(probe, pasta, forwarding),
        // pasta copies IPv6 from the host (below), and its DNS forwarder
        // listens on IPv4 only.
        ipv6: None,
        gateway6: None,
        dns: vec![network.plan.dns.into()],
        ..network.config()
    };
    if network.ipv6.is_some() {
        match (facts.ipv6_address, facts.ipv6_router) {
            (Some(address), router) => {
                config.ipv6 = Some(
                    Ipv6Net::new(address, host_prefix_len(address))
                        .context("the child's IPv6 address")?,
                );
                config.gateway6 = router;
            }
            (None, _) if !host_has_ipv6_default_route() => log::warn!(
                "--ipv6: the host has no IPv6 default route for \
                 pasta to copy, so the namespace has IPv4 only"
            ),
            // pasta configured IPv6 but did not say so in the words this
            // driver reads: the interface is right, only the facts for
            // `rootlessctl info` are missing.
            (None, _) => log::debug!("pasta did not report the IPv6 address it assigned"),
        }
    }
    Ok(config)
}

/// The prefix length of `address` on the host interface pasta copied it
/// from; pasta 2023_03_09 always uses 64 when it copies.
fn host_prefix_len(address: Ipv6Addr) -> u8 {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return 64;
    };
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else {
            continue;
        };
        let (Some(addr), Some(mask)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) else {
            continue;
        };
        if addr.ip() == address {
            return u128::from(mask.ip()).leading_ones() as u8;
        }
    }
    64
}

/// Whether the host has an IPv6 default route (pasta copies IPv6 from the
/// interface that has it).
fn host_has_ipv6_default_route() -> bool {
    std::fs::read_to_string("/proc/net/ipv6_route")
        .map(|table| has_ipv6_default_route(&table))
        .unwrap_or(false)
}

/// Reads `/proc/net/ipv6_route`: destination, prefix length, ..., flags,
/// device; RTF_REJECT (0x200) marks unreachable routes.
fn has_ipv6_default_route(table: &str) -> bool {
    table.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() >= 10
            && f[0].bytes().all(|b| b == b'0')
            && f[1] == "00"
            && f[9] != "lo"
            && u32::from_str_radix(f[8], 16).is_ok_and(|flags| flags & 0x200 == 0)
    })
}

/// The facts `rootlessctl info` shows.
fn info_map(probe: &Probe, pasta: &Pasta, forwarding: &Forwarding) -> BTreeMap<String, String> {
    let mut info = BTreeMap::new();
    let mut put = |k: &str, v: String| info.insert(k.to_owned(), v);
    put("pasta.path", probe.path.display().to_string());
    put("pasta.version", probe.version_label().to_owned());
    put("pasta.pid", pasta.pid().to_string());
    put("port_forwarding", forwarding.to_string());
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_announces_name_capabilities_and_options() {
        let info = PastaDriver::default().info();
        assert_eq!(info.driver, "pasta");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        for c in CAPABILITIES {
            assert!(info.capabilities.iter().any(|x| x == c), "{c}");
        }
        assert_eq!(info.options, ["pasta-binary", "port-driver"]);
    }

    #[test]
    fn ipv6_default_route_is_found_in_the_route_table() {
        let with = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n";
        assert!(has_ipv6_default_route(with));
        let unreachable = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert!(!has_ipv6_default_route(unreachable));
        assert!(!has_ipv6_default_route(""));
    }

    #[test]
    fn prefix_of_an_address_not_on_the_host_is_64() {
        assert_eq!(host_prefix_len("fd99::1234".parse().unwrap()), 64);
        assert_eq!(host_prefix_len(Ipv6Addr::LOCALHOST), 128);
    }

    #[test]
    fn cidr_moves_every_address_and_the_mtu_limit_is_pastas() {
        let req = rk_driver::ConfigureRequest {
            cidr: Some("10.0.3.0/25".parse().unwrap()),
            ..Default::default()
        };
        let n = Network::from_request(&req, &SHAPE).unwrap();
        assert_eq!(n.plan.guest, std::net::Ipv4Addr::new(10, 0, 3, 100));
        assert_eq!(n.plan.gateway, std::net::Ipv4Addr::new(10, 0, 3, 2));
        assert_eq!(n.plan.dns, std::net::Ipv4Addr::new(10, 0, 3, 3));
        let req = rk_driver::ConfigureRequest {
            mtu: Some(65521),
            ..Default::default()
        };
        let e = Network::from_request(&req, &SHAPE).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--mtu=65521 is out of range: pasta takes 68..65520 (default 65520)"
        );
    }
}
