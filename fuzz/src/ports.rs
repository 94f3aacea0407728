//! rk-ports: port specs from the command line and from API clients, and the
//! REST API's HTTP requests (any process that can reach
//! `$STATE_DIR/api.sock`).
//!
//! - `port_spec`: [`PortSpec::parse`] (`-p 127.0.0.1:8080:80/tcp`) and the
//!   JSON form a `POST /v1/ports` body carries;
//! - `api_request`: the bytes a client writes to the API socket, parsed with
//!   [`parse_request`] the way the server's read loop does it, and answered
//!   by [`rk_ports::api::route`] in front of the real [`PortManager`] (with
//!   a port driver that only records); also [`parse_response`] for what the
//!   client side (rootlessctl) reads.

use crate::chunks::{pieces, sizes_and_rest};
use rk_ports::api::{ApiError, Backend, ErrorJson, Info, PortDriverInfo};
use rk_ports::http::{parse_request, parse_response, HttpError, Parsed, Request, MAX_BODY};
use rk_ports::manager::{PortDriver, PortManager};
use rk_ports::{PortSpec, PortStatus, Proto};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;

/// `port_spec`: the input is tried as the text of a `-p` flag and as a JSON
/// body.
pub fn spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = PortSpec::parse(&text) {
        Proto::parse(&spec.proto).expect("a parsed spec has a known proto");
        for ip in [&spec.parent_ip, &spec.child_ip] {
            assert!(ip.is_empty() || ip.parse::<IpAddr>().is_ok(), "{spec:?}");
        }
        assert_eq!(
            PortSpec::parse(&to_text(&spec)).as_ref(),
            Ok(&spec),
            "{spec:?} written as {:?}",
            to_text(&spec)
        );
        check_spec(&spec);
    }
    if let Ok(spec) = serde_json::from_slice::<PortSpec>(data) {
        check_spec(&spec);
    }
}

/// `spec` written the way `-p` takes it.
fn to_text(s: &PortSpec) -> String {
    let ip = |a: &str| {
        if a.contains(':') {
            format!("[{a}]")
        } else {
            a.to_owned()
        }
    };
    match (s.parent_ip.as_str(), s.child_ip.as_str()) {
        ("", "") => format!("{}:{}/{}", s.parent_port, s.child_port, s.proto),
        (p, "") => format!("{}:{}:{}/{}", ip(p), s.parent_port, s.child_port, s.proto),
        (p, c) => format!(
            "{}:{}:{}:{}/{}",
            ip(p),
            s.parent_port,
            ip(c),
            s.child_port,
            s.proto
        ),
    }
}

/// What holds for any spec, however it came: its JSON form reads back
/// the same, and one that validates is usable as it is.
fn check_spec(spec: &PortSpec) {
    let json = serde_json::to_vec(spec).expect("a spec serializes");
    let again: PortSpec = serde_json::from_slice(&json).expect("a spec's JSON reads back");
    assert_eq!(&again, spec);
    if let Ok(proto) = spec.validate() {
        assert_valid(spec, proto);
        assert_eq!(PortSpec::parse(&to_text(spec)).as_ref(), Ok(spec));
    }
}

fn assert_valid(spec: &PortSpec, proto: Proto) {
    assert_eq!(Proto::parse(&spec.proto), Ok(proto));
    assert!((1..=65535).contains(&spec.parent_port), "{spec:?}");
    assert!((1..=65535).contains(&spec.child_port), "{spec:?}");
    assert!(spec.parent_ip.is_empty() || spec.parent_addr().is_some());
    assert!(spec.child_ip.is_empty() || spec.child_ip.parse::<IpAddr>().is_ok());
}

/// What the manager hands the port driver: checked, then kept.
type Forwarded = Rc<RefCell<BTreeMap<i64, PortSpec>>>;

/// A port driver that forwards nothing and checks what it is asked to do.
struct Recorder(Forwarded);

impl PortDriver for Recorder {
    fn info(&self) -> PortDriverInfo {
        PortDriverInfo {
            driver: "fuzz".into(),
            protos: ["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"]
                .map(String::from)
                .to_vec(),
            disallow_loopback_child_ip: false,
        }
    }

    fn add(&mut self, id: i64, spec: &PortSpec, proto: Proto) -> Result<(), String> {
        assert_valid(spec, proto);
        let mut ports = self.0.borrow_mut();
        assert!(!ports.contains_key(&id), "id {id} given twice");
        for (other, p) in ports.iter() {
            assert!(
                !(p.proto == spec.proto
                    && p.parent_ip == spec.parent_ip
                    && p.parent_port == spec.parent_port),
                "{spec:?} conflicts with {other}: {p:?}"
            );
        }
        ports.insert(id, spec.clone());
        Ok(())
    }

    fn remove(&mut self, id: i64) -> Result<(), String> {
        assert!(self.0.borrow_mut().remove(&id).is_some(), "unknown id {id}");
        Ok(())
    }
}

