//! One axum router serving Connect (unary, JSON and binary protobuf; streaming for WatchVms) and
//! gRPC.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tower::ServiceExt as _;

use crate::pb::vm_service_server::VmServiceServer;
use crate::{pb, ApiError, Code, VmService, METHODS, SERVICE_NAME, WATCH_METHOD};

/// Options for [`router`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// The largest request body (Connect) or message (gRPC) accepted; larger ones get
    /// `resource_exhausted`. Default 4 MiB.
    pub max_body_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            bearer_token: None,
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

struct Shared {
    service: Arc<dyn VmService>,
    grpc: VmServiceServer<GrpcAdapter>,
    token: Option<String>,
    max_body_bytes: usize,
}

/// Builds the router serving `vmprovisioner.v1.VmService` on one port:
///
/// - Connect unary: `POST /vmprovisioner.v1.VmService/<Method>` with `application/json`
///   (proto3 JSON), `application/proto` (binary), or — for `curl -d` — a form or missing
///   content type whose body is JSON; errors are Connect error JSON.
/// - Connect streaming, for `WatchVms`: `application/connect+json` or `application/connect+proto`,
///   one enveloped request, then enveloped events and the end-of-stream message.
/// - gRPC: requests whose content type is `application/grpc*` go to the tonic server
///   (HTTP/2; `axum::serve` and [`serve`] speak h2c).
///
/// With [`ServerOptions::bearer_token`] every request must be authenticated. Every request is
/// logged at debug level (protocol, method, code, duration).
pub fn router(service: Arc<dyn VmService>, options: ServerOptions) -> Router {
    let grpc = VmServiceServer::new(GrpcAdapter(service.clone()))
        .max_decoding_message_size(options.max_body_bytes)
        .max_encoding_message_size(usize::MAX);
    let shared = Arc::new(Shared {
        service,
        grpc,
        token: options.bearer_token.filter(|t| !t.is_empty()),
        max_body_bytes: options.max_body_bytes,
    });
    Router::new().fallback(dispatch).with_state(shared)
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?;
    let s = String::from_utf8_lossy(v.as_bytes());
    Some(
        s.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_grpc(media: Option<&str>) -> bool {
    matches!(media, Some(m) if m.starts_with("application/grpc") && !m.starts_with("application/grpc-web"))
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let given = value[7..].trim_ascii();
    bool::from(given.ct_eq(token.as_bytes()))
}

async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let start = Instant::now();
    let media = media_type(req.headers());
    let grpc = is_grpc(media.as_deref());
    let path = req.uri().path().to_owned();

    if let Some(token) = &shared.token {
        if !authorized(req.headers(), token) {
            let message = "missing or invalid bearer token (send `Authorization: Bearer <token>`)";
            log_rpc(
                if grpc { "grpc" } else { "connect" },
                &path,
                Code::Unauthenticated.as_str(),
                start,
            );
            if grpc {
                return tonic::Status::unauthenticated(message).into_http::<Body>();
            }
            return connect_error(&ApiError::unauthenticated(message));
        }
    }

    if grpc {
        return grpc_dispatch(&shared, req, &path, start).await;
    }

    let method = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE_NAME))
        .and_then(|p| p.strip_prefix('/'))
        .filter(|m| METHODS.contains(m) || *m == WATCH_METHOD)
        .map(str::to_owned);
    let result = match method {
        None => Err(unknown_path(&path)),
        Some(method) if method == WATCH_METHOD => {
            connect_stream(&shared, media.as_deref(), req).await
        }
        Some(method) => connect_unary(&shared, &method, media.as_deref(), req).await,
    };
    match result {
        Ok(resp) => {
            log_rpc("connect", &path, "ok", start);
            resp
        }
        Err(rejection) => {
            log_rpc("connect", &path, rejection.code_name(), start);
            rejection.into_response()
        }
    }
}

/// Set by `GrpcAdapter` when it handled (and logged) the call.
#[derive(Clone, Default)]
struct GrpcLogged(Arc<std::sync::atomic::AtomicBool>);

