//! HTTP/1.1 message framing on top of `httparse`: whole requests and
//! responses out of a byte buffer (with `Content-Length` or chunked bodies),
//! and responses written back. Enough for a JSON API on a unix socket; the
//! parsing itself is httparse's (hyper's parser).

/// Most bytes a request head may have.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most bytes a body may have.
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed HTTP: {0}")]
    Malformed(String),
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
}

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub body: Vec<u8>,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

struct Framing {
    content_length: Option<usize>,
    chunked: bool,
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<Framing, HttpError> {
    let mut f = Framing {
        content_length: None,
        chunked: false,
    };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| HttpError::Malformed("bad Content-Length".into()))?;
            if f.content_length.is_some_and(|old| old != v) {
                return Err(HttpError::Malformed("conflicting Content-Length".into()));
            }
            f.content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.trim() == "chunked" {
                f.chunked = true;
            } else if v.trim() != "identity" {
                return Err(HttpError::Malformed(format!(
                    "unsupported Transfer-Encoding {v:?}"
                )));
            }
        }
    }
    if f.chunked && f.content_length.is_some() {
        return Err(HttpError::Malformed(
            "both Content-Length and chunked Transfer-Encoding".into(),
        ));
    }
    Ok(f)
}

fn header_has(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case(name)
            && String::from_utf8_lossy(h.value)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// What [`parse_request`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed. `expect_continue` is true when the head is
    /// complete and asked for `100 Continue` before sending its body.
    Partial { expect_continue: bool },
    /// A whole message, and how many bytes of the buffer it took.
    Complete(T, usize),
}

/// Parses one request from the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(HttpError::HeadTooLarge);
            }
            return Ok(Parsed::Partial {
                expect_continue: false,
            });
        }
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if head_len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let f = framing(req.headers)?;
    let version = req.version.unwrap_or(1);
    let keep_alive = if version == 0 {
        header_has(req.headers, "connection", "keep-alive")
    } else {
        !header_has(req.headers, "connection", "close")
    };
    let expect_continue = header_has(req.headers, "expect", "100-continue");
    let Some((body, used)) = body(&buf[head_len..], &f)? else {
        return Ok(Parsed::Partial { expect_continue });
    };
    let target = req.path.unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    Ok(Parsed::Complete(
        Request {
            method: req.method.unwrap_or("").to_owned(),
            path,
            body,
            keep_alive,
        },
        head_len + used,
    ))
}

/// Parses one response from the start of `buf`. `eof` says the peer closed
/// the connection (a body without length then ends there).
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Parsed<Response>, HttpError> {
    // Interim (1xx) responses are skipped in a loop, not by recursion: a
    // peer may send any number of them.
    let mut skipped = 0;
    loop {
        match parse_one_response(&buf[skipped..], eof)? {
            ResponseStep::Interim(n) => skipped += n,
            ResponseStep::Done(Parsed::Complete(r, n)) => {
                return Ok(Parsed::Complete(r, skipped + n))
            }
            ResponseStep::Done(p) => return Ok(p),
        }
    }
}

enum ResponseStep {
    /// An interim response of this many bytes.
    Interim(usize),
    Done(Parsed<Response>),
}

fn parse_one_response(buf: &[u8], eof: bool) -> Result<ResponseStep, HttpError> {
    let partial = || {
        ResponseStep::Done(Parsed::Partial {
            expect_continue: false,
        })
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(partial()),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if (100..200).contains(&status) {
        return Ok(ResponseStep::Interim(head_len));
    }
    let mut f = framing(resp.headers)?;
    if status == 204 || status == 304 {
        f.content_length = Some(0);
    }
    if f.content_length.is_none() && !f.chunked {
        // Delimited by the end of the connection.
        if !eof {
            return Ok(partial());
        }
        let body = buf[head_len..].to_vec();
        return Ok(ResponseStep::Done(Parsed::Complete(
            Response { status, body },
            buf.len(),
        )));
    }
    Ok(match body(&buf[head_len..], &f)? {
        Some((body, used)) => {
            ResponseStep::Done(Parsed::Complete(Response { status, body }, head_len + used))
        }
        None => partial(),
    })
}

/// The body at the start of `buf`, if complete, and the bytes it took.
fn body(buf: &[u8], f: &Framing) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    if f.chunked {
        return dechunk(buf);
    }
    let len = f.content_length.unwrap_or(0);
    if len > MAX_BODY {
        return Err(HttpError::BodyTooLarge);
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some((buf[..len].to_vec(), len)))
}

fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let (skip, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HttpError::Malformed("bad chunk size".into())),
        };
        pos += skip;
        let size = usize::try_from(size).map_err(|_| HttpError::BodyTooLarge)?;
        if out.len() + size > MAX_BODY {
            return Err(HttpError::BodyTooLarge);
        }
        if size == 0 {
            // Trailers (ignored) end with an empty line.
            let rest = &buf[pos..];
            if rest.starts_with(b"\r\n") {
                return Ok(Some((out, pos + 2)));
            }
            // The trailer is bounded like a head, however it arrives.
            return match rest.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(i) if i + 4 > MAX_HEAD => Err(HttpError::HeadTooLarge),
                Some(i) => Ok(Some((out, pos + i + 4))),
                None if rest.len() > MAX_HEAD => Err(HttpError::HeadTooLarge),
                None => Ok(None),
            };
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
        pos += size + 2;
    }
}

/// The reason phrase of the status codes this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response with `Content-Length`.
pub fn response(status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_content_length_and_pipelining() {
        let raw = b"POST /v1/ports?x=1 HTTP/1.1\r\nHost: rootlesskit\r\nContent-Length: 2\r\n\r\n{}GET /v1/info HTTP/1.1\r\n\r\n";
        let Parsed::Complete(r, n) = parse_request(raw).unwrap() else {
            panic!()
        };
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/ports"));
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive);
        let Parsed::Complete(r2, _) = parse_request(&raw[n..]).unwrap() else {
            panic!()
        };
        assert_eq!(r2.path, "/v1/info");
    }

    #[test]
    fn partial_and_expect_continue() {
        assert_eq!(
            parse_request(b"GET /v1/in").unwrap(),
            Parsed::Partial {
                expect_continue: false
            }
        );
        let head = b"POST /v1/ports HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            parse_request(head).unwrap(),
            Parsed::Partial {
                expect_continue: true
            }
        );
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let Parsed::Complete(r, n) = parse_request(raw).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, b"abcde");
        assert_eq!(n, raw.len());
        assert!(matches!(
            parse_request(&raw[..raw.len() - 3]).unwrap(),
            Parsed::Partial { .. }
        ));
    }

    #[test]
    fn junk_is_an_error_not_a_hang() {
        assert!(parse_request(b"\x00\x01\x02garbage\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert!(parse_request(&huge).is_err());
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            Err(HttpError::BodyTooLarge)
        );
    }

    #[test]
    fn http10_closes_by_default() {
        let Parsed::Complete(r, _) = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap() else {
            panic!()
        };
        assert!(!r.keep_alive);
    }

    #[test]
    fn responses_round_trip() {
        let raw = response(201, "application/json", b"{\"id\":1}", true);
        let Parsed::Complete(r, n) = parse_response(&raw, false).unwrap() else {
            panic!()
        };
        assert_eq!((r.status, r.body.as_slice()), (201, &b"{\"id\":1}"[..]));
        assert_eq!(n, raw.len());
        let unframed = b"HTTP/1.1 200 OK\r\n\r\nhello";
        assert!(matches!(
            parse_response(unframed, false).unwrap(),
            Parsed::Partial { .. }
        ));
        let Parsed::Complete(r, _) = parse_response(unframed, true).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, b"hello");
        let with_continue =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let Parsed::Complete(r, _) = parse_response(with_continue, false).unwrap() else {
            panic!()
        };
        assert_eq!(r.body, b"ok");
    }
}
