//! The wire format of protocol v1, pinned.

use super::*;

#[test]
fn hello_round_trips_with_flattened_info() {
    let msg = DriverMessage::Hello {
        protocol_version: 1,
        info: DriverInfo::new("slirp4netns", "0.1.0"),
    };
    let bytes = encode(&msg);
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.contains(r#""type":"hello""#), "{text}");
    assert!(text.contains(r#""driver":"slirp4netns""#), "{text}");
    assert_eq!(decode::<DriverMessage>(&bytes).unwrap(), msg);
}

#[test]
fn unknown_fields_are_ignored_and_unknown_types_rejected() {
    let m: CoreMessage = decode(br#"{"type":"shutdown","future_field":[1,2]}"#).unwrap();
    assert_eq!(m, CoreMessage::Shutdown);
    assert!(decode::<CoreMessage>(br#"{"type":"reboot"}"#).is_err());
    assert!(decode::<CoreMessage>(br#"{"no_type":1}"#).is_err());
}

#[test]
fn configure_accepts_minimal_object() {
    let m: CoreMessage = decode(br#"{"type":"configure","child_pid":5,"state_dir":"/s"}"#).unwrap();
    match m {
        CoreMessage::Configure(req) => {
            assert_eq!(req.child_pid, 5);
            assert_eq!(req.mtu, None);
            assert!(req.options.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn port_messages_round_trip() {
    let add = CoreMessage::AddPort(PortRule {
        id: 2,
        proto: "udp".into(),
        parent_ip: Some(Ipv4Addr::LOCALHOST.into()),
        parent_port: 9090,
        child_ip: None,
        child_port: 90,
    });
    let text = String::from_utf8(encode(&add)).unwrap();
    assert_eq!(
        text,
        r#"{"type":"add_port","id":2,"proto":"udp","parent_ip":"127.0.0.1","parent_port":9090,"child_ip":"","child_port":90}"#
    );
    assert_eq!(decode::<CoreMessage>(text.as_bytes()).unwrap(), add);
    let err: DriverMessage = decode(br#"{"type":"port_error","message":"no"}"#).unwrap();
    assert_eq!(
        err,
        DriverMessage::PortError {
            id: None,
            message: "no".into()
        }
    );
    let offer: DriverMessage = decode(br#"{"type":"port_driver","protos":["tcp","udp"]}"#).unwrap();
    assert!(matches!(offer, DriverMessage::PortDriver(o) if !o.disallow_loopback_child_ip));
}

/// The exact bytes of v1 as they were before the fields were typed
/// (captured from the string-typed messages): typing must not change
/// the wire.
#[test]
fn typed_fields_keep_the_v1_json_byte_for_byte() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            encode(&CoreMessage::Configure(ConfigureRequest {
                child_pid: 42,
                state_dir: "/run/user/1000/rk".into(),
                mtu: Some(65520),
                cidr: Some("10.0.2.0/24".parse().unwrap()),
                ifname: Some("tap0".into()),
                disable_host_loopback: true,
                ipv6: true,
                detach_netns: false,
                options: [("slirp4netns-sandbox".to_owned(), "auto".to_owned())].into(),
            })),
            r#"{"type":"configure","child_pid":42,"state_dir":"/run/user/1000/rk","mtu":65520,"cidr":"10.0.2.0/24","ifname":"tap0","disable_host_loopback":true,"ipv6":true,"detach_netns":false,"options":{"slirp4netns-sandbox":"auto"}}"#,
        ),
        (
            encode(&CoreMessage::Configure(ConfigureRequest::default())),
            r#"{"type":"configure","child_pid":0,"state_dir":"","mtu":null,"cidr":null,"ifname":null,"disable_host_loopback":false,"ipv6":false,"detach_netns":false,"options":{}}"#,
        ),
        (
            encode(&DriverMessage::Configured(NetworkConfig {
                interface: "tap0".into(),
                ipv4: Some("10.0.2.100/24".parse().unwrap()),
                gateway4: Some(Ipv4Addr::new(10, 0, 2, 2)),
                ipv6: Some("fd00::100/64".parse().unwrap()),
                gateway6: Some("fd00::2".parse().unwrap()),
                dns: vec![
                    Ipv4Addr::new(10, 0, 2, 3).into(),
                    "fd00::3".parse().unwrap(),
                ],
                mtu: 65520,
                configured_by_driver: false,
                dynamic: true,
                info: [("lease".to_owned(), "3600".to_owned())].into(),
            })),
            r#"{"type":"configured","interface":"tap0","ipv4":"10.0.2.100/24","gateway4":"10.0.2.2","ipv6":"fd00::100/64","gateway6":"fd00::2","dns":["10.0.2.3","fd00::3"],"mtu":65520,"configured_by_driver":false,"dynamic":true,"info":{"lease":"3600"}}"#,
        ),
        (
            encode(&DriverMessage::Configured(NetworkConfig::default())),
            r#"{"type":"configured","interface":"","ipv4":null,"gateway4":null,"ipv6":null,"gateway6":null,"dns":[],"mtu":0,"configured_by_driver":false,"dynamic":false,"info":{}}"#,
        ),
        (
            encode(&DriverMessage::PortList {
                ports: vec![PortRule {
                    id: 1,
                    proto: "tcp".into(),
                    parent_ip: None,
                    parent_port: 8080,
                    child_ip: None,
                    child_port: 80,
                }],
            }),
            r#"{"type":"port_list","ports":[{"id":1,"proto":"tcp","parent_ip":"","parent_port":8080,"child_ip":"","child_port":80}]}"#,
        ),
        (
            encode(&CoreMessage::AddPort(PortRule {
                id: 3,
                proto: "tcp6".into(),
                parent_ip: Some(Ipv6Addr::LOCALHOST.into()),
                parent_port: 8080,
                child_ip: Some("fd00::100".parse().unwrap()),
                child_port: 80,
            })),
            r#"{"type":"add_port","id":3,"proto":"tcp6","parent_ip":"::1","parent_port":8080,"child_ip":"fd00::100","child_port":80}"#,
        ),
        (
            encode(&CoreMessage::Hello {
                protocol_version: 1,
                core_version: "0.1.0".into(),
            }),
            r#"{"type":"hello","protocol_version":1,"core_version":"0.1.0"}"#,
        ),
        (
            encode(&DriverMessage::Hello {
                protocol_version: 1,
                info: DriverInfo {
                    commit: Some("abc".into()),
                    ..DriverInfo::new("pasta", "0.1.0")
                        .with_capabilities(&["ipv6", "port-driver:implicit"])
                        .with_options(&["pasta-binary"])
                },
            }),
            r#"{"type":"hello","protocol_version":1,"driver":"pasta","version":"0.1.0","capabilities":["ipv6","port-driver:implicit"],"options":["pasta-binary"],"commit":"abc"}"#,
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), want);
    }
}

#[test]
fn typed_fields_decode_from_v1_json() {
    let m: DriverMessage = decode(
        br#"{"type":"configured","interface":"eth0","ipv4":"10.0.3.50/24","gateway4":"10.0.3.1","dns":["10.0.3.1"],"mtu":1500}"#,
    )
    .unwrap();
    let DriverMessage::Configured(c) = m else {
        panic!("not configured: {m:?}")
    };
    assert_eq!(c.ipv4, Some("10.0.3.50/24".parse().unwrap()));
    assert_eq!(c.ipv4.unwrap().addr(), Ipv4Addr::new(10, 0, 3, 50));
    assert_eq!(c.gateway4, Some(Ipv4Addr::new(10, 0, 3, 1)));
    assert_eq!(c.dns, vec![IpAddr::from(Ipv4Addr::new(10, 0, 3, 1))]);
    // A port rule whose addresses are missing, empty or null: no address.
    for text in [
        r#"{"type":"add_port","id":1,"proto":"tcp","parent_port":1,"child_port":2}"#,
        r#"{"type":"add_port","id":1,"proto":"tcp","parent_ip":"","parent_port":1,"child_ip":null,"child_port":2}"#,
    ] {
        let CoreMessage::AddPort(r) = decode(text.as_bytes()).unwrap() else {
            panic!("not add_port: {text}")
        };
        assert_eq!((r.parent_ip, r.child_ip), (None, None), "{text}");
    }
}

#[test]
fn malformed_addresses_are_decode_errors() {
    for (text, want) in [
        (
            r#"{"type":"configured","interface":"tap0","ipv4":"10.0.2.100","mtu":1500}"#,
            r#"invalid IPv4 address (an address with its prefix length, like 10.0.2.100/24) "10.0.2.100""#,
        ),
        (
            r#"{"type":"configured","interface":"tap0","ipv4":"10.0.2.100/33","mtu":1500}"#,
            "invalid IPv4 address",
        ),
        (
            r#"{"type":"configured","interface":"tap0","gateway4":"fd00::1","mtu":1500}"#,
            r#"invalid IPv4 gateway "fd00::1""#,
        ),
        (
            r#"{"type":"configured","interface":"tap0","ipv6":"10.0.2.100/24","mtu":1500}"#,
            "invalid IPv6 address",
        ),
        (
            r#"{"type":"configured","interface":"tap0","gateway6":"10.0.2.2","mtu":1500}"#,
            r#"invalid IPv6 gateway "10.0.2.2""#,
        ),
        (
            r#"{"type":"configured","interface":"tap0","dns":["10.0.2.3\noptions ndots:15"],"mtu":1500}"#,
            r#"invalid nameserver "10.0.2.3\noptions ndots:15""#,
        ),
        (
            r#"{"type":"port_list","ports":[{"id":1,"proto":"tcp","parent_ip":"localhost","parent_port":1,"child_ip":"","child_port":2}]}"#,
            r#"invalid port address "localhost""#,
        ),
    ] {
        let e = decode::<DriverMessage>(text.as_bytes()).unwrap_err();
        assert!(matches!(e, DecodeError::Json(_)), "{text}: {e}");
        assert!(e.to_string().contains(want), "{text}: {e}");
    }
    let e = decode::<CoreMessage>(
        br#"{"type":"configure","child_pid":1,"state_dir":"/s","cidr":"10.0.2.0"}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("malformed"), "{e}");
}

#[test]
fn the_cores_limits_on_an_answer() {
    let good = NetworkConfig {
        interface: "tap0".into(),
        mtu: 65520,
        dns: vec![Ipv4Addr::new(10, 0, 2, 3).into()],
        ..Default::default()
    };
    assert_eq!(good.check(), Ok(()));
    let faults: [fn(&mut NetworkConfig); 7] = [
        |c| c.interface = "a/b".into(),
        |c| c.interface = "x".repeat(16),
        |c| c.interface = String::new(),
        |c| c.mtu = 65522,
        |c| c.mtu = 10,
        |c| c.dns = vec![c.dns[0]; 5000],
        |c| {
            c.info.insert("k".into(), "v\n".into());
        },
    ];
    for f in faults {
        let mut c = good.clone();
        f(&mut c);
        let e = c.check().unwrap_err();
        assert!(e.starts_with("answered "), "{c:?}: {e}");
    }
}

#[test]
fn oversized_message_is_rejected_before_parsing() {
    let big = vec![b' '; MAX_MESSAGE_SIZE + 1];
    assert!(matches!(
        decode::<CoreMessage>(&big),
        Err(DecodeError::TooLarge(_))
    ));
}