async fn grpc_dispatch(shared: &Shared, mut req: Request, path: &str, start: Instant) -> Response {
    let logged = GrpcLogged::default();
    req.extensions_mut().insert(logged.clone());
    let mut resp = match shared.grpc.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // tonic answers an oversized message with OUT_OF_RANGE; gRPC (and this API) says
    // RESOURCE_EXHAUSTED.
    let oversized = tonic::Status::from_header_map(resp.headers()).is_some_and(|s| {
        s.code() == tonic::Code::OutOfRange
            && s.message()
                .starts_with("Error, decoded message length too large")
    });
    if oversized {
        resp = tonic::Status::resource_exhausted(format!(
            "request message larger than the {}-byte limit",
            shared.max_body_bytes
        ))
        .into_http();
    }
    // tonic answers a path that is no method with a bare UNIMPLEMENTED (no grpc-message); say
    // which methods exist, as the Connect side does.
    let unknown_method = resp.headers().get("grpc-status").is_some_and(|s| s == "12")
        && !resp.headers().contains_key("grpc-message");
    if unknown_method {
        resp = tonic::Status::unimplemented(format!(
            "no such method {path:?}; methods are /{SERVICE_NAME}/{{{}}}",
            METHODS.join(",")
        ))
        .into_http();
    }
    let headers = resp.headers();
    // Requests rejected before reaching the adapter (bad framing, size, unknown method).
    if !logged.0.load(std::sync::atomic::Ordering::Relaxed) {
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .and_then(|c| Code::from_grpc(tonic::Code::from(c)))
            .map_or("ok", Code::as_str);
        log_rpc("grpc", path, code, start);
    }
    resp.map(Body::new)
}

fn log_rpc(protocol: &str, method: &str, code: &str, start: Instant) {
    tracing::debug!(
        protocol,
        method,
        code,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        "api request"
    );
}

/// Why a Connect request did not get a normal answer.
enum Rejection {
    /// A Connect error with the code's HTTP status.
    Api(ApiError),
    /// A Connect error body with a status other than the code's (404, 405, 415).
    Status(StatusCode, ApiError, Option<(&'static str, &'static str)>),
}

impl Rejection {
    fn code_name(&self) -> &'static str {
        match self {
            Rejection::Api(e) | Rejection::Status(_, e, _) => e.code.as_str(),
        }
    }
}

impl From<ApiError> for Rejection {
    fn from(e: ApiError) -> Rejection {
        Rejection::Api(e)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::Api(e) => connect_error(&e),
            Rejection::Status(status, e, extra) => {
                let mut resp = connect_error(&e);
                *resp.status_mut() = status;
                if let Some((name, value)) = extra {
                    resp.headers_mut().insert(
                        header::HeaderName::from_static(name),
                        HeaderValue::from_static(value),
                    );
                }
                resp
            }
        }
    }
}

fn connect_error(e: &ApiError) -> Response {
    (
        e.code.http_status(),
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        e.to_connect_json(),
    )
        .into_response()
}

fn unknown_path(path: &str) -> Rejection {
    Rejection::Status(
        StatusCode::NOT_FOUND,
        ApiError::unimplemented(format!(
            "no such method {path:?}; methods are POST /{SERVICE_NAME}/{{{},{WATCH_METHOD}}}",
            METHODS.join(",")
        )),
        None,
    )
}

/// A Connect envelope: flags, big-endian length, message.
fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(flags);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// The flag of the last envelope of a Connect stream, carrying the end-of-stream JSON.
const END_STREAM: u8 = 0x02;

fn end_stream(error: Option<&ApiError>) -> Bytes {
    let body = match error {
        None => b"{}".to_vec(),
        Some(e) => serde_json::to_vec(&serde_json::json!({
            "error": {"code": e.code.as_str(), "message": e.message}
        }))
        .unwrap_or_default(),
    };
    envelope(END_STREAM, &body)
}

