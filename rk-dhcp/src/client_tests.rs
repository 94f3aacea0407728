//! The state machine against a scripted server, with a fake clock.

use super::*;
use crate::message::tests::{server_reply, MAC, SERVER};
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::Decodable;

const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 77);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sent(t: &Transmit) -> Message {
    Message::from_bytes(&t.payload).unwrap()
}

/// A client bound to ADDR with lease 120 s, T1 5 s, T2 10 s; returns the
/// client and the time the lease counts from.
fn bound_client(t0: Instant) -> Client {
    let mut c = Client::new(ClientConfig::new(MAC), 1, t0);
    let out = c.handle_timeout(t0);
    assert_eq!(out.transmit.unwrap().message.name(), "DHCPDISCOVER");
    let offer = server_reply(MessageType::Offer, c.xid(), ADDR, &[]);
    let out = c.handle_packet(&offer, t0 + ms(2));
    let req = out.transmit.unwrap();
    assert_eq!(
        req.message,
        Outgoing::Select {
            offered: ADDR,
            server: SERVER
        }
    );
    assert_eq!(req.destination, Destination::Broadcast);
    let ack = server_reply(
        MessageType::Ack,
        c.xid(),
        ADDR,
        &[
            DhcpOption::AddressLeaseTime(120),
            DhcpOption::Renewal(5),
            DhcpOption::Rebinding(10),
        ],
    );
    let out = c.handle_packet(&ack, t0 + ms(3));
    let Some(Event::Bound(lease)) = out.event else {
        panic!("expected bound, got {out:?}");
    };
    assert_eq!(lease.cidr(), "10.0.3.77/24");
    assert_eq!(c.state(), State::Bound);
    c
}

#[test]
fn discover_offer_request_ack_binds() {
    let t0 = Instant::now();
    let c = bound_client(t0);
    // Lease times count from the REQUEST (sent at t0 + 2 ms).
    assert_eq!(c.next_deadline(), Some(t0 + ms(2) + Duration::from_secs(5)));
}

#[test]
fn discovers_back_off_then_report_no_answer() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 9, t0);
    let mut sends = Vec::new();
    let mut no_answer = None;
    let mut now = t0;
    while now < t0 + Duration::from_secs(20) {
        let out = c.handle_timeout(now);
        if let Some(t) = out.transmit {
            assert_eq!(t.destination, Destination::Broadcast);
            assert!(sent(&t).flags().broadcast());
            sends.push((now - t0).as_millis());
        }
        if let Some(Event::NoAnswer { waited, .. }) = out.event {
            no_answer = Some(waited);
        }
        now = c.next_deadline().unwrap();
    }
    assert_eq!(
        sends,
        [0, 250, 750, 1750, 3750, 7750, 11750, 15750, 19750],
        "DISCOVER times in ms"
    );
    assert_eq!(no_answer, Some(Duration::from_secs(15)));
}

#[test]
fn renews_at_t1_by_unicast_and_extends() {
    let t0 = Instant::now();
    let mut c = bound_client(t0);
    let t1 = c.next_deadline().unwrap();
    assert!(c.handle_timeout(t1 - ms(1)).transmit.is_none());
    let out = c.handle_timeout(t1);
    let renew = out.transmit.unwrap();
    assert_eq!(renew.message, Outgoing::Renew { address: ADDR });
    assert_eq!(renew.destination, Destination::Server(SERVER));
    assert_eq!(sent(&renew).ciaddr(), ADDR);
    assert_eq!(c.state(), State::Renewing);
    let ack = server_reply(
        MessageType::Ack,
        c.xid(),
        ADDR,
        &[DhcpOption::Renewal(5), DhcpOption::Rebinding(10)],
    );
    let out = c.handle_packet(&ack, t1 + ms(1));
    assert!(matches!(out.event, Some(Event::Renewed(ref l)) if l.address == ADDR));
    assert_eq!(c.state(), State::Bound);
    assert_eq!(c.next_deadline(), Some(t1 + Duration::from_secs(5)));
}

