//! What a browser on the host, or a DNS name that rebinds to loopback, may not do.
//!
//! A web page can make the browser send a cross-origin form POST (no preflight) to
//! `http://127.0.0.1:8080/...CreateVm`, and the daemon reads form-encoded bodies as JSON for the
//! seed's `curl -d`. Such requests carry an `Origin` (or `Sec-Fetch-Site: cross-site`): they are
//! refused unless the origin is explicitly allowed. A rebinding DNS name reaches the daemon with
//! `Host: evil.example`: a TCP request is refused unless its `Host` is an IP address,
//! `localhost`, the listen address, or an allowed name. `curl` sends neither an `Origin` nor a
//! foreign `Host`, so the seed's calls keep working. With a bearer token, every route but
//! `/healthz` needs it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use subtle::ConstantTimeEq;

/// The rules of [`guard`].
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Origins (`scheme://host[:port]`) a browser may call from.
    pub allowed_origins: Vec<String>,
    /// Host names (besides IP literals, `localhost` and `listen_host`) the API answers to.
    pub allowed_hosts: Vec<String>,
    /// The host part of the listen address.
    pub listen_host: String,
    /// When set, every route but `/healthz` needs `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
}

impl Guard {
    /// Why `req` is refused, if it is.
    pub fn refusal(&self, req: &Request) -> Option<(StatusCode, &'static str, String)> {
        let h = req.headers();
        if let Some(origin) = h.get(header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes()).trim().to_owned();
            if !self
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&origin))
            {
                return Some((
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    format!(
                        "requests from web origin {origin:?} are refused (a browser page may not \
                         drive this daemon); add it to allowed_origins if it should"
                    ),
                ));
            }
        } else if h
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
        {
            return Some((
                StatusCode::FORBIDDEN,
                "permission_denied",
                "cross-site browser requests are refused".into(),
            ));
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.host().to_owned())
            .or_else(|| {
                h.get(header::HOST)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .map(|v| host_of(&v).to_owned())
            });
        if let Some(host) = host {
            if !self.host_allowed(&host) {
                return Some((
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    format!(
                        "Host {host:?} is not this daemon's name (DNS rebinding is refused); call \
                         it by IP address or localhost, or add the name to allowed_hosts"
                    ),
                ));
            }
        }
        if let Some(token) = &self.bearer_token {
            if req.uri().path() != "/healthz" && !authorized(h, token) {
                return Some((
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "missing or invalid bearer token (send `Authorization: Bearer <token>`)".into(),
                ));
            }
        }
        None
    }

    fn host_allowed(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<std::net::IpAddr>().is_ok()
            || bare.eq_ignore_ascii_case("localhost")
            || bare.eq_ignore_ascii_case(&self.listen_host)
            || self
                .allowed_hosts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(bare))
    }
}

/// `host[:port]` or `[v6][:port]` to its host.
fn host_of(v: &str) -> &str {
    let v = v.trim();
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    v.rsplit_once(':').map_or(v, |(h, _)| h)
}

fn authorized(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    bool::from(value[7..].trim_ascii().ct_eq(token.as_bytes()))
}

/// The middleware: refuses what [`Guard::refusal`] names, with a Connect error body.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match g.refusal(&req) {
        None => next.run(req).await,
        Some((status, code, message)) => {
            tracing::warn!(path = %req.uri().path(), code, %message, "request refused");
            let body = serde_json::json!({ "code": code, "message": message }).to_string();
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                Body::from(body),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().uri("/vmprovisioner.v1.VmService/CreateVm");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn curl_passes_and_browsers_and_rebinding_names_do_not() {
        let g = Guard {
            listen_host: "127.0.0.1".into(),
            allowed_origins: vec!["https://console.example".into()],
            ..Guard::default()
        };
        assert!(g.refusal(&req(&[("host", "localhost:8080")])).is_none());
        assert!(g.refusal(&req(&[("host", "127.0.0.1:8080")])).is_none());
        assert!(g.refusal(&req(&[("host", "[::1]:8080")])).is_none());
        assert!(g
            .refusal(&req(&[
                ("host", "localhost:8080"),
                ("origin", "https://console.example")
            ]))
            .is_none());
        for bad in [
            vec![
                ("host", "localhost:8080"),
                ("origin", "http://evil.example"),
            ],
            vec![("host", "localhost:8080"), ("origin", "null")],
            vec![("host", "localhost:8080"), ("sec-fetch-site", "cross-site")],
            vec![("host", "evil.example:8080")],
        ] {
            let r = g.refusal(&req(&bad));
            assert_eq!(r.map(|r| r.0), Some(StatusCode::FORBIDDEN), "{bad:?}");
        }
    }

    #[test]
    fn a_token_guards_every_route_but_healthz() {
        let g = Guard {
            bearer_token: Some("s3cret".into()),
            ..Guard::default()
        };
        let get = |path: &str, auth: Option<&str>| {
            let mut b = http::Request::builder()
                .uri(path)
                .header("host", "127.0.0.1");
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            g.refusal(&b.body(Body::empty()).unwrap()).map(|r| r.0)
        };
        assert_eq!(get("/healthz", None), None);
        assert_eq!(get("/metrics", None), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            get("/readyz", Some("Bearer nope")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(get("/metrics", Some("Bearer s3cret")), None);
    }
}