/// WatchVms over the Connect streaming protocol: `application/connect+json` or
/// `application/connect+proto`, one enveloped request, then one envelope per event. Errors,
/// before or during the stream, are in the end-of-stream message (HTTP 200), as Connect says.
async fn connect_stream(
    shared: &Shared,
    media: Option<&str>,
    req: Request,
) -> Result<Response, Rejection> {
    if req.method() != Method::POST {
        return Err(Rejection::Status(
            StatusCode::METHOD_NOT_ALLOWED,
            ApiError::unimplemented(format!("{} is not allowed; use POST", req.method())),
            Some(("allow", "POST")),
        ));
    }
    let codec = match media {
        Some("application/connect+json") => Codec::Json,
        Some("application/connect+proto") => Codec::Proto,
        other => {
            return Err(Rejection::Status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ApiError::invalid_argument(format!(
                    "unsupported content type {:?} for the streaming WatchVms: send \
                     application/connect+json or application/connect+proto (Connect \
                     streaming), or application/grpc",
                    other.unwrap_or("(none)")
                )),
                Some((
                    "accept-post",
                    "application/connect+json, application/connect+proto",
                )),
            ))
        }
    };
    if let Some(enc) = req.headers().get("connect-content-encoding") {
        if enc.as_bytes() != b"identity" {
            return Err(ApiError::unimplemented(format!(
                "unsupported connect-content-encoding {:?}; send uncompressed requests",
                String::from_utf8_lossy(enc.as_bytes())
            ))
            .into());
        }
    }
    let declared = headers_len(req.headers());
    let body = read_body(req.into_body(), declared, shared.max_body_bytes).await?;
    let content_type = if codec == Codec::Json {
        "application/connect+json"
    } else {
        "application/connect+proto"
    };
    let respond = |body: Body| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    };
    let request = match unenvelope(&body).and_then(|m| decode::<pb::WatchVmsRequest>(codec, m)) {
        Ok(r) => r,
        Err(e) => return Ok(respond(Body::from(end_stream(Some(&e))))),
    };
    let events = match shared.service.watch_vms(request).await {
        Ok(s) => s,
        Err(e) => return Ok(respond(Body::from(end_stream(Some(&e))))),
    };
    let stream = event_envelopes(events, codec);
    Ok(respond(Body::from_stream(stream)))
}

/// The message of the one envelope of a streaming request (an empty body is the empty message).
fn unenvelope(body: &[u8]) -> Result<&[u8], ApiError> {
    if body.is_empty() {
        return Ok(body);
    }
    let bad = |why: &str| {
        ApiError::invalid_argument(format!(
            "invalid Connect envelope for vmprovisioner.v1.WatchVmsRequest: {why}"
        ))
    };
    if body.len() < 5 {
        return Err(bad("shorter than its 5-byte prefix"));
    }
    if body[0] & 0x01 != 0 {
        return Err(ApiError::unimplemented(
            "compressed messages are not supported; send uncompressed requests",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() - 5 != len {
        return Err(bad(&format!(
            "the prefix says {len} bytes, the body holds {}",
            body.len() - 5
        )));
    }
    Ok(&body[5..])
}

/// The events as envelopes, then the end of the stream (with the error that ended it, if any).
fn event_envelopes(
    events: crate::VmEventStream,
    codec: Codec,
) -> impl futures_core::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    use tokio_stream::StreamExt as _;
    let mut done = false;
    let events = events.map(Some).chain(tokio_stream::once(None));
    events.map_while(move |item| {
        if done {
            return None;
        }
        Some(Ok(match item {
            Some(Ok(ev)) => match encode(codec, &ev) {
                Ok(m) => envelope(0, &m),
                Err(e) => {
                    done = true;
                    end_stream(Some(&e))
                }
            },
            Some(Err(e)) => {
                done = true;
                end_stream(Some(&e))
            }
            None => end_stream(None),
        }))
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Codec {
    Json,
    Proto,
}

impl Codec {
    fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }
}

async fn connect_unary(
    shared: &Shared,
    method: &str,
    media: Option<&str>,
    req: Request,
) -> Result<Response, Rejection> {
    if req.method() != Method::POST {
        return Err(Rejection::Status(
            StatusCode::METHOD_NOT_ALLOWED,
            ApiError::unimplemented(format!("{} is not allowed; use POST", req.method())),
            Some(("allow", "POST")),
        ));
    }
    // `curl -d` sends a form content type; a missing one is treated the same way.
    let (codec, lenient) = match media {
        Some("application/json") => (Codec::Json, false),
        Some("application/proto") => (Codec::Proto, false),
        None | Some("") | Some("application/x-www-form-urlencoded") => (Codec::Json, true),
        Some(other) => return Err(unsupported_media(other)),
    };
    let headers = req.headers();
    for name in ["content-encoding", "connect-content-encoding"] {
        if let Some(enc) = headers.get(name) {
            if enc.as_bytes() != b"identity" {
                return Err(ApiError::unimplemented(format!(
                    "unsupported {name} {:?}; send uncompressed requests",
                    String::from_utf8_lossy(enc.as_bytes())
                ))
                .into());
            }
        }
    }
    let timeout = headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);

    let declared = headers_len(headers);
    let body = read_body(req.into_body(), declared, shared.max_body_bytes).await?;
    if lenient && !looks_like_json(&body) {
        return Err(unsupported_media(media.unwrap_or("(none)")));
    }

    let call = call_method(shared.service.clone(), method, codec, body);
    let resp = match timeout {
        Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
            Err(ApiError::deadline_exceeded(format!(
                "{method} did not finish within {t:?}"
            )))
        })?,
        None => call.await?,
    };
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(codec.content_type()),
        )],
        resp,
    )
        .into_response())
}

