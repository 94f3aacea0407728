//! The [`Driver`] implementation: validates the request, probes slirp4netns,
//! starts it and says how the child's interface must look.

use crate::host::Host;
use crate::hostfwd::{HostForwards, PORT_DRIVER};
use crate::launch::{Launch, Slirp};
use crate::options::DriverOptions;
use crate::plan::{self, Plan, Wants, SHAPE};
use crate::probe::{self, Probe};
use rk_driver::plan::RequestedNetwork as Network;
use rk_driver::{
    ConfigureRequest, Context, Driver, DriverError, DriverInfo, NamespaceFds, NetworkConfig,
    PortDriverOffer, PortRule,
};
use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;

pub const CAPABILITIES: [&str; 9] = [
    "ifname",
    "ipv6",
    "cidr",
    "mtu",
    "detach-netns",
    "disable-host-loopback",
    "api-socket",
    "port-driver:slirp4netns",
    "sandbox",
];

/// The slirp4netns network driver: one slirp4netns per configured network.
#[derive(Debug, Default)]
pub struct Slirp4netns {
    running: Option<Slirp>,
    /// Host forwards through slirp4netns's API socket, when it has one.
    forwards: Option<HostForwards>,
}

impl Driver for Slirp4netns {
    fn configure(
        &mut self,
        request: ConfigureRequest,
        namespaces: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError> {
        // rk_driver::serve refuses a second configure: one slirp4netns
        // per driver. Nothing this driver runs (slirp4netns, its probes) may gain
        // privileges; threads started from here on inherit this.
        rk_driver::sandbox::no_new_privs().context("setting no_new_privs")?;
        // Cheap checks first: a bad flag never starts anything.
        let mut options = DriverOptions::parse(&request.options).map_err(user_error)?;
        if request
            .options
            .get(crate::options::PORT_DRIVER_KEY)
            .map(String::as_str)
            == Some(PORT_DRIVER)
        {
            options
                .default_api_socket(&request.state_dir)
                .map_err(user_error)?;
        }
        let network = Network::from_request(&request, &SHAPE).map_err(user_error)?;
        let probe = probe::probe(&options.binary).map_err(user_error)?;
        log::debug!(
            "{} is slirp4netns {} (libslirp {})",
            probe.path.display(),
            probe.version_label(),
            probe.version.libslirp.as_deref().unwrap_or("unknown"),
        );
        let wants = Wants {
            disable_host_loopback: request.disable_host_loopback,
            detach_netns: request.detach_netns,
        };
        let plan = plan::resolve(&network, wants, &options, &probe, &Host::detect())
            .map_err(user_error)?;
        for note in &plan.notes {
            log::debug!("{note}");
        }
        for warning in &plan.warnings {
            log::warn!("{warning}");
        }
        // slirp4netns attaches to it (`IFF_TAP | IFF_NO_PI`, as it asks).
        if let Err(e) = rk_driver::tap::make_persistent(&namespaces, &network.ifname) {
            log::debug!("{e}: slirp4netns makes its own tap");
        }
        let slirp = Launch {
            binary: &probe.path,
            network: &network,
            plan: &plan,
            disable_host_loopback: request.disable_host_loopback,
            api_socket: options.api_socket.as_deref(),
        }
        .start(&namespaces)
        .map_err(user_error)?;
        log::debug!("slirp4netns (pid {}) is ready", slirp.pid());
        self.running = Some(slirp);

        let mut config = network.config();
        config.info = info_map(&probe, &plan, &options);
        if let (Some(socket), Some(ip)) = (&options.api_socket, &config.ipv4) {
            self.forwards = Some(HostForwards::new(socket, &ip.addr().to_string()));
        }
        // Set-up is over: from here on the whole process keeps only what
        // it still does; the thread that drains slirp4netns's output starts
        // after this, inside the Landlock domain.
        let started = std::time::Instant::now();
        let sandbox = crate::confinement::confine();
        log::debug!(
            "sandbox: {sandbox} (applied in {:.2} ms)",
            started.elapsed().as_secs_f64() * 1000.0
        );
        config.info.insert("sandbox".to_owned(), sandbox);
        if let Some(slirp) = self.running.as_mut() {
            if let Err(e) = slirp.follow_output() {
                log::warn!(
                    "cannot start the thread that drains slirp4netns's output ({e}): \
                     slirp4netns may stall once it has written 64 KiB to stderr"
                );
            }
        }
        Ok(config)
    }

    fn info(&self) -> DriverInfo {
        DriverInfo::new("slirp4netns", env!("CARGO_PKG_VERSION"))
            .with_capabilities(&CAPABILITIES)
            .with_options(&crate::options::ALL)
    }

    fn watch(&self) -> Option<BorrowedFd<'_>> {
        self.running.as_ref().map(Slirp::exit_fd)
    }