struct Api {
    manager: PortManager,
}

impl Backend for Api {
    fn info(&mut self) -> Info {
        Info {
            api_version: rk_ports::api::API_VERSION.into(),
            port_driver: Some(self.manager.driver().info()),
            ..Default::default()
        }
    }
    fn list_ports(&mut self) -> Result<Vec<PortStatus>, ApiError> {
        self.manager.list()
    }
    fn add_port(&mut self, spec: PortSpec) -> Result<PortStatus, ApiError> {
        self.manager.add(spec)
    }
    fn remove_port(&mut self, id: i64) -> Result<(), ApiError> {
        self.manager.remove(id)
    }
}

/// What the server's read loop makes of a connection's bytes: the requests
/// it answers, then the error that closes it, if any.
#[derive(Debug, PartialEq)]
struct Conversation {
    requests: Vec<Request>,
    /// The status the server answers the error with (its message may
    /// differ with where the reads cut).
    error: Option<u16>,
}

/// Parses the connection's bytes as `ApiServer` does: after each read,
/// every complete request at the front of the buffer is taken; an error or
/// a request without keep-alive ends the connection.
fn serve(reads: &[&[u8]]) -> Conversation {
    let mut c = Conversation {
        requests: Vec::new(),
        error: None,
    };
    let mut input = Vec::new();
    for read in reads {
        input.extend_from_slice(read);
        loop {
            match parse_request(&input) {
                Ok(Parsed::Complete(req, used)) => {
                    assert!(used > 0 && used <= input.len());
                    assert!(req.body.len() <= MAX_BODY);
                    assert!(!req.path.contains(['?', '#']), "{:?}", req.path);
                    input.drain(..used);
                    let keep_alive = req.keep_alive;
                    c.requests.push(req);
                    if !keep_alive {
                        return c;
                    }
                }
                Ok(Parsed::Partial { .. }) => break,
                Err(e) => {
                    let _ = e.to_string();
                    c.error = Some(match e {
                        HttpError::Malformed(_) => 400,
                        HttpError::HeadTooLarge => 431,
                        HttpError::BodyTooLarge => 413,
                    });
                    return c;
                }
            }
        }
    }
    c
}

/// `api_request`: the first byte picks what the rest is:
/// - 0: the bytes of a connection: piece sizes (see `chunks::sizes_and_rest`),
///   then the stream. However the reads cut it, the same requests come out;
///   each gets a well-formed answer;
/// - 1: the body of a `POST /v1/ports`;
/// - 2, 3: a response as the API client reads it (3: at EOF).
pub fn api_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let (sizes, stream) = sizes_and_rest(rest);
            let whole = serve(&[stream]);
            let cut = serve(&pieces(stream, &sizes));
            assert_eq!(cut, whole, "the reads' sizes changed what was asked");
            answer(&whole.requests);
        }
        1 => {
            let mut stream = format!(
                "POST /v1/ports HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                rest.len()
            )
            .into_bytes();
            stream.extend_from_slice(rest);
            let c = serve(&[&stream]);
            if rest.len() <= MAX_BODY {
                assert_eq!(c.error, None);
                assert_eq!(c.requests.len(), 1);
            }
            answer(&c.requests);
        }
        eof => {
            if let Ok(Parsed::Complete(r, used)) = parse_response(rest, eof == 3) {
                assert!(used <= rest.len());
                assert!(r.body.len() <= used);
            }
        }
    }
}

/// Routes `requests` to a fresh API and checks each answer.
fn answer(requests: &[Request]) {
    let forwarded = Forwarded::default();
    let mut api = Api {
        manager: PortManager::new(Box::new(Recorder(forwarded.clone()))),
    };
    for req in requests {
        let raw = rk_ports::api::route(req, &mut api);
        let resp = match parse_response(&raw, false) {
            Ok(Parsed::Complete(r, used)) => {
                assert_eq!(used, raw.len(), "trailing bytes in the answer to {req:?}");
                r
            }
            other => panic!("answer to {req:?} does not parse: {other:?}"),
        };
        match resp.status {
            200 | 404 | 405 => {}
            201 => {
                let st: PortStatus =
                    serde_json::from_slice(&resp.body).expect("201 carries the port");
                assert_eq!(forwarded.borrow().get(&st.id), Some(&st.spec));
            }
            400 | 500 => {
                let e: ErrorJson =
                    serde_json::from_slice(&resp.body).expect("errors carry a message");
                assert!(!e.message.is_empty());
            }
            s => panic!("status {s} for {req:?}"),
        }
        let listed: BTreeMap<i64, PortSpec> = api
            .manager
            .list()
            .expect("the manager lists its table")
            .into_iter()
            .map(|p| (p.id, p.spec))
            .collect();
        assert_eq!(
            listed,
            *forwarded.borrow(),
            "the table and the driver disagree"
        );
    }
}