#[test]
fn unanswered_renewal_rebinds_at_t2_then_expires() {
    let t0 = Instant::now();
    let mut c = bound_client(t0);
    let start = t0 + ms(2);
    let mut now = c.next_deadline().unwrap();
    let mut log = Vec::new();
    let mut lost = None;
    while lost.is_none() {
        let out = c.handle_timeout(now);
        if let Some(t) = out.transmit {
            log.push(((now - start).as_secs(), t.message, t.destination));
        }
        if let Some(Event::Lost { lease, reason }) = out.event {
            lost = Some((lease.address, reason, (now - start).as_secs()));
        }
        now = c.next_deadline().unwrap();
    }
    assert_eq!(
        log[0],
        (
            5,
            Outgoing::Renew { address: ADDR },
            Destination::Server(SERVER)
        )
    );
    assert_eq!(
        log[1],
        (
            10,
            Outgoing::Rebind { address: ADDR },
            Destination::Broadcast
        )
    );
    let rebind = sent(&Transmit {
        message: log[1].1,
        payload: build(c.identity(), 1, 0, Outgoing::Rebind { address: ADDR }),
        destination: log[1].2,
    });
    assert_eq!(rebind.ciaddr(), ADDR);
    assert_eq!(lost, Some((ADDR, LossReason::Expired, 120)));
    // Straight back to DISCOVER, asking for the same address.
    let (_, last, _) = log.last().unwrap();
    assert_eq!(
        *last,
        Outgoing::Discover {
            requested: Some(ADDR),
            rapid_commit: true
        }
    );
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn nak_on_renewal_loses_the_lease_and_rediscovers() {
    let t0 = Instant::now();
    let mut c = bound_client(t0);
    let t1 = c.next_deadline().unwrap();
    c.handle_timeout(t1);
    let nak = server_reply(
        MessageType::Nak,
        c.xid(),
        Ipv4Addr::UNSPECIFIED,
        &[DhcpOption::Message("address not available".into())],
    );
    let out = c.handle_packet(&nak, t1 + ms(1));
    assert_eq!(
        out.event,
        Some(Event::Lost {
            lease: c_lease(),
            reason: LossReason::Nak(Some("address not available".into()))
        })
    );
    assert!(matches!(
        out.transmit.map(|t| t.message),
        Some(Outgoing::Discover { .. })
    ));
    // A new lease with another address is a new Bound, not a renewal.
    let other = Ipv4Addr::new(10, 0, 3, 99);
    let ack = server_reply(MessageType::Ack, c.xid(), other, &[DhcpOption::RapidCommit]);
    let out = c.handle_packet(&ack, t1 + ms(2));
    assert!(matches!(out.event, Some(Event::Bound(ref l)) if l.address == other));
}

fn c_lease() -> Lease {
    let bytes = server_reply(
        MessageType::Ack,
        1,
        ADDR,
        &[
            DhcpOption::AddressLeaseTime(120),
            DhcpOption::Renewal(5),
            DhcpOption::Rebinding(10),
        ],
    );
    Lease::from_message(&Message::from_bytes(&bytes).unwrap()).unwrap()
}

#[test]
fn release_is_unicast_and_ends_the_client() {
    let t0 = Instant::now();
    let mut c = bound_client(t0);
    let t = c.release(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(t.destination, Destination::Server(SERVER));
    let m = sent(&t);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Release));
    assert_eq!(m.ciaddr(), ADDR);
    assert_eq!(
        m.opts().get(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(
            c.identity().client_id.clone()
        ))
    );
    assert_eq!(c.state(), State::Released);
    assert_eq!(c.next_deadline(), None);
    assert!(c.release(t0 + Duration::from_secs(2)).is_none());
}

#[test]
fn release_without_a_lease_sends_nothing() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 3, t0);
    c.handle_timeout(t0);
    assert!(c.release(t0).is_none());
    assert_eq!(c.state(), State::Released);
}

#[test]
fn rapid_commit_ack_binds_from_selecting() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 4, t0);
    c.handle_timeout(t0);
    // An ACK without the rapid-commit option is not an answer to a DISCOVER.
    let plain = server_reply(MessageType::Ack, c.xid(), ADDR, &[]);
    let out = c.handle_packet(&plain, t0);
    assert!(out.event.is_none() && out.ignored.is_some());
    let rapid = server_reply(MessageType::Ack, c.xid(), ADDR, &[DhcpOption::RapidCommit]);
    assert!(matches!(
        c.handle_packet(&rapid, t0).event,
        Some(Event::Bound(_))
    ));
}

#[test]
fn other_transactions_are_ignored() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 5, t0);
    c.handle_timeout(t0);
    let offer = server_reply(MessageType::Offer, c.xid().wrapping_add(1), ADDR, &[]);
    let out = c.handle_packet(&offer, t0);
    assert_eq!(out.ignored, Some(ReplyError::Stale));
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn nak_while_requesting_starts_over_after_a_pause() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 6, t0);
    c.handle_timeout(t0);
    let offer = server_reply(MessageType::Offer, c.xid(), ADDR, &[]);
    c.handle_packet(&offer, t0);
    let nak = server_reply(MessageType::Nak, c.xid(), Ipv4Addr::UNSPECIFIED, &[]);
    let out = c.handle_packet(&nak, t0 + ms(1));
    assert!(out.transmit.is_none() && out.event.is_none());
    assert_eq!(c.state(), State::Selecting);
    assert!(c.next_deadline().unwrap() > t0 + ms(1));
}

