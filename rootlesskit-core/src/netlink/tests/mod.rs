//! Each test forks a child that owns fresh user + network namespaces,
//! configures a real tap device there and reads the result back through
//! ioctls and /proc/net.

mod inspect;
mod sandbox;

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;

use nix::sched::{setns, unshare, CloneFlags};

use super::{
    bring_up_interface, bring_up_loopback, configure_interface, InterfaceSetup, NetlinkError,
};
use inspect::{LinkState, IFA_F_NODAD, IFA_F_TENTATIVE};
use sandbox::{create_tap, current_netns, in_private_netns};

const IPV4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const GATEWAY4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// What the slirp4netns driver asks for by default, plus `--ipv6`.
fn slirp_like_setup(name: &str) -> InterfaceSetup {
    InterfaceSetup {
        name: name.to_owned(),
        mtu: 65520,
        ipv4: Some((IPV4, 24)),
        gateway4: Some(GATEWAY4),
        ipv6: Some((IPV6, 64)),
        gateway6: Some(GATEWAY6),
    }
}

/// Checks, in the current network namespace, everything
/// `slirp_like_setup("tap0")` asks for.
fn assert_slirp_like_setup_applied() {
    assert!(link_state("lo").up, "lo is not up");
    assert_eq!(
        link_state("tap0"),
        LinkState {
            mtu: 65520,
            up: true
        }
    );
    assert_eq!(inspect::ipv4_address("tap0"), Some((IPV4, 24)));
    let ipv6 = inspect::ipv6_addresses("tap0");
    let ours = ipv6
        .iter()
        .find(|entry| entry.address == IPV6)
        .unwrap_or_else(|| panic!("{IPV6} not on tap0: {ipv6:?}"));
    assert_eq!(ours.prefix_len, 64);
    assert_ne!(ours.flags & IFA_F_NODAD, 0, "added without NODAD: {ours:?}");
    assert_eq!(ours.flags & IFA_F_TENTATIVE, 0, "still tentative: {ours:?}");
    assert_eq!(inspect::ipv4_default_gateway("tap0"), Some(GATEWAY4));
    assert_eq!(inspect::ipv6_default_gateway("tap0"), Some(GATEWAY6));
}

fn link_state(name: &str) -> LinkState {
    inspect::link_state(name).unwrap_or_else(|| panic!("no interface {name}"))
}

#[test]
fn configure_interface_sets_mtu_up_addresses_and_default_routes() {
    in_private_netns(|| {
        let _tap = create_tap("tap0");
        assert!(!link_state("lo").up, "a new netns starts with lo down");
        assert_eq!(inspect::ipv4_default_gateway("tap0"), None);

        configure_interface(None, &slirp_like_setup("tap0")).expect("configure tap0");

        assert_slirp_like_setup_applied();
    });
}

#[test]
fn configure_interface_twice_succeeds_and_keeps_the_configuration() {
    in_private_netns(|| {
        let _tap = create_tap("tap0");
        configure_interface(None, &slirp_like_setup("tap0")).expect("first configuration");
        configure_interface(None, &slirp_like_setup("tap0")).expect("second configuration");
        assert_slirp_like_setup_applied();
    });
}

#[test]
fn configure_interface_without_addresses_or_gateways_only_sets_mtu_and_up() {
    in_private_netns(|| {
        let _tap = create_tap("tap0");
        let setup = InterfaceSetup {
            name: "tap0".to_owned(),
            mtu: 9000,
            ipv4: None,
            gateway4: None,
            ipv6: None,
            gateway6: None,
        };
        configure_interface(None, &setup).expect("configure tap0");
        assert_eq!(
            link_state("tap0"),
            LinkState {
                mtu: 9000,
                up: true
            }
        );
        assert_eq!(inspect::ipv4_address("tap0"), None);
        assert_eq!(inspect::ipv4_default_gateway("tap0"), None);
        assert_eq!(inspect::ipv6_default_gateway("tap0"), None);
    });
}

