//! A Connect JSON client for the CLI, over TCP or a Unix socket.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{pb, ApiError, Code, SERVICE_NAME};

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// An `http://host:port` base URL (TLS is not supported).
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `http://host:port`, `host:port`, `unix:/path`, `unix:///path`, or a path
    /// (containing `/`) to a Unix socket.
    pub fn parse(s: &str) -> Result<Endpoint, ApiError> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(ApiError::invalid_argument(
                    "empty Unix socket path in endpoint",
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if s.starts_with("https://") {
            return Err(ApiError::invalid_argument(format!(
                "endpoint {s:?}: https is not supported; use http:// or a Unix socket"
            )));
        }
        if s.starts_with("http://") {
            return Ok(Endpoint::Tcp(s.to_owned()));
        }
        if s.contains('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if s.is_empty() {
            return Err(ApiError::invalid_argument("empty endpoint"));
        }
        Ok(Endpoint::Tcp(format!("http://{s}")))
    }
}

impl FromStr for Endpoint {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Endpoint, ApiError> {
        Endpoint::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(url) => f.write_str(url),
            // `parse` drops a `//` after `unix:`, so a path that starts with one keeps it.
            Endpoint::Unix(path) if path.as_os_str().as_encoded_bytes().starts_with(b"//") => {
                write!(f, "unix://{}", path.display())
            }
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A Connect client (unary calls in binary protobuf, or proto3 JSON with [`Client::call`]; WatchVms streamed in JSON) for `vmprovisioner.v1.VmService`.
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Option<Duration>,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

macro_rules! rpcs {
    ($($(#[$doc:meta])* $func:ident($req:ident) -> $resp:ident, $method:literal;)*) => {
        $(
            $(#[$doc])*
            pub async fn $func(&self, req: pb::$req) -> Result<pb::$resp, ApiError> {
                self.call_proto($method, &req).await
            }
        )*
    };
}

impl Client {
    /// A client for `endpoint`, sending `Authorization: Bearer <token>` when `token` is set.
    /// Does not connect; each call does.
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Client {
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build(HttpConnector::new());
        Client {
            endpoint,
            token,
            timeout: None,
            http,
        }
    }

    /// Bounds every call by `timeout` (sent as `Connect-Timeout-Ms`, and enforced locally with
    /// `deadline_exceeded`).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    /// The endpoint this client calls.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    rpcs! {
        /// `CreateVm`: validates and records a VM; nothing is created on the host.
        create_vm(CreateVmRequest) -> CreateVmResponse, "CreateVm";
        /// `DeleteVm`: stops the VM if it runs, removes its host resources, forgets it.
        delete_vm(DeleteVmRequest) -> DeleteVmResponse, "DeleteVm";
        /// `BootVm`: starts a created (or stopped) VM.
        boot_vm(BootVmRequest) -> BootVmResponse, "BootVm";
        /// `ShutdownVm`: graceful (or forced) stop.
        shutdown_vm(ShutdownVmRequest) -> ShutdownVmResponse, "ShutdownVm";
        /// `PauseVm`.
        pause_vm(PauseVmRequest) -> PauseVmResponse, "PauseVm";
        /// `ResumeVm`.
        resume_vm(ResumeVmRequest) -> ResumeVmResponse, "ResumeVm";
        /// `RebootVm`: stops and boots the VM again.
        reboot_vm(RebootVmRequest) -> RebootVmResponse, "RebootVm";
        /// `GetVmInfo`.
        get_vm_info(GetVmInfoRequest) -> GetVmInfoResponse, "GetVmInfo";
        /// `ListVms`.
        list_vms(ListVmsRequest) -> ListVmsResponse, "ListVms";
        /// `SnapshotVm`: a full snapshot into the daemon's store.
        snapshot_vm(SnapshotVmRequest) -> SnapshotVmResponse, "SnapshotVm";
        /// `RestoreVm`: a new running VM from a snapshot.
        restore_vm(RestoreVmRequest) -> RestoreVmResponse, "RestoreVm";
        /// `ListSnapshots`.
        list_snapshots(ListSnapshotsRequest) -> ListSnapshotsResponse, "ListSnapshots";
        /// `DeleteSnapshot`.
        delete_snapshot(DeleteSnapshotRequest) -> DeleteSnapshotResponse, "DeleteSnapshot";
    }

    /// Every VM in one of `state_filter` (every VM when empty), following ListVms' pages.
    pub async fn list_all_vms(&self, state_filter: Vec<i32>) -> Result<Vec<pb::VmInfo>, ApiError> {
        let mut vms = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list_vms(pb::ListVmsRequest {
                    state_filter: state_filter.clone(),
                    page_size: 1000,
                    page_token,
                })
                .await?;
            vms.extend(page.vms);
            if page.next_page_token.is_empty() {
                return Ok(vms);
            }
            page_token = page.next_page_token;
        }
    }

    /// Calls `method` (e.g. `"CreateVm"`) with a proto3-JSON request and decodes the response.
    pub async fn call<Req, Resp>(&self, method: &str, req: &Req) -> Result<Resp, ApiError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = serde_json::to_vec(req)
            .map_err(|e| ApiError::internal(format!("failed to encode the request: {e}")))?;
        let body = self
            .unary(method, Bytes::from(body), "application/json")
            .await?;
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::internal(format!(
                "invalid {method} response from {}: {e}",
                self.endpoint
            ))
        })
    }

