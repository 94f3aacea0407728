//! Which ports programs in the namespace have bound, from the namespace's
//! `/proc/net/{tcp,tcp6,udp,udp6}` (the same tables pasta scans).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a listening TCP socket (TCP_LISTEN).
pub const TCP_LISTEN: u8 = 0x0A;
/// `st` of a bound, unconnected UDP socket (TCP_CLOSE): a server.
pub const UDP_UNCONNECTED: u8 = 0x07;

/// A local address some socket is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub addr: IpAddr,
    pub port: u16,
}

/// The kernel prints an address as its 32-bit words in host byte order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&hex[i * 8..i * 8 + 8])?);
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// The sockets of one table in state `state`.
pub fn parse(table: &str, state: u8) -> Vec<Bound> {
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(st)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if u8::from_str_radix(st, 16) != Ok(state) {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else {
            continue;
        };
        let (Some(addr), Ok(port)) = (parse_addr(addr), u16::from_str_radix(port, 16)) else {
            continue;
        };
        if port != 0 {
            found.push(Bound { addr, port });
        }
    }
    found
}

/// For each port, where inside a forwarded connection goes: loopback when
/// something listens on a wildcard or loopback address (IPv4 preferred),
/// else the one address it is bound to.
pub fn targets(bound: &[Bound]) -> BTreeMap<u16, SocketAddr> {
    let mut by_port: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for b in bound {
        by_port.entry(b.port).or_default().push(b.addr);
    }
    by_port
        .into_iter()
        .map(|(port, addrs)| {
            let local = |a: &IpAddr| a.is_unspecified() || a.is_loopback();
            let ip = if addrs.iter().any(|a| a.is_ipv4() && local(a)) {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else if addrs.iter().any(local) {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                addrs[0]
            };
            (port, SocketAddr::new(ip, port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:A0FA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 6402000A:B2A4 0202000A:0050 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n\
   3: 6402000A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0\n";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0\n\
   1: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0 100 0 0 10 0\n\
   2: 0000000000000000FFFF00000100007F:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0 100 0 0 10 0\n";

    #[test]
    fn listening_ipv4_sockets_are_read_and_connections_skipped() {
        let b = parse(TCP, TCP_LISTEN);
        assert_eq!(
            b,
            [
                Bound {
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 41210
                },
                Bound {
                    addr: "127.0.0.1".parse().unwrap(),
                    port: 80
                },
                Bound {
                    addr: "10.0.2.100".parse().unwrap(),
                    port: 8080
                },
            ]
        );
    }

    #[test]
    fn ipv6_words_are_in_host_order_and_mapped_addresses_become_ipv4() {
        let b = parse(TCP6, TCP_LISTEN);
        assert_eq!(b[0].addr, "::".parse::<IpAddr>().unwrap());
        assert_eq!(b[1].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(b[2].addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(b[2].port, 0x1F93);
    }

    #[test]
    fn targets_prefer_ipv4_loopback_then_ipv6_then_the_bound_address() {
        let mut all = parse(TCP, TCP_LISTEN);
        all.extend(parse(TCP6, TCP_LISTEN));
        let t = targets(&all);
        assert_eq!(t[&41210], "127.0.0.1:41210".parse().unwrap());
        assert_eq!(t[&80], "127.0.0.1:80".parse().unwrap());
        assert_eq!(t[&8080], "10.0.2.100:8080".parse().unwrap());
        assert_eq!(t[&0x1F91], "[::1]:8081".parse().unwrap());
        assert_eq!(t[&0x1F93], "127.0.0.1:8083".parse().unwrap());
    }

    #[test]
    fn garbage_is_skipped() {
        assert!(parse("header\nnot a table line\n 0: zz:zz 0:0 0A\n", TCP_LISTEN).is_empty());
        assert!(parse("", UDP_UNCONNECTED).is_empty());
    }
}