    fn on_watch(&mut self) -> String {
        match self.running.as_mut() {
            Some(slirp) => slirp.describe_exit(),
            None => "slirp4netns is not running".to_owned(),
        }
    }

    fn shutdown(&mut self) {
        if let Some(mut slirp) = self.running.take() {
            slirp.stop();
        }
    }

    fn start_ports(&mut self, port_driver: &str) -> Result<PortDriverOffer, DriverError> {
        if port_driver != PORT_DRIVER {
            return Err(DriverError::new(format!(
                "this driver offers --port-driver={PORT_DRIVER}, not {port_driver}"
            )));
        }
        if self.forwards.is_none() {
            return Err(DriverError::new(
                "slirp4netns runs without an API socket: it has one when the port-driver option is slirp4netns (--port-driver=slirp4netns), or with --net-opt=slirp4netns-api-socket=PATH",
            ));
        }
        Ok(HostForwards::offer())
    }

    fn add_port(&mut self, rule: &PortRule) -> Result<(), DriverError> {
        match self.forwards.as_mut() {
            Some(f) => f.add(rule),
            None => Err(DriverError::new("slirp4netns runs without an API socket")),
        }
    }

    fn remove_port(&mut self, id: i64) -> Result<(), DriverError> {
        match self.forwards.as_mut() {
            Some(f) => f.remove(id),
            None => Err(DriverError::new("slirp4netns runs without an API socket")),
        }
    }
}

/// An error whose message is already the user's: it names the fix.
fn user_error(e: impl std::fmt::Display) -> DriverError {
    DriverError::new(e.to_string())
}

/// The facts `rootlessctl info` shows.
fn info_map(probe: &Probe, plan: &Plan, options: &DriverOptions) -> BTreeMap<String, String> {
    let mut info = BTreeMap::new();
    let mut put = |k: &str, v: String| info.insert(k.to_owned(), v);
    put("slirp4netns.version", probe.version_label().to_owned());
    put("slirp4netns.path", probe.path.display().to_string());
    if let Some(libslirp) = &probe.version.libslirp {
        put("slirp4netns.libslirp", libslirp.clone());
    }
    put("slirp4netns.sandbox", plan.sandbox.to_string());
    put("slirp4netns.seccomp", plan.seccomp.to_string());
    if let Some(socket) = &options.api_socket {
        put("api_socket", socket.display().to_string());
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::VersionInfo;
    use std::path::PathBuf;

    #[test]
    fn hello_announces_name_capabilities_and_options() {
        let info = Slirp4netns::default().info();
        let named = (info.driver.as_str(), info.version.as_str());
        assert_eq!(named, ("slirp4netns", env!("CARGO_PKG_VERSION")));
        for c in [
            "ipv6",
            "cidr",
            "mtu",
            "detach-netns",
            "disable-host-loopback",
            "sandbox",
        ] {
            assert!(info.capabilities.iter().any(|x| x == c), "{c}");
        }
        assert_eq!(
            info.options,
            [
                "slirp4netns-binary",
                "slirp4netns-sandbox",
                "slirp4netns-seccomp",
                "slirp4netns-api-socket"
            ]
        );
    }

    #[test]
    fn info_map_reports_version_choices_and_api_socket() {
        let probe = Probe {
            path: PathBuf::from("/usr/bin/slirp4netns"),
            options: Default::default(),
            version: VersionInfo {
                version: Some("1.2.0".into()),
                libslirp: Some("4.7.0".into()),
                libseccomp: None,
            },
        };
        let plan = Plan {
            sandbox: true,
            seccomp: false,
            notes: vec![],
            warnings: vec![],
        };
        let mut options = DriverOptions::parse(&BTreeMap::new()).unwrap();
        let info = info_map(&probe, &plan, &options);
        assert_eq!(info["slirp4netns.version"], "1.2.0");
        assert_eq!(info["slirp4netns.libslirp"], "4.7.0");
        assert_eq!(info["slirp4netns.sandbox"], "true");
        assert_eq!(info["slirp4netns.seccomp"], "false");
        assert!(!info.contains_key("api_socket"));
        options.api_socket = Some(PathBuf::from("/run/rk/.s4nn.sock"));
        assert_eq!(
            info_map(&probe, &plan, &options)["api_socket"],
            "/run/rk/.s4nn.sock"
        );
    }
}
