//! The driver: a veth from lxc-user-nic, configured by DHCP.
//!
//! configure:
//! 1. check the options, lxc-user-nic (setuid root) and the bridge;
//! 2. choose the MAC (stable by default, see `mac`);
//! 3. `lxc-user-nic create` puts a veth into the child's namespace (named
//!    by the child's pid, or by a helper's with `--detach-netns`);
//! 4. inside the namespace: set the MAC, bring the veth up, open the DHCP
//!    and netlink sockets;
//! 5. DHCP until a lease; answer with its address, router and DNS.
//!
//! Then the driver confines itself (`confinement`) and a thread renews
//! the lease. At shutdown the lease is released and the veth deleted; a
//! guard process (confined too) does both if the driver is killed.

use crate::dhcp::{self, Renewer};
use crate::guard::CleanupGuard;
use crate::options::{self, Options};
use crate::usernic::CreatedNic;
use crate::{binary, bridge, confinement, inside, mac, usernic};
use rk_dhcp::{Client, ClientConfig, Lease};
use rk_driver::netlink::{Link, NetlinkSocket};
use rk_driver::nsexec::Resident;
use rk_driver::{
    ConfigureRequest, Context, Driver, DriverError, DriverInfo, Ipv4Net, NamespaceFds,
    NetworkConfig,
};
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct LxcUserNic {
    running: Option<Running>,
}

/// What a configured network holds on to.
#[derive(Debug)]
struct Running {
    renewer: Option<Renewer>,
    guard: Option<CleanupGuard>,
    netlink: OwnedFd,
    nic: CreatedNic,
    /// Keeps the MAC slot while the network exists.
    mac: mac::ChosenMac,
}

impl Running {
    fn tear_down(mut self) {
        let started = Instant::now();
        let released = self.renewer.take().is_some_and(Renewer::stop);
        match self.guard.take() {
            // The guard holds the same sockets: it deletes the veth, and
            // is reaped here, so that nothing of this driver outlives it.
            Some(g) => g.finish(released),
            None => {
                let mut netlink = NetlinkSocket::on(self.netlink.as_fd(), 0);
                if let Err(e) = netlink.delete_link(&self.link()) {
                    log::warn!(
                        "{e} (host side {}); the kernel removes it with the namespace",
                        self.nic.host_name
                    );
                }
            }
        }
        log::debug!(
            "released the lease and deleted {} in {:.1} ms",
            self.nic.name,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }

    fn link(&self) -> Link {
        Link {
            name: self.nic.name.clone(),
            index: self.nic.index,
        }
    }
}

impl Driver for LxcUserNic {
    fn info(&self) -> DriverInfo {
        DriverInfo::new("lxc-user-nic", env!("CARGO_PKG_VERSION"))
            .with_capabilities(&[
                "mtu",
                "ifname",
                "detach-netns",
                "dhcp",
                "dhcp-release",
                "stable-mac",
                "sandbox",
            ])
            .with_options(&options::ALL)
    }

