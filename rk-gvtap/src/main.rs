//! `rk-gvtap`: the `--net=gvisor-tap-vsock` driver. A userspace network
//! stack (smoltcp) on a tap device inside the child's namespace, with a NAT
//! that relays the guest's TCP, UDP and ICMP echo through the host's own
//! sockets. It needs no external program. See docs/gvisor-tap-vsock.md.

mod affinity;
mod confinement;
mod device;
mod dns;
mod engine;
mod epoll;
mod forward;
mod frames;
mod mapped_alloc;
mod net;
mod ping_nat;
mod plan;
mod policy;
mod ports;
mod ratelog;
mod resolv;
mod slab;
mod sys;
mod tap;
mod tcp_nat;
mod udp_nat;

// In the library so that the fuzz targets reach it; `crate::classify` keeps
// working through this import.
use rk_gvtap::{classify, reassembly};

use plan::NetPlan;
use rk_driver::{
    ConfigureRequest, Context, Driver, DriverError, DriverInfo, Ipv4Net, NamespaceFds,
    NetworkConfig, PortDriverOffer, PortRule,
};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Large blocks (the flows' socket buffers) come from mappings of their own.
#[global_allocator]
static ALLOCATOR: mapped_alloc::MappedAlloc = mapped_alloc::MappedAlloc;

/// The `--net-opt` keys this driver reads.
const MAX_TCP_FLOWS: &str = "max-tcp-flows";
const MAX_UDP_FLOWS: &str = "max-udp-flows";
const OFFLOAD: &str = "offload";
const PIN_CPU: &str = "pin-cpu";

/// What the driver offers (the core refuses flags it does not announce).
const CAPABILITIES: &[&str] = &[
    "sandbox",
    "ifname",
    "cidr",
    "mtu",
    "disable-host-loopback",
    "detach-netns",
    "ping",
    "dns",
    "ipv6",
];

struct Running {
    thread: Option<JoinHandle<()>>,
    stop: OwnedFd,
    died: OwnedFd,
    error: Arc<Mutex<Option<String>>>,
    control: Arc<forward::Control>,
    plan: NetPlan,
    ports: std::collections::BTreeSet<i64>,
    /// Held so that the namespace (and with it the tap) outlives any race
    /// between the child's exit and our shutdown.
    _namespaces: NamespaceFds,
}

#[derive(Default)]
struct Gvtap {
    running: Option<Running>,
}

impl Driver for Gvtap {
    fn info(&self) -> DriverInfo {
        DriverInfo::new("gvtap", env!("CARGO_PKG_VERSION"))
            .with_capabilities(CAPABILITIES)
            .with_capabilities(&[&format!("port-driver:{}", ports::NAME)])
            .with_options(&[MAX_TCP_FLOWS, MAX_UDP_FLOWS, OFFLOAD, PIN_CPU])
    }

    fn configure(
        &mut self,
        req: ConfigureRequest,
        ns: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError> {
        if self.running.is_some() {
            return Err(DriverError::new("configure was sent twice"));
        }
        let options = parse_options(&req.options)?;
        let vnet = options.offload;
        let plan = NetPlan::from_request(&req).map_err(DriverError)?;
        let nofile = sys::raise_nofile_limit();
        sys::keep_large_buffers_mmapped();
        sys::set_no_new_privs()
            .map_err(|e| DriverError::new(format!("prctl(PR_SET_NO_NEW_PRIVS): {e}")))?;
        // The namespace helper forks: no thread may exist yet.
        let tap = tap::create_in_namespace(&ns, &plan.ifname, vnet).map_err(DriverError)?;
        let stop = sys::eventfd().context("an eventfd to stop the network thread")?;
        let died = sys::eventfd().context("an eventfd for the network thread's end")?;
        let limits = engine::Limits::fit_nofile(options.limits, nofile);
        let control =
            Arc::new(forward::Control::new().context("an eventfd for the port driver's commands")?);
        let mut engine = engine::Engine::new(
            plan.clone(),
            tap,
            stop.try_clone().context("duplicating the stop eventfd")?,
            control.clone(),
            limits,
            vnet,
            options
                .pin_cpu
                .then(affinity::ThreadCpus::at_start)
                .flatten(),
        )
        .context("setting up the network thread (epoll on the tap)")?;
        // Set-up is over: the whole process is confined before the network
        // thread starts, so that Landlock covers it too.
        let sandbox = confinement::apply()
            .map_err(|e| DriverError::new(format!("confining rk-gvtap: {e}")))?;
        let error = Arc::new(Mutex::new(None));
        let died2 = died.try_clone().context("duplicating an eventfd")?;
        let error2 = error.clone();
        let thread = std::thread::Builder::new()
            .name("rk-gvtap-net".into())
            .spawn(move || {
                if let Err(e) = engine.run() {
                    *error2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    sys::signal(&died2);
                }
            })
            .context("starting the network thread")?;
        self.running = Some(Running {
            thread: Some(thread),
            stop,
            died,
            error,
            control,
            plan: plan.clone(),
            ports: Default::default(),
            _namespaces: ns,
        });
        let mut info = BTreeMap::new();
        info.insert(
            "driver".into(),
            "rk-gvtap (smoltcp userspace stack with NAT)".into(),
        );
        info.insert("host_loopback".into(), plan.host_loopback.to_string());
        info.insert("sandbox".into(), sandbox.to_string());
        info.insert(
            "limits".into(),
            format!("{} TCP, {} UDP flows", limits.tcp, limits.udp),
        );
        Ok(NetworkConfig {
            interface: plan.ifname.clone(),
            ipv4: Some(
                Ipv4Net::new(plan.guest, plan.prefix)
                    .map_err(|e| DriverError::new(format!("the guest's address: {e}")))?,
            ),
            gateway4: Some(plan.gateway),
            ipv6: plan.ipv6.map(|p| p.guest_net()),
            gateway6: plan.ipv6.map(|p| p.gateway),
            // Like slirp4netns's --ipv6 answer: the IPv6 nameserver second.
            dns: std::iter::once(plan.gateway.into())
                .chain(plan.ipv6.map(|p| p.dns.into()))
                .collect(),
            mtu: plan.mtu,
            info,
            ..Default::default()
        })
    }

    fn watch(&self) -> Option<BorrowedFd<'_>> {
        self.running.as_ref().map(|r| r.died.as_fd())
    }

    fn on_watch(&mut self) -> String {
        let msg = self
            .running
            .as_ref()
            .and_then(|r| r.error.lock().unwrap_or_else(|p| p.into_inner()).clone());
        msg.unwrap_or_else(|| "the network thread stopped".into())
    }

    fn start_ports(&mut self, port_driver: &str) -> Result<PortDriverOffer, DriverError> {
        if port_driver != ports::NAME {
            return Err(DriverError::new(format!(
                "rk-gvtap offers --port-driver={}, not {port_driver}",
                ports::NAME
            )));
        }
        Ok(ports::offer())
    }

    fn add_port(&mut self, rule: &PortRule) -> Result<(), DriverError> {
        let r = self
            .running
            .as_mut()
            .ok_or_else(|| DriverError::new("ports can be added only after configure"))?;
        if r.ports.contains(&rule.id) {
            return Err(DriverError::new(format!("port {} exists already", rule.id)));
        }
        let (socket, target) = ports::listen(&r.plan, rule).map_err(DriverError)?;
        r.control.send(forward::Command::Add {
            id: rule.id,
            socket,
            target,
        });
        r.ports.insert(rule.id);
        Ok(())
    }

    fn remove_port(&mut self, id: i64) -> Result<(), DriverError> {
        let r = self
            .running
            .as_mut()
            .ok_or_else(|| DriverError::new("no ports before configure"))?;
        if !r.ports.remove(&id) {
            return Err(DriverError::new(format!("no port {id}")));
        }
        r.control.send(forward::Command::Remove { id });
        Ok(())
    }

    fn shutdown(&mut self) {
        if let Some(mut r) = self.running.take() {
            sys::signal(&r.stop);
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// What the `--net-opt`s ask for.
struct Options {
    limits: engine::Limits,
    /// The tap uses offloads (virtio-net headers, TSO).
    offload: bool,
    /// The network thread may keep to one CPU during bulk traffic
    /// (affinity.rs).
    pin_cpu: bool,
}

/// Options the core passes for every driver, and `--net-opt`s.
fn parse_options(options: &BTreeMap<String, String>) -> Result<Options, DriverError> {
    let mut o = Options {
        limits: engine::Limits::DEFAULT,
        offload: true,
        pin_cpu: true,
    };
    for (k, v) in options {
        match k.as_str() {
            "port-driver" => {}
            MAX_TCP_FLOWS => o.limits.tcp = parse_limit(k, v)?,
            MAX_UDP_FLOWS => o.limits.udp = parse_limit(k, v)?,
            OFFLOAD => o.offload = parse_bool(k, v)?,
            PIN_CPU => o.pin_cpu = parse_bool(k, v)?,
            other => {
                return Err(DriverError::new(format!(
                    "--net-opt {other}={v}: --net=gvisor-tap-vsock knows only max-tcp-flows=N, max-udp-flows=N, offload=true|false and pin-cpu=true|false"
                )))
            }
        }
    }
    Ok(o)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, DriverError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(DriverError::new(format!(
            "--net-opt {key}={value:?}: give true or false"
        ))),
    }
}

fn parse_limit(key: &str, value: &str) -> Result<usize, DriverError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=65536).contains(&n) => Ok(n),
        _ => Err(DriverError::new(format!(
            "--net-opt {key}={value:?}: give a number of flows between 1 and 65536"
        ))),
    }
}

fn main() {
    rk_driver::serve(Gvtap::default())
}