    /// Calls `method` in binary protobuf (`application/proto`), as the typed methods do: a
    /// list of 1,000 VMs is about a third of its JSON's size and decodes several times faster.
    /// Errors still come as Connect's JSON.
    pub async fn call_proto<Req, Resp>(&self, method: &str, req: &Req) -> Result<Resp, ApiError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let body = self
            .unary(
                method,
                Bytes::from(req.encode_to_vec()),
                "application/proto",
            )
            .await?;
        Resp::decode(body).map_err(|e| {
            ApiError::internal(format!(
                "invalid {method} response from {}: {e}",
                self.endpoint
            ))
        })
    }

    /// One unary exchange: the response body of a 200, or the Connect error.
    async fn unary(
        &self,
        method: &str,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<Bytes, ApiError> {
        let exchange = self.exchange(method, body, content_type);
        let (status, body) = match self.timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| {
                ApiError::deadline_exceeded(format!(
                    "{method} on {} did not answer within {t:?}",
                    self.endpoint
                ))
            })??,
            None => exchange.await?,
        };
        if status != StatusCode::OK {
            return Err(ApiError::from_connect_response(status, &body));
        }
        Ok(body)
    }

    fn request(
        &self,
        uri: Uri,
        host: Option<&str>,
        method: &str,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<Request<Full<Bytes>>, ApiError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, content_type)
            .header("connect-protocol-version", "1");
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        // A stream has no deadline.
        if let Some(t) = self
            .timeout
            .filter(|_| !content_type.starts_with("application/connect+"))
        {
            builder = builder.header("connect-timeout-ms", t.as_millis().max(1).to_string());
        }
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ApiError::invalid_argument(
                    "the API token contains characters not allowed in a header",
                )
            })?;
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder
            .body(Full::new(body))
            .map_err(|e| ApiError::internal(format!("failed to build the {method} request: {e}")))
    }

    async fn exchange(
        &self,
        method: &str,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let resp = self.send(method, body, content_type).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(&e))?
            .to_bytes();
        Ok((status, body))
    }

    /// `WatchVms` over Connect streaming (JSON): each VM's current state, then every change,
    /// until the daemon ends the stream or the [`EventStream`] is dropped.
    pub async fn watch_vms(&self, req: pb::WatchVmsRequest) -> Result<EventStream, ApiError> {
        let body = serde_json::to_vec(&req)
            .map_err(|e| ApiError::internal(format!("failed to encode the request: {e}")))?;
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        framed.extend_from_slice(&body);
        let resp = self
            .send("WatchVms", Bytes::from(framed), "application/connect+json")
            .await?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(&e))?
                .to_bytes();
            return Err(ApiError::from_connect_response(status, &body));
        }
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
            done: false,
            endpoint: self.endpoint.to_string(),
        })
    }

    async fn send(
        &self,
        method: &str,
        body: Bytes,
        content_type: &'static str,
    ) -> Result<http::Response<hyper::body::Incoming>, ApiError> {
        let path = format!("/{SERVICE_NAME}/{method}");
        let resp = match &self.endpoint {
            Endpoint::Tcp(base) => {
                let uri: Uri = format!("{}{path}", base.trim_end_matches('/'))
                    .parse()
                    .map_err(|e| {
                        ApiError::invalid_argument(format!("invalid endpoint URL {base:?}: {e}"))
                    })?;
                if uri.scheme_str() != Some("http") {
                    return Err(ApiError::invalid_argument(format!(
                        "endpoint {base:?}: only http:// URLs are supported"
                    )));
                }
                let req = self.request(uri, None, method, body, content_type)?;
                self.http
                    .request(req)
                    .await
                    .map_err(|e| self.unreachable(&e))?
            }
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| self.unreachable(&e))?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| self.unreachable(&e))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "unix socket connection ended");
                    }
                });
                let uri: Uri = path.parse().map_err(|e| {
                    ApiError::internal(format!("invalid request path {path:?}: {e}"))
                })?;
                let req = self.request(uri, Some("localhost"), method, body, content_type)?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| self.unreachable(&e))?
            }
        };
        Ok(resp)
    }

    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> ApiError {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        ApiError::new(
            Code::Unavailable,
            format!(
                "cannot reach the warden daemon at {}: {message} (is `warden serve` running?)",
                self.endpoint
            ),
        )
    }
}

/// The events of [`Client::watch_vms`].
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    done: bool,
    endpoint: String,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl EventStream {
    /// The next event; `None` when the daemon ended the stream normally, an error when it ended
    /// it with one (or the connection broke).
    pub async fn next(&mut self) -> Option<Result<pb::WatchVmsResponse, ApiError>> {
        loop {
            if self.done {
                return None;
            }
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() >= 5 + len {
                    let flags = self.buf[0];
                    let message: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
                    if flags & 0x02 != 0 {
                        self.done = true;
                        return end_of_stream(&message).map(Err);
                    }
                    return Some(serde_json::from_slice(&message).map_err(|e| {
                        ApiError::internal(format!(
                            "invalid WatchVms event from {}: {e}",
                            self.endpoint
                        ))
                    }));
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(ApiError::new(
                        Code::Unavailable,
                        format!("the WatchVms stream from {} broke: {e}", self.endpoint),
                    )));
                }
                None => {
                    self.done = true;
                    return Some(Err(ApiError::new(
                        Code::Unavailable,
                        format!(
                            "the WatchVms stream from {} ended without its end message",
                            self.endpoint
                        ),
                    )));
                }
            }
        }
    }
}

/// The error of a Connect end-of-stream message, if it carries one.
fn end_of_stream(message: &[u8]) -> Option<ApiError> {
    #[derive(serde::Deserialize)]
    struct End {
        error: Option<serde_json::Value>,
    }
    let end: End = serde_json::from_slice(message).ok()?;
    let error = end.error?;
    Some(ApiError::from_connect_response(
        StatusCode::OK,
        error.to_string().as_bytes(),
    ))
}
