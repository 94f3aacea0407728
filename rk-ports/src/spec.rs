//! Port specs as RootlessKit writes them: `PARENTIP:PARENTPORT[:CHILDIP]:CHILDPORT/PROTO`,
//! e.g. `127.0.0.1:8080:80/tcp` or `[::1]:8080:[::1]:80/tcp6`, and their
//! JSON form in the REST API (`{"proto":"tcp","parentIP":...}`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A port to publish. Field names and "omit when empty" follow RootlessKit's
/// `port.Spec`, so the JSON is the same on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// `tcp`, `tcp4`, `tcp6`, `udp`, `udp4`, `udp6` (`sctp*` parse but no
    /// driver here forwards them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proto: String,
    /// Host address to listen on; empty means every address.
    #[serde(rename = "parentIP", default, skip_serializing_if = "String::is_empty")]
    pub parent_ip: String,
    #[serde(rename = "parentPort", default, skip_serializing_if = "is_zero")]
    pub parent_port: i64,
    /// Address inside the namespace to connect to; empty means the port
    /// driver's default (127.0.0.1 for builtin, the child's IP for slirp4netns).
    #[serde(rename = "childIP", default, skip_serializing_if = "String::is_empty")]
    pub child_ip: String,
    #[serde(rename = "childPort", default, skip_serializing_if = "is_zero")]
    pub child_port: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A published port with its id, as `GET /v1/ports` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    pub id: i64,
    pub spec: PortSpec,
}

/// The transport and address family of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp(Family),
    Udp(Family),
    Sctp(Family),
}

/// `tcp` (no suffix) listens like Go's `net.Listen("tcp", ...)`: a wildcard
/// address listens on IPv6 and IPv4 at once; `tcp4`/`tcp6` only on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Any,
    V4,
    V6,
}

impl Proto {
    pub fn parse(s: &str) -> Result<Proto, SpecError> {
        let (base, family) = match s.strip_suffix('4') {
            Some(b) => (b, Family::V4),
            None => match s.strip_suffix('6') {
                Some(b) => (b, Family::V6),
                None => (s, Family::Any),
            },
        };
        match base {
            "tcp" => Ok(Proto::Tcp(family)),
            "udp" => Ok(Proto::Udp(family)),
            "sctp" => Ok(Proto::Sctp(family)),
            _ => Err(SpecError(format!(
                "unknown proto: {s:?} (use tcp, tcp4, tcp6, udp, udp4 or udp6)"
            ))),
        }
    }

    pub fn family(self) -> Family {
        match self {
            Proto::Tcp(f) | Proto::Udp(f) | Proto::Sctp(f) => f,
        }
    }