#[test]
fn unanswered_requests_fall_back_to_discover() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 7, t0);
    c.handle_timeout(t0);
    let offer = server_reply(MessageType::Offer, c.xid(), ADDR, &[]);
    c.handle_packet(&offer, t0);
    let mut names = Vec::new();
    for _ in 0..5 {
        let now = c.next_deadline().unwrap();
        if let Some(t) = c.handle_timeout(now).transmit {
            names.push(t.message.name());
        }
    }
    assert_eq!(
        names,
        [
            "DHCPREQUEST",
            "DHCPREQUEST",
            "DHCPREQUEST",
            "DHCPDISCOVER",
            "DHCPDISCOVER"
        ]
    );
}

#[test]
fn infinite_lease_has_no_deadline() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 8, t0);
    c.handle_timeout(t0);
    let ack = server_reply(
        MessageType::Ack,
        c.xid(),
        ADDR,
        &[
            DhcpOption::RapidCommit,
            DhcpOption::AddressLeaseTime(u32::MAX),
        ],
    );
    assert!(matches!(
        c.handle_packet(&ack, t0).event,
        Some(Event::Bound(_))
    ));
    assert_eq!(c.next_deadline(), None);
}

fn rebooting_client(t0: Instant) -> (Client, Transmit) {
    let mut config = ClientConfig::new(MAC);
    config.reboot_address = Some(ADDR);
    let mut c = Client::new(config, 10, t0);
    assert_eq!(c.state(), State::Rebooting);
    let t = c.handle_timeout(t0).transmit.unwrap();
    (c, t)
}