    fn configure(
        &mut self,
        request: ConfigureRequest,
        ns: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError> {
        // (`serve` refuses a second configure before it gets here.)
        let opts = Options::parse(&request).map_err(|e| DriverError::new(e.to_string()))?;
        let binary = binary::locate(opts.binary.as_deref())?;
        binary::check_setuid_root(&binary)?;
        let bridge_mtu = bridge::check(&opts.bridge)?;
        let chosen = mac::choose(opts.mac, nix::unistd::getuid().as_raw(), &opts.bridge);

        let nic = {
            // lxc-user-nic names the namespace by a pid: the child's, or
            // with --detach-netns (the namespace is only pinned by a bind
            // mount) a process that joins it and waits while lxc-user-nic
            // runs.
            let helper = if opts.detach_netns {
                let pause = || loop {
                    // SAFETY: pause has no preconditions; dropping the
                    // resident kills it.
                    unsafe { libc::pause() };
                };
                let what = "a process in the detached network namespace";
                Some(
                    Resident::spawn(what, Some((&ns).into()), true, pause)
                        .context("--detach-netns")?,
                )
            } else {
                None
            };
            let pid = helper.as_ref().map_or(request.child_pid, |h| h.pid());
            let started = Instant::now();
            let nic = usernic::create(&binary, pid, &opts.bridge, &opts.ifname)?;
            log::debug!(
                "lxc-user-nic made {} (host side {}) in {} ms",
                nic.name,
                nic.host_name,
                started.elapsed().as_millis()
            );
            nic
        };
        let (ifname, hwaddr) = (nic.name.clone(), chosen.mac);
        let fds = rk_driver::nsexec::run_in_namespaces(
            Some(ns.userns.as_fd()),
            ns.netns.as_fd(),
            move || inside::prepare(&ifname, hwaddr),
        )
        .map_err(|e| DriverError::new(format!("setting up {}: {e}", nic.name)))?;
        let [udp, netlink] = <[OwnedFd; 2]>::try_from(fds)
            .map_err(|_| DriverError::new("the namespace helper returned the wrong descriptors"))?;
        // lxc-user-nic was the last program this driver runs, and it needed
        // its setuid bit; from here on nothing the driver or its guard does
        // may gain privileges.
        let _ = rk_driver::sandbox::no_new_privs();
        let mut running = Running {
            renewer: None,
            guard: None,
            netlink,
            nic,
            mac: chosen,
        };

        let socket = UdpSocket::from(udp);
        let mut dhcp_config = ClientConfig::new(running.mac.mac);
        dhcp_config.reboot_address = running.mac.remembered_address();
        let mut client = Client::new(dhcp_config, rk_dhcp::random_xid(), Instant::now());
        let started = Instant::now();
        let lease = match dhcp::acquire(&socket, &mut client, &opts.bridge) {
            Ok(l) => {
                log::debug!(
                    "DHCP: {} from {} in {} ms",
                    l.cidr(),
                    l.server,
                    started.elapsed().as_millis()
                );
                l
            }
            Err(e) => {
                running.tear_down();
                return Err(e);
            }
        };
        running.mac.remember(lease.address);
        let mut config = answer(&opts, &running, &lease, bridge_mtu);
        // Before the renewal thread: forking needs a single-threaded process.
        match CleanupGuard::spawn(&socket, &running.netlink, &running.link(), &client) {
            Ok(g) => running.guard = Some(g),
            Err(e) => log::warn!(
                "cannot start the cleanup guard ({e}): if rootlesskit is killed, \
                 {} stays on {} until the last process in the namespace exits",
                running.nic.host_name,
                opts.bridge
            ),
        }
        // Set-up is over, and the process still single-threaded: confine
        // all of it now, so that Landlock covers the renewal thread too.
        let policy = confinement::driver_policy(running.mac.memory_dir());
        let started = Instant::now();
        let sandbox = confinement::confine(&policy);
        log::debug!(
            "sandbox: {sandbox} (applied in {:.2} ms)",
            started.elapsed().as_secs_f64() * 1000.0
        );
        config.info.insert("sandbox".to_owned(), sandbox);
        if let Some(g) = running.guard.as_mut() {
            g.wait_confined();
        }
        match Renewer::start(socket, client, lease.address, running.mac.memory()) {
            Ok(r) => running.renewer = Some(r),
            Err(e) => log::warn!("cannot start the DHCP renewal thread: {e}"),
        }
        self.running = Some(running);
        Ok(config)
    }

    fn shutdown(&mut self) {
        if let Some(r) = self.running.take() {
            r.tear_down();
        }
    }
}

fn answer(opts: &Options, running: &Running, lease: &Lease, bridge_mtu: u32) -> NetworkConfig {
    // --mtu, else what the DHCP server says (option 26), else 1500.
    let mtu = opts
        .mtu
        .or(lease.mtu.map(u32::from))
        .unwrap_or(options::DEFAULT_MTU);
    if mtu > bridge_mtu {
        log::warn!(
            "MTU {mtu} is larger than bridge {}'s {bridge_mtu}: \
             larger frames are dropped on the bridge; use --mtu={bridge_mtu}",
            opts.bridge
        );
    }
    if lease.dns.is_empty() {
        log::warn!(
            "the DHCP server on {} named no DNS server; /etc/resolv.conf is left as it is",
            opts.bridge
        );
    }
    let info: BTreeMap<String, String> = [
        ("bridge", opts.bridge.clone()),
        ("host-veth", running.nic.host_name.clone()),
        ("mac", mac::format(&running.mac.mac)),
        ("mac-source", running.mac.how.clone()),
        ("dhcp-server", lease.server.to_string()),
        ("lease-seconds", dhcp::seconds(lease.lease_time)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    NetworkConfig {
        interface: running.nic.name.clone(),
        // rk-dhcp accepts only contiguous subnet masks: the prefix is <= 32.
        ipv4: Some(Ipv4Net::new_assert(lease.address, lease.prefix_len)),
        gateway4: lease.router,
        ipv6: None,
        gateway6: None,
        dns: lease.dns.iter().map(|&d| d.into()).collect(),
        mtu,
        configured_by_driver: false,
        dynamic: true,
        info,
    }
}
