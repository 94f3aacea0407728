//! Requests to backend calls, with RootlessKit's paths, methods, status
//! codes and error bodies (`{"message":"..."}`).

use super::{ApiError, Backend, ErrorJson};
use crate::http::{response, Request};
use crate::spec::PortSpec;

const JSON: &str = "application/json";

fn json_response<T: serde::Serialize>(status: u16, value: &T, keep_alive: bool) -> Vec<u8> {
    let body = serde_json::to_vec(value).expect("API types always serialize");
    response(status, JSON, &body, keep_alive)
}

fn error_response(e: &ApiError, keep_alive: bool) -> Vec<u8> {
    let mut body = serde_json::to_vec(&ErrorJson {
        message: e.message.clone(),
    })
    .expect("strings always serialize");
    body.push(b'\n');
    response(e.status, JSON, &body, keep_alive)
}

/// Answers one request.
pub fn route(req: &Request, backend: &mut dyn Backend) -> Vec<u8> {
    let keep = req.keep_alive;
    let path = req.path.trim_end_matches('/');
    let method = req.method.as_str();
    let result: Result<Vec<u8>, ApiError> = match (path, method) {
        ("/v1/info", "GET") => Ok(json_response(200, &backend.info(), keep)),
        // No ports is `null`, as RootlessKit's Go encodes its nil slice
        // (measured with 2.0.2); clients written against it expect that.
        ("/v1/ports", "GET") => backend.list_ports().map(|ports| match ports.is_empty() {
            true => response(200, JSON, b"null", keep),
            false => json_response(200, &ports, keep),
        }),
        ("/v1/ports", "POST") => match serde_json::from_slice::<PortSpec>(&req.body) {
            Ok(spec) => backend
                .add_port(spec)
                .map(|st| json_response(201, &st, keep)),
            Err(e) => Err(ApiError::bad_request(format!(
                "the body is not a port spec ({e}): send JSON like {{\"proto\":\"tcp\",\"parentIP\":\"127.0.0.1\",\"parentPort\":8080,\"childPort\":80}}"
            ))),
        },
        ("/v1/info" | "/v1/ports", _) => return method_not_allowed(keep),
        (p, m) => match p.strip_prefix("/v1/ports/") {
            Some(id) if m == "DELETE" => match id.parse::<i64>() {
                Ok(id) => backend
                    .remove_port(id)
                    .map(|()| response(200, "text/plain; charset=utf-8", b"", keep)),
                Err(_) => Err(ApiError::bad_request(format!(
                    "bad id {id}: not an integer"
                ))),
            },
            Some(id) if !id.contains('/') => return method_not_allowed(keep),
            _ => {
                return response(
                    404,
                    "text/plain; charset=utf-8",
                    b"404 page not found\n",
                    keep,
                )
            }
        },
    };
    result.unwrap_or_else(|e| error_response(&e, keep))
}

fn method_not_allowed(keep: bool) -> Vec<u8> {
    response(405, "text/plain; charset=utf-8", b"", keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Info;
    use crate::http::{parse_response, Parsed, Response};
    use crate::spec::PortStatus;

    #[derive(Default)]
    struct Fake {
        ports: Vec<PortStatus>,
    }

    impl Backend for Fake {
        fn info(&mut self) -> Info {
            Info {
                api_version: "1.1.1".into(),
                ..Default::default()
            }
        }
        fn list_ports(&mut self) -> Result<Vec<PortStatus>, ApiError> {
            Ok(self.ports.clone())
        }
        fn add_port(&mut self, spec: PortSpec) -> Result<PortStatus, ApiError> {
            let st = PortStatus {
                id: self.ports.len() as i64 + 1,
                spec,
            };
            self.ports.push(st.clone());
            Ok(st)
        }
        fn remove_port(&mut self, id: i64) -> Result<(), ApiError> {
            let before = self.ports.len();
            self.ports.retain(|p| p.id != id);
            if before == self.ports.len() {
                return Err(ApiError::bad_request(format!("unknown id: {id}")));
            }
            Ok(())
        }
    }

    fn call(b: &mut Fake, method: &str, path: &str, body: &[u8]) -> Response {
        let req = Request {
            method: method.into(),
            path: path.into(),
            body: body.to_vec(),
            keep_alive: true,
        };
        match parse_response(&route(&req, b), false).unwrap() {
            Parsed::Complete(r, _) => r,
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn add_list_remove_with_rootlesskit_status_codes() {
        let mut b = Fake::default();
        assert_eq!(call(&mut b, "GET", "/v1/ports", b"").body, b"null");
        let r = call(
            &mut b,
            "POST",
            "/v1/ports",
            br#"{"proto":"tcp","parentPort":8080,"childPort":80}"#,
        );
        assert_eq!(r.status, 201);
        assert_eq!(
            r.body,
            br#"{"id":1,"spec":{"proto":"tcp","parentPort":8080,"childPort":80}}"#
        );
        let r = call(&mut b, "GET", "/v1/ports", b"");
        assert_eq!(r.status, 200);
        assert!(String::from_utf8_lossy(&r.body).starts_with(r#"[{"id":1"#));
        assert_eq!(call(&mut b, "DELETE", "/v1/ports/1", b"").status, 200);
        assert_eq!(call(&mut b, "GET", "/v1/ports", b"").body, b"null");
        let r = call(&mut b, "DELETE", "/v1/ports/1", b"");
        assert_eq!(r.status, 400);
        assert_eq!(r.body, b"{\"message\":\"unknown id: 1\"}\n");
        assert_eq!(call(&mut b, "DELETE", "/v1/ports/abc", b"").status, 400);
    }

    #[test]
    fn bad_bodies_unknown_paths_and_methods() {
        let mut b = Fake::default();
        assert_eq!(call(&mut b, "POST", "/v1/ports", b"junk").status, 400);
        assert_eq!(call(&mut b, "GET", "/v2/info", b"").status, 404);
        assert_eq!(call(&mut b, "PUT", "/v1/ports", b"").status, 405);
        assert_eq!(call(&mut b, "GET", "/v1/ports/1", b"").status, 405);
        assert_eq!(call(&mut b, "GET", "/v1/info", b"").status, 200);
    }
}