fn headers_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn unsupported_media(media: &str) -> Rejection {
    Rejection::Status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ApiError::invalid_argument(format!(
            "unsupported content type {media:?}: send application/json (proto3 JSON) or \
             application/proto, or application/grpc for gRPC"
        )),
        Some(("accept-post", "application/json, application/proto")),
    )
}

fn too_large(max: usize) -> Rejection {
    ApiError::resource_exhausted(format!("request body larger than the {max}-byte limit")).into()
}

async fn read_body(body: Body, declared: Option<u64>, max: usize) -> Result<Bytes, Rejection> {
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    match axum::body::to_bytes(body, max).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large(max));
                }
                source = s.source();
            }
            Err(ApiError::invalid_argument(format!("failed to read the request body: {e}")).into())
        }
    }
}

fn looks_like_json(body: &[u8]) -> bool {
    body.trim_ascii().is_empty() || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

fn decode<T>(codec: Codec, body: &[u8]) -> Result<T, ApiError>
where
    T: prost::Message + Default + DeserializeOwned + prost::Name,
{
    match codec {
        Codec::Proto => T::decode(body).map_err(|e| {
            ApiError::invalid_argument(format!("invalid protobuf for {}: {e}", T::full_name()))
        }),
        Codec::Json => {
            if body.trim_ascii().is_empty() {
                return Ok(T::default());
            }
            let mut de = serde_json::Deserializer::from_slice(body);
            let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let at = if path == "." || path.is_empty() {
                    String::new()
                } else {
                    format!(" at {path}")
                };
                ApiError::invalid_argument(format!(
                    "invalid JSON for {}{at}: {inner}",
                    T::full_name()
                ))
            })?;
            de.end().map_err(|e| {
                ApiError::invalid_argument(format!("invalid JSON for {}: {e}", T::full_name()))
            })?;
            Ok(value)
        }
    }
}

fn encode<T: prost::Message + serde::Serialize>(
    codec: Codec,
    msg: &T,
) -> Result<Vec<u8>, ApiError> {
    match codec {
        Codec::Proto => Ok(msg.encode_to_vec()),
        Codec::Json => serde_json::to_vec(msg)
            .map_err(|e| ApiError::internal(format!("failed to encode the response: {e}"))),
    }
}

async fn call_method(
    svc: Arc<dyn VmService>,
    method: &str,
    codec: Codec,
    body: Bytes,
) -> Result<Vec<u8>, ApiError> {
    if method == "ListVms" && codec == Codec::Proto {
        let req = decode(codec, &body)?;
        return svc.list_vms_encoded(req).await;
    }
    macro_rules! route {
        ($($name:literal => $func:ident;)*) => {
            match method {
                $($name => {
                    let req = decode(codec, &body)?;
                    let resp = svc.$func(req).await?;
                    encode(codec, &resp)
                })*
                other => Err(ApiError::unimplemented(format!("no such method {other:?}"))),
            }
        };
    }
    route! {
        "CreateVm" => create_vm;
        "DeleteVm" => delete_vm;
        "BootVm" => boot_vm;
        "ShutdownVm" => shutdown_vm;
        "PauseVm" => pause_vm;
        "ResumeVm" => resume_vm;
        "RebootVm" => reboot_vm;
        "GetVmInfo" => get_vm_info;
        "ListVms" => list_vms;
        "SnapshotVm" => snapshot_vm;
        "RestoreVm" => restore_vm;
        "ListSnapshots" => list_snapshots;
        "DeleteSnapshot" => delete_snapshot;
    }
}

/// Serves the tonic-generated gRPC trait by delegating to a [`VmService`].
struct GrpcAdapter(Arc<dyn VmService>);

