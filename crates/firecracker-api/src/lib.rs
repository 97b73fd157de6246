//! A typed async client for Firecracker v1.12's HTTP API over its Unix socket.
//!
//! Every request opens its own connection, sends one HTTP/1.1 request and reads the whole
//! response, all under a per-request timeout ([`Client::with_timeout`]), unless the client
//! keeps one connection for a burst of requests ([`Client::keep_alive`]). Nothing is retried
//! except connecting in [`Client::wait_ready`], and a kept connection that closed while idle.
//! The models also serve to write Firecracker's `--config-file` ([`ConfigFile`]).
#![deny(missing_docs)]

mod models;

pub use models::{
    ActionType, BootSource, ConfigFile, Drive, FullVmConfiguration, InstanceInfo, InstanceState,
    Logger, MachineConfiguration, MemoryBackend, Metrics, NetworkInterface, RateLimiter,
    SnapshotCreateParams, SnapshotLoadParams, SnapshotType, TokenBucket,
};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use models::{InstanceActionInfo, Vm, VmState};

/// How long one request may take, connecting included, unless [`Client::with_timeout`] says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`Client::wait_ready`] tries to connect.
const READY_POLL: Duration = Duration::from_millis(1);

/// Everything that can go wrong talking to Firecracker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API socket could not be connected to.
    #[error("cannot connect to Firecracker API socket {}", path.display())]
    Connect {
        /// The API socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// [`Client::wait_ready`] gave up: the socket never accepted a connection.
    #[error("Firecracker API socket {} not ready after {waited:?}", path.display())]
    SocketTimeout {
        /// The API socket.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The HTTP exchange failed (connection reset, malformed response, …).
    #[error("HTTP {method} {uri} on Firecracker API socket {} failed", socket.display())]
    Http {
        /// The API socket.
        socket: PathBuf,
        /// Request method.
        method: Method,
        /// Request URI, e.g. `/boot-source`.
        uri: String,
        /// Why.
        source: hyper::Error,
    },
    /// Firecracker answered with a non-2xx status.
    #[error("Firecracker refused {method} {uri} ({status}): {fault_message}")]
    Fault {
        /// Request method.
        method: Method,
        /// Request URI.
        uri: String,
        /// HTTP status code.
        status: u16,
        /// Firecracker's `fault_message` (the raw body if there was none).
        fault_message: String,
    },
    /// A 2xx response body was not the expected JSON.
    #[error("cannot decode Firecracker's response to {method} {uri}")]
    Decode {
        /// Request method.
        method: Method,
        /// Request URI.
        uri: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The request did not complete within the client's timeout.
    #[error("{method} {uri} on Firecracker API socket {} timed out after {timeout:?}", socket.display())]
    Timeout {
        /// The API socket.
        socket: PathBuf,
        /// Request method.
        method: Method,
        /// Request URI.
        uri: String,
        /// The per-request timeout that elapsed.
        timeout: Duration,
    },
}

/// A client for one Firecracker API socket. Cheap to clone; holds no connection unless made by
/// [`Client::keep_alive`].
#[derive(Debug, Clone)]
pub struct Client {
    socket_path: PathBuf,
    timeout: Duration,
    /// The connection a [`Client::keep_alive`] client and its clones share between requests.
    kept: Option<Arc<tokio::sync::Mutex<Option<Connection>>>>,
}

/// An HTTP/1.1 connection to the API socket: the request half and the future that drives it,
/// polled only while a request is under way (in between, nothing arrives that needs it).
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: std::pin::Pin<
        Box<hyper::client::conn::http1::Connection<TokioIo<UnixStream>, Full<Bytes>>>,
    >,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl Client {
    /// A client for the API socket at `socket_path` (Firecracker's `--api-sock`).
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket_path: socket_path.into(),
            timeout: DEFAULT_TIMEOUT,
            kept: None,
        }
    }

    /// A client for the same socket that keeps one connection open between its requests (and
    /// its clones', which take turns on it) until the last of them is dropped: for a burst of
    /// requests, such as configuring and starting a VM, without a connection (and Firecracker
    /// accepting one) per request. A connection that closed while idle is replaced before the
    /// next request is written; a request that fails takes its connection with it.
    pub fn keep_alive(&self) -> Self {
        Self {
            socket_path: self.socket_path.clone(),
            timeout: self.timeout,
            kept: Some(Default::default()),
        }
    }

    /// Sets the per-request timeout (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Waits until the socket accepts connections, retrying every few milliseconds while the
    /// socket file is missing or refuses connections. Gives [`Error::SocketTimeout`] once
    /// `timeout` has elapsed, and [`Error::Connect`] at once for any other connect error.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        loop {
            match UnixStream::connect(&self.socket_path).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(source) => {
                    return Err(Error::Connect {
                        path: self.socket_path.clone(),
                        source,
                    });
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::SocketTimeout {
                    path: self.socket_path.clone(),
                    waited: now - start,
                });
            }
            tokio::time::sleep(READY_POLL.min(deadline - now)).await;
        }
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&self, b: &BootSource) -> Result<(), Error> {
        self.put(Method::PUT, "/boot-source".into(), b).await
    }

    /// `PUT /drives/{drive_id}`.
    pub async fn put_drive(&self, d: &Drive) -> Result<(), Error> {
        self.put(
            Method::PUT,
            format!("/drives/{}", encode_segment(&d.drive_id)),
            d,
        )
        .await
    }

    /// `PUT /machine-config`.
    pub async fn put_machine_config(&self, m: &MachineConfiguration) -> Result<(), Error> {
        self.put(Method::PUT, "/machine-config".into(), m).await
    }

    /// `PUT /network-interfaces/{iface_id}`.
    pub async fn put_network_interface(&self, n: &NetworkInterface) -> Result<(), Error> {
        let uri = format!("/network-interfaces/{}", encode_segment(&n.iface_id));
        self.put(Method::PUT, uri, n).await
    }

    /// `PUT /logger`.
    pub async fn put_logger(&self, l: &Logger) -> Result<(), Error> {
        self.put(Method::PUT, "/logger".into(), l).await
    }

    /// `PUT /metrics`.
    pub async fn put_metrics(&self, m: &Metrics) -> Result<(), Error> {
        self.put(Method::PUT, "/metrics".into(), m).await
    }

    /// `PUT /actions` with `{"action_type": a}`.
    pub async fn action(&self, a: ActionType) -> Result<(), Error> {
        self.put(
            Method::PUT,
            "/actions".into(),
            &InstanceActionInfo { action_type: a },
        )
        .await
    }

    /// `PATCH /vm` with `{"state": "Paused"}`.
    pub async fn pause(&self) -> Result<(), Error> {
        self.put(
            Method::PATCH,
            "/vm".into(),
            &Vm {
                state: VmState::Paused,
            },
        )
        .await
    }

    /// `PATCH /vm` with `{"state": "Resumed"}`.
    pub async fn resume(&self) -> Result<(), Error> {
        self.put(
            Method::PATCH,
            "/vm".into(),
            &Vm {
                state: VmState::Resumed,
            },
        )
        .await
    }

    /// `PUT /snapshot/create` (the VM must be paused).
    pub async fn create_snapshot(&self, p: &SnapshotCreateParams) -> Result<(), Error> {
        self.put(Method::PUT, "/snapshot/create".into(), p).await
    }

    /// `PUT /snapshot/load` (only on a fresh Firecracker process).
    pub async fn load_snapshot(&self, p: &SnapshotLoadParams) -> Result<(), Error> {
        self.put(Method::PUT, "/snapshot/load".into(), p).await
    }

    /// `GET /`.
    pub async fn instance_info(&self) -> Result<InstanceInfo, Error> {
        self.get("/").await
    }

    /// `GET /vm/config`.
    pub async fn vm_config(&self) -> Result<FullVmConfiguration, Error> {
        self.get("/vm/config").await
    }

    /// Sends `body` as JSON and expects a 2xx status; the response body is ignored.
    async fn put<T: Serialize>(&self, method: Method, uri: String, body: &T) -> Result<(), Error> {
        // Serialising these models cannot fail: plain structs with string keys.
        let json = serde_json::to_vec(body).expect("models serialise to JSON");
        self.request(method, uri, Some(json)).await.map(drop)
    }

    /// Sends a GET and decodes the 2xx response body as JSON.
    async fn get<T: DeserializeOwned>(&self, uri: &str) -> Result<T, Error> {
        let body = self.request(Method::GET, uri.to_owned(), None).await?;
        serde_json::from_slice(&body).map_err(|source| Error::Decode {
            method: Method::GET,
            uri: uri.to_owned(),
            source,
        })
    }

    /// One exchange, on the kept connection when the client keeps one (a new one when there is
    /// none yet, or it closed while idle), else on a connection of its own that ends with it.
    /// The inner error is the exchange's.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Result<(StatusCode, Bytes), hyper::Error>, Error> {
        // Held for the whole exchange: the clones' requests take turns.
        let mut slot = match &self.kept {
            Some(slot) => Some(slot.lock().await),
            None => None,
        };
        let kept = match slot.as_mut().and_then(|s| s.take()) {
            Some(mut c) => ready(&mut c).await.then_some(c),
            None => None,
        };
        let mut conn = match kept {
            Some(c) => c,
            None => self.connect().await?,
        };
        // The exchange borrows the connection: it ends within this block.
        let (result, open) = {
            let Connection { sender, driver } = &mut conn;
            let exchange = async {
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let bytes = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, bytes))
            };
            tokio::pin!(exchange);
            tokio::select! {
                biased;
                r = &mut exchange => (r, true),
                r = driver => match r {
                    Err(e) => (Err(e), false),
                    // Closed, perhaps right after answering: an answer read before the end is
                    // in the exchange's hands already, so one more poll ends it.
                    Ok(()) => match poll_once(exchange.as_mut()).await {
                        Some(r) => (r, false),
                        None => {
                            return Err(Error::Connect {
                                path: self.socket_path.clone(),
                                source: io::Error::new(
                                    io::ErrorKind::ConnectionAborted,
                                    "Firecracker closed the connection before answering",
                                ),
                            })
                        }
                    },
                },
            }
        };
        // Kept only after a whole answer on a connection still open: a failed or cut-off
        // exchange drops it.
        if let (Some(slot), true, true) = (slot.as_mut(), open, result.is_ok()) {
            **slot = Some(conn);
        }
        Ok(result)
    }

    /// A new connection to the API socket, its HTTP/1.1 handshake done.
    async fn connect(&self) -> Result<Connection, Error> {
        let stream = UnixStream::connect(&self.socket_path)
            .await
            .map_err(|source| Error::Connect {
                path: self.socket_path.clone(),
                source,
            })?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| Error::Http {
                socket: self.socket_path.clone(),
                method: Method::GET,
                uri: "(connection handshake)".into(),
                source,
            })?;
        Ok(Connection {
            sender,
            driver: Box::pin(driver),
        })
    }

    /// One request under the client's timeout (see [`Client::send`]).
    async fn request(
        &self,
        method: Method,
        uri: String,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, Error> {
        match tokio::time::timeout(self.timeout, self.exchange(&method, &uri, body)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::Timeout {
                socket: self.socket_path.clone(),
                method,
                uri,
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        method: &Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, Error> {
        let http_err = |source| Error::Http {
            socket: self.socket_path.clone(),
            method: method.clone(),
            uri: uri.to_owned(),
            source,
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(HOST, "localhost");
        req = req.header(ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        // The URI is a path we built from literals and percent-encoded ids: always valid.
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("valid request");

        let (status, bytes) = self.send(req).await?.map_err(http_err)?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(Error::Fault {
                method: method.clone(),
                uri: uri.to_owned(),
                status: status.as_u16(),
                fault_message: fault_message(status, &bytes),
            })
        }
    }
}

/// The future's output if it is ready at one poll.
async fn poll_once<F: std::future::Future>(mut f: std::pin::Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match f.as_mut().poll(cx) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Whether the idle connection `c` can take a request now: it is driven until its request
/// half is ready, and is not when Firecracker closed it meanwhile.
async fn ready(c: &mut Connection) -> bool {
    let Connection { sender, driver } = c;
    tokio::select! {
        r = sender.ready() => r.is_ok(),
        _ = driver => false,
    }
}

/// Firecracker's `{"fault_message": "..."}`, else the body as text, else the status reason.
fn fault_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Fault {
        fault_message: String,
    }
    if let Ok(f) = serde_json::from_slice::<Fault>(body) {
        return f.fault_message;
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no fault message")
            .to_owned()
    } else {
        text
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
