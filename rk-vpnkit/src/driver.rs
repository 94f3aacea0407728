//! `--net=vpnkit`: start vpnkit, connect an interface to it, learn the
//! address by DHCP over that link, make the tap device inside the child's
//! namespace and pump frames between the two.

use crate::address::{self, Address};
use crate::link::Link;
use crate::pump::Pump;
use crate::settings::{Settings, BINARY_OPTION};
use crate::vpnkit::Vpnkit;
use crate::wire::format_mac;
use rk_driver::{
    ConfigureRequest, Context, Driver, DriverError, DriverInfo, NamespaceFds, NetworkConfig,
};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long vpnkit may take to answer each step of the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the DHCP exchange may take.
const DHCP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Default)]
pub struct VpnkitDriver {
    vpnkit: Option<Vpnkit>,
    socket: Option<PathBuf>,
    pump: Option<Pump>,
}

impl Driver for VpnkitDriver {
    fn info(&self) -> DriverInfo {
        DriverInfo::new("vpnkit", env!("CARGO_PKG_VERSION"))
            .with_capabilities(&["mtu", "ifname", "detach-netns", "dhcp", "sandbox"])
            .with_options(&[BINARY_OPTION])
    }

    fn configure(
        &mut self,
        request: ConfigureRequest,
        namespaces: NamespaceFds,
    ) -> Result<NetworkConfig, DriverError> {
        let settings =
            Settings::from_request(&request).map_err(|e| DriverError::new(e.to_string()))?;
        if let Some(w) = settings.mtu_warning() {
            log::warn!("{w}");
        }
        self.socket = Some(settings.socket.clone());
        let vpnkit = self.vpnkit.insert(Vpnkit::start(&settings)?);
        let stream = vpnkit.connect(&settings)?;
        // Connected: nobody else needs the socket's name, and nothing must
        // be left behind in the state directory.
        let _ = std::fs::remove_file(&settings.socket);
        // Shutdown must not try again: the sandbox refuses it from then on.
        self.socket = None;
        let uuid = crate::uuid::random_v4().context("making a UUID for the vpnkit link")?;
        let mut link = Link::handshake(stream, uuid, HANDSHAKE_TIMEOUT).map_err(|e| {
            DriverError::new(format!(
                "vpnkit handshake on {}: {e}{}",
                settings.socket.display(),
                vpnkit.said()
            ))
        })?;
        let vif = link.vif;
        let mtu = u32::from(vif.mtu);
        if mtu != settings.mtu {
            log::warn!(
                "vpnkit set the link MTU to {mtu}, not the {} asked for; using {mtu}",
                settings.mtu
            );
        }
        log::debug!(
            "connected as {} with MAC {}, MTU {mtu}, max packet {}",
            link.uuid,
            format_mac(&vif.mac),
            vif.max_packet_size
        );
        let addr = address::obtain(&mut link, Instant::now() + DHCP_TIMEOUT)
            .map_err(|e| DriverError::new(format!("{e}{}", vpnkit.said())))?;
        log::debug!(
            "DHCP: {} via {:?}, DNS {:?}",
            addr.cidr,
            addr.gateway,
            addr.dns
        );
        let ifname = settings.ifname.clone();
        let tap = rk_driver::nsexec::run_in_namespaces(
            Some(namespaces.userns.as_fd()),
            namespaces.netns.as_fd(),
            || crate::tap::create(&ifname, vif.mac).map(|fd| vec![fd]),
        )
        .map_err(|e| DriverError::new(format!("creating the tap device {ifname}: {e}")))?
        .pop()
        .ok_or_else(|| DriverError::new("the namespace helper sent no tap descriptor"))?;
        let uuid = link.uuid.clone();
        let (stream, reader, _) = link.into_parts().context("the vpnkit link")?;
        // Set-up is over: the whole process gives up what the pump and the
        // shutdown do not need, before the pump touches untrusted frames
        // and before its threads start (so that Landlock covers them too).
        let started = Instant::now();
        let sandbox = crate::confinement::confine();
        log::debug!(
            "sandbox: {sandbox} (applied in {:.2} ms)",
            started.elapsed().as_secs_f64() * 1000.0
        );
        self.pump = Some(Pump::start(stream, reader, tap).context("starting the frame pump")?);
        if let Err(e) = vpnkit.follow_output() {
            log::warn!(
                "cannot start the thread that drains vpnkit's output ({e}): vpnkit may stall \
                 once it has written 64 KiB"
            );
        }
        let mut config = answer(&settings, &addr, mtu, &uuid, &vif.mac, vpnkit.pid())?;
        config.info.insert("sandbox".to_owned(), sandbox);
        Ok(config)
    }

    fn watch(&self) -> Option<BorrowedFd<'_>> {
        self.pump.as_ref().map(|p| p.ended_fd())
    }

    fn on_watch(&mut self) -> String {
        let reason = self
            .pump
            .as_ref()
            .map(|p| p.reason())
            .unwrap_or_else(|| "the pump stopped".into());
        let mut message = format!("the vpnkit connection ended: {reason}");
        if let Some(v) = self.vpnkit.as_mut() {
            if let Some(note) = v.exit_note() {
                message.push_str("; ");
                message.push_str(&note);
            }
        }
        message
    }

    fn shutdown(&mut self) {
        if let Some(p) = self.pump.take() {
            if log::log_enabled!(log::Level::Debug) {
                let c = p.counters();
                log::debug!(
                    "frames to vpnkit {} (in {} writes, {} malformed packets dropped), \
                     from vpnkit {} (in {} tap writes, {} refused by the tap)",
                    c.to_vpnkit.load(Ordering::Relaxed),
                    c.batches.load(Ordering::Relaxed),
                    c.malformed.load(Ordering::Relaxed),
                    c.from_vpnkit.load(Ordering::Relaxed),
                    c.to_tap.load(Ordering::Relaxed),
                    c.dropped.load(Ordering::Relaxed)
                );
            }
            p.stop();
        }
        if let Some(mut v) = self.vpnkit.take() {
            v.kill();
        }
        if let Some(s) = self.socket.take() {
            let _ = std::fs::remove_file(s);
        }
    }
}

fn answer(
    settings: &Settings,
    addr: &Address,
    mtu: u32,
    uuid: &str,
    mac: &[u8; 6],
    pid: u32,
) -> Result<NetworkConfig, DriverError> {
    let mut info = BTreeMap::new();
    info.insert("vpnkit.uuid".to_owned(), uuid.to_owned());
    info.insert("vpnkit.mac".to_owned(), format_mac(mac));
    info.insert("vpnkit.pid".to_owned(), pid.to_string());
    info.insert("vpnkit.binary".to_owned(), settings.binary.clone());
    let lease = "vpnkit's DHCP lease";
    Ok(NetworkConfig {
        interface: settings.ifname.clone(),
        ipv4: Some(addr.cidr.parse().context(lease)?),
        gateway4: addr
            .gateway
            .as_deref()
            .map(str::parse)
            .transpose()
            .context(lease)?,
        ipv6: None,
        gateway6: None,
        dns: addr
            .dns
            .iter()
            .map(|d| d.parse())
            .collect::<Result<_, _>>()
            .context(lease)?,
        mtu,
        configured_by_driver: false,
        dynamic: true,
        info,
    })
}