async fn grpc_call<T>(
    method: &str,
    fut: impl Future<Output = Result<T, ApiError>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let start = Instant::now();
    let result = fut.await;
    let code = match &result {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    log_rpc("grpc", method, code, start);
    result
        .map(tonic::Response::new)
        .map_err(tonic::Status::from)
}

/// WatchVms' gRPC stream: the service's events, errors as statuses.
type GrpcEventStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<pb::WatchVmsResponse, tonic::Status>> + Send>,
>;

macro_rules! grpc_methods {
    ($($func:ident($req:ident) -> $resp:ident, $path:literal;)*) => {
        #[crate::async_trait]
        impl pb::vm_service_server::VmService for GrpcAdapter {
            type WatchVmsStream = GrpcEventStream;

            async fn watch_vms(
                &self,
                request: tonic::Request<pb::WatchVmsRequest>,
            ) -> Result<tonic::Response<GrpcEventStream>, tonic::Status> {
                if let Some(logged) = request.extensions().get::<GrpcLogged>() {
                    logged.0.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let stream = grpc_call(
                    "/vmprovisioner.v1.VmService/WatchVms",
                    self.0.watch_vms(request.into_inner()),
                )
                .await?
                .into_inner();
                let stream = tokio_stream::StreamExt::map(stream, |e| e.map_err(tonic::Status::from));
                Ok(tonic::Response::new(Box::pin(stream) as GrpcEventStream))
            }

            $(
                async fn $func(
                    &self,
                    request: tonic::Request<pb::$req>,
                ) -> Result<tonic::Response<pb::$resp>, tonic::Status> {
                    if let Some(logged) = request.extensions().get::<GrpcLogged>() {
                        logged.0.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    grpc_call($path, self.0.$func(request.into_inner())).await
                }
            )*
        }
    };
}

grpc_methods! {
    create_vm(CreateVmRequest) -> CreateVmResponse, "/vmprovisioner.v1.VmService/CreateVm";
    delete_vm(DeleteVmRequest) -> DeleteVmResponse, "/vmprovisioner.v1.VmService/DeleteVm";
    boot_vm(BootVmRequest) -> BootVmResponse, "/vmprovisioner.v1.VmService/BootVm";
    shutdown_vm(ShutdownVmRequest) -> ShutdownVmResponse, "/vmprovisioner.v1.VmService/ShutdownVm";
    pause_vm(PauseVmRequest) -> PauseVmResponse, "/vmprovisioner.v1.VmService/PauseVm";
    resume_vm(ResumeVmRequest) -> ResumeVmResponse, "/vmprovisioner.v1.VmService/ResumeVm";
    reboot_vm(RebootVmRequest) -> RebootVmResponse, "/vmprovisioner.v1.VmService/RebootVm";
    get_vm_info(GetVmInfoRequest) -> GetVmInfoResponse, "/vmprovisioner.v1.VmService/GetVmInfo";
    list_vms(ListVmsRequest) -> ListVmsResponse, "/vmprovisioner.v1.VmService/ListVms";
    snapshot_vm(SnapshotVmRequest) -> SnapshotVmResponse, "/vmprovisioner.v1.VmService/SnapshotVm";
    restore_vm(RestoreVmRequest) -> RestoreVmResponse, "/vmprovisioner.v1.VmService/RestoreVm";
    list_snapshots(ListSnapshotsRequest) -> ListSnapshotsResponse, "/vmprovisioner.v1.VmService/ListSnapshots";
    delete_snapshot(DeleteSnapshotRequest) -> DeleteSnapshotResponse, "/vmprovisioner.v1.VmService/DeleteSnapshot";
}

/// Where [`serve`] listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address, e.g. `127.0.0.1:8080`.
    Tcp(SocketAddr),
    /// A Unix socket path; created with mode 0600 (see [`bind_unix`]).
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "http://{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Serves `router` (HTTP/1.1 and h2c, so Connect and gRPC) until an I/O error.
pub async fn serve(router: Router, listen: Listen) -> io::Result<()> {
    serve_with_shutdown(router, listen, std::future::pending()).await
}

/// Serves `router` until `shutdown` completes, then drains in-flight requests. A Unix socket
/// file is removed afterwards.
pub async fn serve_with_shutdown<F>(router: Router, listen: Listen, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Listen::Unix(path) => {
            let listener = bind_unix(&path)?;
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await;
            let _ = std::fs::remove_file(&path);
            result
        }
    }
}

/// Binds a Unix socket at `path` with mode 0600. A stale socket file (nobody listening) is
/// replaced; a live one is `AddrInUse`; any other existing file is an error. Must be called
/// within a tokio runtime.
pub fn bind_unix(path: &Path) -> io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
