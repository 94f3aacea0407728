//! The MAC address of the child's interface.
//!
//! dnsmasq (and most DHCP servers) hand a client the address it had before,
//! keyed by its MAC. lxc-user-nic gives every veth a random MAC, so
//! RootlessKit's child takes a new address each run. `auto` (the default)
//! derives the MAC from the user and the bridge instead, so a user keeps one
//! address. Two instances of the same user on the same bridge must not share
//! a MAC, so each takes the first free *slot* (slot n gives MAC n) by holding
//! an exclusive lock on a per-slot file for as long as it runs.
//!
//! Beside each slot's lock the driver remembers the slot's last address, and
//! asks for it first (DHCP INIT-REBOOT): dnsmasq acknowledges that at once,
//! whereas a DISCOVER for an address it has no lease for waits 3 s for its
//! "is this address in use?" ping.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacChoice {
    /// Stable per user, bridge and concurrent instance.
    Auto,
    /// New each run (what RootlessKit does).
    Random,
    Fixed([u8; 6]),
}

/// Instances of one user on one bridge that get stable addresses; more run
/// with random MACs.
const SLOTS: u32 = 32;

impl MacChoice {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "auto" => return Ok(MacChoice::Auto),
            "random" => return Ok(MacChoice::Random),
            _ => {}
        }
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err("not six hex octets".into());
        }
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err("not six hex octets".into());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| "not six hex octets".to_owned())?;
        }
        if mac[0] & 1 != 0 {
            return Err("a multicast address cannot be an interface's address".into());
        }
        if mac == [0; 6] {
            return Err("the all-zero address is not valid".into());
        }
        Ok(MacChoice::Fixed(mac))
    }
}

/// A chosen MAC, and for `auto` the lock that keeps its slot ours.
#[derive(Debug)]
pub struct ChosenMac {
    pub mac: [u8; 6],
    /// How it was chosen, for `rootlessctl info`.
    pub how: String,
    /// Where this MAC's last address is kept (none for random MACs).
    memory: Option<AddressMemory>,
    _slot: Option<Flock<File>>,
}

impl ChosenMac {
    /// The address this MAC had last time on this bridge.
    pub fn remembered_address(&self) -> Option<Ipv4Addr> {
        self.memory.as_ref()?.load()
    }

    /// Keeps `address` for the next run.
    pub fn remember(&self, address: Ipv4Addr) {
        if let Some(m) = &self.memory {
            m.store(address);
        }
    }

    /// For whoever learns of a new address later (the renewal thread).
    pub fn memory(&self) -> Option<AddressMemory> {
        self.memory.clone()
    }

    /// The directory the address is kept in: the one path the confined
    /// driver may still write.
    pub fn memory_dir(&self) -> Option<&Path> {
        self.memory.as_ref()?.0.parent()
    }
}

/// A file holding a MAC's last address on a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressMemory(PathBuf);

impl AddressMemory {
    #[cfg(test)]
    pub fn at(path: PathBuf) -> Self {
        AddressMemory(path)
    }

    pub fn load(&self) -> Option<Ipv4Addr> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }

    /// Failing to keep it costs only speed at the next start.
    pub fn store(&self, address: Ipv4Addr) {
        let tmp = self.0.with_extension("tmp");
        let done = std::fs::write(&tmp, format!("{address}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.0));
        if let Err(e) = done {
            log::debug!("remembering {address} in {}: {e}", self.0.display());
        }
    }
}

pub fn choose(choice: MacChoice, uid: u32, bridge: &str) -> ChosenMac {
    match choice {
        MacChoice::Fixed(mac) => ChosenMac {
            mac,
            how: "fixed".into(),
            memory: lock_dir(uid)
                .ok()
                .map(|d| {
                    d.join(format!(
                        "{bridge}.{}.address",
                        format(&mac).replace(':', "")
                    ))
                })
                .map(AddressMemory),
            _slot: None,
        },
        MacChoice::Random => random(),
        MacChoice::Auto => match take_slot(uid, bridge) {
            Ok(Some((slot, dir, lock))) => ChosenMac {
                mac: derived(uid, bridge, slot),
                how: format!("auto (slot {slot})"),
                memory: Some(AddressMemory(dir.join(format!("{bridge}.{slot}.address")))),
                _slot: Some(lock),
            },
            Ok(None) => {
                log::warn!(
                    "all {SLOTS} stable MAC slots for {bridge} are in use; using a random MAC"
                );
                random()
            }
            Err(e) => {
                log::warn!("cannot keep a stable MAC ({e}); using a random MAC");
                random()
            }
        },
    }
}

fn random() -> ChosenMac {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != mac.len() as isize {
        // Never expected on Linux >= 3.17; time and pid still differ per run.
        mac[..4].copy_from_slice(&rk_dhcp::random_xid().to_be_bytes());
        mac[4..].copy_from_slice(&(std::process::id() as u16).to_be_bytes());
    }
    ChosenMac {
        mac: local_unicast(mac),
        how: "random".into(),
        memory: None,
        _slot: None,
    }
}

/// Sets the locally-administered bit and clears the multicast bit.
fn local_unicast(mut mac: [u8; 6]) -> [u8; 6] {
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// A MAC that depends only on its inputs, across runs and Rust versions
/// (FNV-1a, then a mixing step so that every input bit reaches every byte).
pub fn derived(uid: u32, bridge: &str, slot: u32) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let input = format!("rk-lxc-user-nic\0{uid}\0{bridge}\0{slot}");
    for b in input.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    let b = h.to_be_bytes();
    local_unicast([b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The directory holding the slot locks: private to the user.
fn lock_dir(uid: u32) -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d).join("rk-lxc-user-nic"),
        _ => std::env::temp_dir().join(format!("rk-lxc-user-nic-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", base.display())),
    }
    // In a shared /tmp someone else could have made it first.
    let meta = std::fs::symlink_metadata(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not a directory private to uid {uid}",
            base.display()
        ));
    }
    Ok(base)
}