    pub fn is_tcp(self) -> bool {
        matches!(self, Proto::Tcp(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl PortSpec {
    /// Parses `PARENTIP:PARENTPORT[:CHILDIP]:CHILDPORT/PROTO` (IPv6 addresses
    /// in brackets). Like RootlessKit's `ParsePortSpec`, plus one extension:
    /// the parent IP may be left out (`8080:80/tcp` = every address).
    pub fn parse(text: &str) -> Result<PortSpec, SpecError> {
        let bad = |why: &str| {
            SpecError(format!(
                "invalid port spec {text:?}: {why}; expected PARENTIP:PARENTPORT[:CHILDIP]:CHILDPORT/PROTO, e.g. 127.0.0.1:8080:80/tcp"
            ))
        };
        let (rest, proto) = text.rsplit_once('/').ok_or_else(|| bad("missing /PROTO"))?;
        Proto::parse(proto).map_err(|e| bad(&e.0))?;
        let parts = split_colons(rest).ok_or_else(|| bad("unbalanced [ ]"))?;
        let (parent_ip, parent_port, child_ip, child_port) = match parts.as_slice() {
            [pp, cp] => ("", *pp, "", *cp),
            [pip, pp, cp] => (*pip, *pp, "", *cp),
            [pip, pp, cip, cp] => (*pip, *pp, *cip, *cp),
            _ => return Err(bad("wrong number of ':'-separated parts")),
        };
        for (what, ip) in [("parent IP", parent_ip), ("child IP", child_ip)] {
            if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
                return Err(bad(&format!("{what} {ip:?} is not an IP address")));
            }
        }
        let port = |what: &str, s: &str| {
            s.parse::<i64>()
                .map_err(|_| bad(&format!("{what} {s:?} is not a number")))
        };
        Ok(PortSpec {
            proto: proto.to_owned(),
            parent_ip: parent_ip.to_owned(),
            parent_port: port("parent port", parent_port)?,
            child_ip: child_ip.to_owned(),
            child_port: port("child port", child_port)?,
        })
    }

    /// Checks the spec alone (RootlessKit's `ValidatePortSpec` without the
    /// conflict check, which [`check_conflicts`] does).
    pub fn validate(&self) -> Result<Proto, SpecError> {
        let proto = Proto::parse(&self.proto)?;
        if !self.parent_ip.is_empty() && self.parent_ip.parse::<IpAddr>().is_err() {
            return Err(SpecError(format!("invalid ParentIP: {:?}", self.parent_ip)));
        }
        if !self.child_ip.is_empty() && self.child_ip.parse::<IpAddr>().is_err() {
            return Err(SpecError(format!("invalid ChildIP: {:?}", self.child_ip)));
        }
        if !(1..=65535).contains(&self.parent_port) {
            return Err(SpecError(format!(
                "invalid ParentPort: {} (must be 1-65535)",
                self.parent_port
            )));
        }
        if !(1..=65535).contains(&self.child_port) {
            return Err(SpecError(format!(
                "invalid ChildPort: {} (must be 1-65535)",
                self.child_port
            )));
        }
        if let (Ok(ip), Family::V4 | Family::V6) =
            (self.parent_ip.parse::<IpAddr>(), proto.family())
        {
            let v6 = ip.is_ipv6() && ip.to_canonical().is_ipv6();
            if v6 != (proto.family() == Family::V6) {
                return Err(SpecError(format!(
                    "parent IP {} does not match proto {}",
                    self.parent_ip, self.proto
                )));
            }
        }
        Ok(proto)
    }

    /// The parent IP parsed, `None` for "every address".
    pub fn parent_addr(&self) -> Option<IpAddr> {
        self.parent_ip.parse().ok()
    }

    /// The child IP parsed, `None` for "the port driver's default".
    pub fn child_addr(&self) -> Option<IpAddr> {
        self.child_ip.parse().ok()
    }
}

/// RootlessKit's conflict rule: same proto, same parent IP and port.
pub fn check_conflicts(
    spec: &PortSpec,
    existing: &BTreeMap<i64, PortStatus>,
) -> Result<(), SpecError> {
    for (id, p) in existing {
        if p.spec.proto == spec.proto
            && p.spec.parent_ip == spec.parent_ip
            && p.spec.parent_port == spec.parent_port
        {
            return Err(SpecError(format!("conflict with ID {id}")));
        }
    }
    Ok(())
}

/// Splits at ':' outside brackets and removes the brackets.
fn split_colons(s: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' if depth == 0 => return None,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    parts.push(&s[start..]);
    Some(
        parts
            .into_iter()
            .map(|p| {
                p.strip_prefix('[')
                    .and_then(|p| p.strip_suffix(']'))
                    .unwrap_or(p)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(proto: &str, pip: &str, pp: i64, cip: &str, cp: i64) -> PortSpec {
        PortSpec {
            proto: proto.into(),
            parent_ip: pip.into(),
            parent_port: pp,
            child_ip: cip.into(),
            child_port: cp,
        }
    }

    #[test]
    fn parses_rootlesskit_examples() {
        let examples = [
            (
                "127.0.0.1:8080:80/tcp",
                spec("tcp", "127.0.0.1", 8080, "", 80),
            ),
            (
                "127.0.0.1:8080:80/tcp4",
                spec("tcp4", "127.0.0.1", 8080, "", 80),
            ),
            (
                "127.0.0.1:8080:10.0.2.100:80/tcp",
                spec("tcp", "127.0.0.1", 8080, "10.0.2.100", 80),
            ),
            ("[::1]:8080:80/tcp", spec("tcp", "::1", 8080, "", 80)),
            (
                "[::1]:8080:[::2]:80/udp",
                spec("udp", "::1", 8080, "::2", 80),
            ),
            (":8080:80/tcp", spec("tcp", "", 8080, "", 80)),
            ("8080:80/udp", spec("udp", "", 8080, "", 80)),
        ];
        for (text, parsed) in examples {
            assert_eq!(PortSpec::parse(text).unwrap(), parsed, "{text}");
        }
    }

    #[test]
    fn rejects_what_rootlesskit_rejects() {
        for bad in [
            "bad",
            "8080",
            "127.0.0.1:8080:80/tcp,127.0.0.1:4040:40/tcp",
            "127.0.0.1:8080:80/icmp",
            "::1:8080:80/tcp",
            "[::1:8080:80/tcp",
            "300.0.0.1:8080:80/tcp",
            "127.0.0.1:http:80/tcp",
        ] {
            assert!(PortSpec::parse(bad).is_err(), "{bad}");
        }
        let e = PortSpec::parse("127.0.0.1:8080:80").unwrap_err().0;
        assert!(e.contains("/PROTO"), "{e}");
    }

    #[test]
    fn validation_checks_ports_ips_and_family() {
        assert!(spec("tcp", "", 80, "", 80).validate().is_ok());
        assert!(spec("tcp", "", 0, "", 80).validate().is_err());
        assert!(spec("tcp", "", 80, "", 65536).validate().is_err());
        assert!(spec("tcp", "x", 80, "", 80).validate().is_err());
        assert!(spec("tcp5", "", 80, "", 80).validate().is_err());
        assert!(spec("tcp6", "127.0.0.1", 80, "", 80).validate().is_err());
        assert!(spec("tcp4", "::1", 80, "", 80).validate().is_err());
        assert!(spec("tcp6", "::1", 80, "", 80).validate().is_ok());
    }

    #[test]
    fn conflicts_are_same_proto_ip_and_port() {
        let mut existing = BTreeMap::new();
        existing.insert(
            1,
            PortStatus {
                id: 1,
                spec: spec("tcp", "", 80, "", 80),
            },
        );
        let e = check_conflicts(&spec("tcp", "", 80, "", 81), &existing).unwrap_err();
        assert_eq!(e.0, "conflict with ID 1");
        assert!(check_conflicts(&spec("udp", "", 80, "", 80), &existing).is_ok());
        assert!(check_conflicts(&spec("tcp", "127.0.0.1", 80, "", 80), &existing).is_ok());
    }

    #[test]
    fn json_matches_rootlesskit_field_names_and_omits_empty() {
        let s = serde_json::to_string(&spec("tcp", "", 8080, "", 80)).unwrap();
        assert_eq!(s, r#"{"proto":"tcp","parentPort":8080,"childPort":80}"#);
        let st = PortStatus {
            id: 3,
            spec: spec("udp", "127.0.0.1", 9090, "10.0.2.100", 90),
        };
        assert_eq!(
            serde_json::to_string(&st).unwrap(),
            r#"{"id":3,"spec":{"proto":"udp","parentIP":"127.0.0.1","parentPort":9090,"childIP":"10.0.2.100","childPort":90}}"#
        );
        let back: PortSpec =
            serde_json::from_str(r#"{"proto":"tcp","parentPort":1,"childPort":2,"x":1}"#).unwrap();
        assert_eq!(back, spec("tcp", "", 1, "", 2));
    }
}