#[test]
fn init_reboot_asks_for_the_old_address_and_binds_on_ack() {
    let t0 = Instant::now();
    let (mut c, t) = rebooting_client(t0);
    assert_eq!(t.message, Outgoing::Reboot { address: ADDR });
    assert_eq!(t.destination, Destination::Broadcast);
    let m = sent(&t);
    assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
    assert!(m.ciaddr().is_unspecified());
    assert!(!m.opts().contains(OptionCode::ServerIdentifier));
    assert_eq!(
        m.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    let ack = server_reply(MessageType::Ack, c.xid(), ADDR, &[]);
    assert!(matches!(
        c.handle_packet(&ack, t0 + ms(1)).event,
        Some(Event::Bound(ref l)) if l.address == ADDR
    ));
}

#[test]
fn init_reboot_nak_falls_back_to_discover_at_once() {
    let t0 = Instant::now();
    let (mut c, _) = rebooting_client(t0);
    let nak = server_reply(MessageType::Nak, c.xid(), Ipv4Addr::UNSPECIFIED, &[]);
    let out = c.handle_packet(&nak, t0 + ms(1));
    assert_eq!(
        out.transmit.map(|t| t.message),
        Some(Outgoing::Discover {
            requested: Some(ADDR),
            rapid_commit: true
        })
    );
    assert_eq!(c.state(), State::Selecting);
}

#[test]
fn unanswered_init_reboot_falls_back_to_discover() {
    let t0 = Instant::now();
    let (mut c, _) = rebooting_client(t0);
    let mut log = Vec::new();
    for _ in 0..3 {
        let now = c.next_deadline().unwrap();
        if let Some(t) = c.handle_timeout(now).transmit {
            log.push(((now - t0).as_millis(), t.message.name()));
        }
    }
    assert_eq!(
        log,
        [
            (250, "DHCPREQUEST"),
            (750, "DHCPDISCOVER"),
            (1750, "DHCPDISCOVER")
        ]
    );
}

/// A broadcast OFFER to another client, as every client on a bridge sees.
fn reply_to_another_client() -> Vec<u8> {
    let mut b = server_reply(MessageType::Offer, 0x5555, Ipv4Addr::new(10, 0, 3, 9), &[]);
    // chaddr starts at byte 28 of the BOOTP header.
    b[28..34].copy_from_slice(&[0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
    b
}

/// What was sent, in ms from the start, and the NoAnswer report.
type Run = (Vec<(u128, &'static str)>, Option<(Duration, Attempt)>);

/// Runs the client's timers from `t0` until `until`, feeding it a reply to
/// another client every `every` (if any); returns the NoAnswer report.
fn run_until(c: &mut Client, t0: Instant, until: Duration, every: Option<Duration>) -> Run {
    let mut sent_log = Vec::new();
    let mut report = None;
    let mut now = t0;
    let mut next_other = every.map(|e| t0 + e);
    while now < t0 + until {
        let out = match next_other {
            Some(t) if t <= c.next_deadline().unwrap() => {
                now = t;
                next_other = Some(t + every.unwrap());
                let out = c.handle_packet(&reply_to_another_client(), now);
                assert_eq!(out.ignored, Some(ReplyError::OtherClient));
                out
            }
            _ => {
                now = c.next_deadline().unwrap();
                c.handle_timeout(now)
            }
        };
        if let Some(t) = out.transmit {
            sent_log.push(((now - t0).as_millis(), t.message.name()));
        }
        if let Some(Event::NoAnswer { waited, attempt }) = out.event {
            report = Some((waited, attempt));
        }
    }
    (sent_log, report)
}

#[test]
fn a_busy_server_is_waited_for_up_to_the_longer_deadline() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 11, t0);
    let (_, report) = run_until(&mut c, t0, Duration::from_secs(70), Some(ms(2000)));
    let (waited, attempt) = report.expect("NoAnswer once the longer deadline passed");
    assert_eq!(waited, Duration::from_secs(60));
    assert_eq!(attempt.replies_to_others, 30);
    assert_eq!(attempt.offers, 0);
    let text = attempt.describe(waited);
    assert!(
        text.starts_with(&format!(
            "sent {} DHCPDISCOVERs and 0 DHCPREQUESTs over 60.0s; got no answer; meanwhile the server sent 30 replies to other clients",
            attempt.discovers
        )),
        "{text}"
    );
}

#[test]
fn a_server_that_falls_silent_is_given_up_15s_after_it_was_last_heard() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 12, t0);
    c.handle_timeout(t0);
    c.handle_packet(&reply_to_another_client(), t0 + ms(9000));
    let mut now = t0;
    let mut report = None;
    while report.is_none() && now < t0 + Duration::from_secs(40) {
        now = c.next_deadline().unwrap();
        if let Some(Event::NoAnswer { waited, .. }) = c.handle_timeout(now).event {
            report = Some(waited);
        }
    }
    assert_eq!(report, Some(Duration::from_secs(24)));
}

#[test]
fn no_answer_counts_from_the_start_and_says_what_was_sent() {
    // INIT-REBOOT falls back to DISCOVER at 0.75 s: the report still
    // counts from the start (it once said "within 14s").
    let t0 = Instant::now();
    let (mut c, _) = rebooting_client(t0);
    let (log, report) = run_until(&mut c, t0, Duration::from_secs(16), None);
    assert_eq!(log[..2], [(250, "DHCPREQUEST"), (750, "DHCPDISCOVER")]);
    let (waited, attempt) = report.unwrap();
    assert_eq!(waited, Duration::from_secs(15));
    assert_eq!(
        attempt.describe(waited),
        "sent 5 DHCPDISCOVERs and 2 DHCPREQUESTs over 15.0s; got no answer from any DHCP server"
    );
}

#[test]
fn a_pending_offer_is_kept_while_the_server_works_through_its_queue() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 13, t0);
    c.handle_timeout(t0);
    let offer = server_reply(MessageType::Offer, c.xid(), ADDR, &[]);
    c.handle_packet(&offer, t0 + ms(10));
    let xid = c.xid();
    // The server answers others (it pings a new address for each, 3 s).
    let (log, report) = run_until(&mut c, t0 + ms(10), Duration::from_secs(12), Some(ms(3000)));
    assert!(report.is_none());
    assert!(
        log.iter().all(|(_, m)| *m == "DHCPREQUEST") && log.len() >= 6,
        "{log:?}"
    );
    assert_eq!(c.state(), State::Requesting);
    // Our REQUEST's turn comes: the late ACK still binds.
    let ack = server_reply(MessageType::Ack, xid, ADDR, &[]);
    assert!(matches!(
        c.handle_packet(&ack, t0 + Duration::from_secs(12)).event,
        Some(Event::Bound(ref l)) if l.address == ADDR
    ));
}

#[test]
fn abandoning_a_requested_offer_releases_it() {
    let t0 = Instant::now();
    let mut c = Client::new(ClientConfig::new(MAC), 14, t0);
    c.handle_timeout(t0);
    assert_eq!(c.clone().abandon(t0), None, "nothing requested yet");
    let offer = server_reply(MessageType::Offer, c.xid(), ADDR, &[]);
    c.handle_packet(&offer, t0);
    let t = c.abandon(t0 + ms(5)).expect("a release");
    assert_eq!(
        t.message,
        Outgoing::Release {
            address: ADDR,
            server: SERVER
        }
    );
    assert_eq!(t.destination, Destination::Server(SERVER));
    assert_eq!(c.state(), State::Released);
    assert_eq!(c.next_deadline(), None);
}