fn take_slot(uid: u32, bridge: &str) -> Result<Option<(u32, PathBuf, Flock<File>)>, String> {
    let dir = lock_dir(uid)?;
    for slot in 0..SLOTS {
        let path = dir.join(format!("{bridge}.{slot}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some((slot, dir, lock))),
            Err((_, nix::Error::EWOULDBLOCK)) => continue,
            Err((_, e)) => return Err(format!("locking {}: {e}", path.display())),
        }
    }
    Ok(None)
}

pub use rk_driver::mac::format;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!(MacChoice::parse("auto"), Ok(MacChoice::Auto));
        assert_eq!(MacChoice::parse("random"), Ok(MacChoice::Random));
        assert_eq!(
            MacChoice::parse("02:AB:00:00:00:01"),
            Ok(MacChoice::Fixed([2, 0xab, 0, 0, 0, 1]))
        );
        assert!(MacChoice::parse("02:ab:00:00:00").is_err());
        assert!(MacChoice::parse("02:ab:00:00:00:0g").is_err());
        assert!(MacChoice::parse("03:00:00:00:00:01").is_err());
        assert!(MacChoice::parse("00:00:00:00:00:00").is_err());
    }

    #[test]
    fn derived_macs_are_stable_local_unicast_and_distinct() {
        let a = derived(1001, "lxcbr0", 0);
        assert_eq!(a, derived(1001, "lxcbr0", 0));
        assert_eq!(a[0] & 0x03, 0x02);
        assert_ne!(a, derived(1002, "lxcbr0", 0));
        assert_ne!(a, derived(1001, "rktbr0", 0));
        assert_ne!(a, derived(1001, "lxcbr0", 1));
        // Pinned: a user's address must not move with a new build.
        assert_eq!(format(&derived(1001, "lxcbr0", 0)), format(&a));
    }

    #[test]
    fn concurrent_instances_take_different_slots() {
        let dir = std::env::temp_dir().join(format!("rk-mac-test-{}", std::process::id()));
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let first = choose(MacChoice::Auto, uid, "testbr0");
        let second = choose(MacChoice::Auto, uid, "testbr0");
        assert_eq!(first.mac, derived(uid, "testbr0", 0));
        assert_eq!(second.mac, derived(uid, "testbr0", 1));
        assert_eq!(first.remembered_address(), None);
        first.remember(Ipv4Addr::new(10, 0, 3, 36));
        drop(first);
        let third = choose(MacChoice::Auto, uid, "testbr0");
        assert_eq!(
            third.mac,
            derived(uid, "testbr0", 0),
            "a freed slot is reused"
        );
        assert_eq!(
            third.remembered_address(),
            Some(Ipv4Addr::new(10, 0, 3, 36))
        );
        assert_eq!(second.remembered_address(), None, "each slot has its own");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn random_macs_are_local_unicast() {
        let m = choose(MacChoice::Random, 0, "x").mac;
        assert_eq!(m[0] & 0x03, 0x02);
        assert_ne!(m, choose(MacChoice::Random, 0, "x").mac);
    }
}