#[test]
fn configure_interface_with_netns_fd_configures_that_netns_only() {
    in_private_netns(|| {
        let _tap = create_tap("tap0");
        let target = current_netns();
        // Move this thread to another, empty network namespace: the call
        // below only succeeds if it really works inside `target`.
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare a second netns");
        let caller_netns = netns_inode();

        configure_interface(Some(target.as_fd()), &slirp_like_setup("tap0"))
            .expect("configure tap0 through the netns fd");

        assert_eq!(netns_inode(), caller_netns, "the calling thread moved");
        assert!(!link_state("lo").up, "the caller's lo was touched");
        assert_eq!(inspect::link_state("tap0"), None);
        setns(&target, CloneFlags::CLONE_NEWNET).expect("return to the target netns");
        assert_slirp_like_setup_applied();
    });
}

fn netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat own netns")
        .ino()
}

#[test]
fn missing_interface_is_reported_by_name() {
    in_private_netns(|| {
        let error = configure_interface(None, &slirp_like_setup("nosuch0")).unwrap_err();
        assert!(
            matches!(&error, NetlinkError::NoSuchInterface(name) if name == "nosuch0"),
            "{error:?}"
        );
        assert!(error.to_string().contains("\"nosuch0\""), "{error}");

        let netns = current_netns();
        let error = bring_up_interface(Some(netns.as_fd()), "nosuch1", None).unwrap_err();
        assert!(
            matches!(&error, NetlinkError::NoSuchInterface(name) if name == "nosuch1"),
            "{error:?}"
        );
    });
}

#[test]
fn refused_request_names_the_operation_and_the_errno() {
    in_private_netns(|| {
        let _tap = create_tap("tap0");
        let mut setup = slirp_like_setup("tap0");
        setup.mtu = 70000; // above a tap device's maximum of 65535
        let error = configure_interface(None, &setup).unwrap_err();
        assert!(
            matches!(&error, NetlinkError::Request(e)
                if e.raw_os_error() == Some(libc::EINVAL)),
            "{error:?}"
        );
        let message = error.to_string();
        for expected in ["tap0", "MTU", "70000", "Invalid argument"] {
            assert!(
                message.contains(expected),
                "{expected:?} not in {message:?}"
            );
        }
    });
}

#[test]
fn bring_up_interface_sets_mtu_and_up_but_no_addresses() {
    in_private_netns(|| {
        let _tap = create_tap("tap0");
        bring_up_interface(None, "tap0", Some(1400)).expect("bring up tap0");
        assert!(link_state("lo").up, "lo is not up");
        assert_eq!(
            link_state("tap0"),
            LinkState {
                mtu: 1400,
                up: true
            }
        );
        assert_eq!(inspect::ipv4_address("tap0"), None);
    });
}

#[test]
fn bring_up_interface_without_mtu_keeps_the_current_mtu() {
    in_private_netns(|| {
        let _tap = create_tap("tap0");
        let before = link_state("tap0");
        assert!(!before.up, "a new tap starts down");
        bring_up_interface(None, "tap0", None).expect("bring up tap0");
        assert_eq!(
            link_state("tap0"),
            LinkState {
                mtu: before.mtu,
                up: true
            }
        );
    });
}

#[test]
fn bring_up_loopback_makes_localhost_reachable() {
    in_private_netns(|| {
        let unreachable = TcpStream::connect((Ipv4Addr::LOCALHOST, 9)).unwrap_err();
        assert_eq!(
            unreachable.raw_os_error(),
            Some(libc::ENETUNREACH),
            "127.0.0.1 must be unreachable before lo is up: {unreachable}"
        );
        let netns = current_netns();
        bring_up_loopback(Some(netns.as_fd())).expect("bring up lo");
        assert!(link_state("lo").up, "lo is not up");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        TcpStream::connect(listener.local_addr().unwrap()).expect("connect over lo");
    });
}
