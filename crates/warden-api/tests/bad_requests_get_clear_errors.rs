//! Property tests of request decoding through `router` (no socket): whatever arrives — random
//! bytes, random JSON, a wrong type in any field of any request, numbers of any size, deep
//! nesting, broken protobuf, any content type (JSON, proto, form, gRPC, none, garbage), any path
//! and HTTP method — the service answers without panicking, with either success or a well-formed
//! error: Connect error JSON (a `code` among Connect's codes and a non-empty `message`, with the
//! code's HTTP status), or for gRPC a valid `grpc-status` with a `grpc-message`. Field-type errors
//! name the field, by its path as sent. `Endpoint::parse` and the client's error decoding take any
//! input too.

mod common;

use std::future::Future;
use std::sync::LazyLock;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use prost::Message;
use serde_json::{json, Map, Value};
use tower::ServiceExt;
use warden_api::{pb, router, ApiError, Code, Endpoint, ServerOptions, METHODS, SERVICE_NAME};

const TOKEN: &str = "s3cret";

/// The server runs on tokio worker threads with tokio's default 2 MiB stack, as under
/// `warden serve`.
static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(2 << 20)
        .enable_all()
        .build()
        .unwrap()
});

/// Runs `fut` as a task on the runtime's workers; a panic in it fails the case.
fn block_on<T: Send + 'static>(
    fut: impl Future<Output = Result<T, TestCaseError>> + Send + 'static,
) -> Result<T, TestCaseError> {
    match RT.block_on(RT.spawn(fut)) {
        Ok(result) => result,
        Err(e) => {
            let why = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(not a string)".into()),
                Err(e) => e.to_string(),
            };
            Err(TestCaseError::fail(format!("the server panicked: {why}")))
        }
    }
}

/// Checks `test` on `cases` inputs from `strategy()`, shrinking a failure to a minimal input.
/// Generation runs on a thread with a large stack: proptest's nested generators need more than
/// a test thread's 2 MiB in a debug build (the server itself runs on 2 MiB, see [`RT`]).
fn check<S, F>(cases: u32, strategy: fn() -> S, test: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError> + Send,
{
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn_scoped(scope, move || {
                let config = ProptestConfig {
                    cases,
                    max_shrink_iters: 2000,
                    source_file: Some(file!()),
                    // Failures are kept beside this file, as `<name>.proptest-regressions`.
                    failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
                        "proptest-regressions",
                    ))),
                    ..ProptestConfig::default()
                };
                TestRunner::new(config)
                    .run(&strategy(), test)
                    .map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
    });
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    }

    /// A header of the response or of its trailers.
    fn header_or_trailer(&self, name: &str) -> Option<&http::HeaderValue> {
        self.headers
            .get(name)
            .or_else(|| self.trailers.as_ref()?.get(name))
    }
}

async fn send(app: axum::Router, req: Request<Body>) -> Result<Reply, TestCaseError> {
    let resp = match app.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| TestCaseError::fail(format!("the response body failed: {e}")))?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Checks that `r` is a well-formed Connect error and returns its code and message.
fn connect_error(r: &Reply) -> Result<(Code, String), TestCaseError> {
    prop_assert_eq!(
        r.content_type(),
        "application/json",
        "status {}, body {}",
        r.status,
        r.text()
    );
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|e| TestCaseError::fail(format!("error body is not JSON ({e}): {}", r.text())))?;
    let obj = v
        .as_object()
        .ok_or_else(|| TestCaseError::fail(format!("error body is not an object: {v}")))?;
    let code = obj
        .get("code")
        .and_then(Value::as_str)
        .ok_or_else(|| TestCaseError::fail(format!("no string code: {v}")))?;
    let code: Code = code
        .parse()
        .map_err(|e| TestCaseError::fail(format!("{e}: {v}")))?;
    let message = obj
        .get("message")
        .and_then(Value::as_str)
        .ok_or_else(|| TestCaseError::fail(format!("no string message: {v}")))?;
    prop_assert!(!message.trim().is_empty(), "empty message: {}", v);
    // 404 (no such method), 405 (not POST) and 415 (content type) are the only statuses that
    // differ from the code's own.
    let special = matches!(
        (r.status.as_u16(), code),
        (404 | 405, Code::Unimplemented) | (415, Code::InvalidArgument)
    );
    prop_assert!(
        r.status == code.http_status() || special,
        "status {} for code {}: {}",
        r.status,
        code,
        v
    );
    Ok((code, message.to_owned()))
}

/// Success (a JSON or proto body) or a well-formed Connect error.
fn connect_reply(r: &Reply) -> Result<Option<(Code, String)>, TestCaseError> {
    if r.status == StatusCode::OK {
        let ct = r.content_type();
        prop_assert!(
            ct == "application/json" || ct == "application/proto",
            "200 with content type {:?}",
            ct
        );
        if ct == "application/json" {
            let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
                TestCaseError::fail(format!("200 body is not JSON ({e}): {}", r.text()))
            })?;
            prop_assert!(v.is_object(), "200 body is not an object: {}", v);
        }
        return Ok(None);
    }
    connect_error(r).map(Some)
}

/// A well-formed gRPC answer: HTTP 200, a `grpc-status` that is a gRPC code, and for an error a
/// non-empty `grpc-message`. Returns the status.
fn grpc_reply(r: &Reply) -> Result<i32, TestCaseError> {
    prop_assert_eq!(r.status, StatusCode::OK, "gRPC answered HTTP {}", r.status);
    let status = r
        .header_or_trailer("grpc-status")
        .ok_or_else(|| TestCaseError::fail("no grpc-status header or trailer"))?;
    let status: i32 = status
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("grpc-status {status:?} is not a number")))?;
    prop_assert!((0..=16).contains(&status), "grpc-status {}", status);
    if status != 0 {
        let message = r
            .header_or_trailer("grpc-message")
            .map(|m| m.as_bytes().to_vec())
            .unwrap_or_default();
        prop_assert!(
            !message.is_empty(),
            "grpc-status {} without a grpc-message (headers {:?}, trailers {:?})",
            status,
            r.headers,
            r.trailers
        );
    }
    Ok(status)
}

// ---------------------------------------------------------------------------------------------
// Generators.

/// Header value bytes: anything a header may carry (visible ASCII, tab, obs-text).
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff],
        0..max,
    )
}

fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    let other = select(vec![
        "application/grpc+proto",
        "application/grpc+json",
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpcx",
        "application/connect+json",
        "application/connect+proto",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        " application/proto ",
        "application/json;",
        "application/grpc; foo=bar",
        "text/plain",
        "multipart/form-data; boundary=x",
        ";",
        "",
    ]);
    let ct = |s: &str| Some(s.as_bytes().to_vec());
    prop_oneof![
        3 => Just(None),
        6 => Just(ct("application/json")),
        4 => Just(ct("application/proto")),
        2 => Just(ct("application/x-www-form-urlencoded")),
        3 => Just(ct("application/grpc")),
        4 => other.prop_map(ct),
        1 => header_bytes(40).prop_map(Some),
    ]
}

fn http_method() -> impl Strategy<Value = Method> {
    prop_oneof![
        12 => Just(Method::POST),
        1 => select(vec![
            Method::GET,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
            Method::HEAD,
            Method::from_bytes(b"FROB").unwrap(),
        ]),
    ]
}

/// Request paths: mostly real methods, then near misses and arbitrary (URI-safe) paths.
fn path() -> impl Strategy<Value = String> {
    let method = select(METHODS.to_vec());
    prop_oneof![
        30 => method.clone().prop_map(|m| format!("/{SERVICE_NAME}/{m}")),
        1 => method.clone().prop_map(|m| format!("/{SERVICE_NAME}/{}", m.to_lowercase())),
        1 => method.clone().prop_map(|m| format!("/{SERVICE_NAME}/{m}/")),
        1 => method.clone().prop_map(|m| format!("//{SERVICE_NAME}/{m}")),
        1 => method.clone().prop_map(|m| format!("/{SERVICE_NAME}/{m}?x=1")),
        1 => method.clone().prop_map(|m| format!("http://localhost/{SERVICE_NAME}/{m}")),
        1 => method.prop_map(|m| format!("/other.Service/{m}")),
        1 => Just(format!("/{SERVICE_NAME}/")),
        1 => Just("/".to_owned()),
        2 => "/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,40}",
    ]
}

fn short_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\PC{0,12}",
        1 => Just(String::new()),
        1 => "[a-z0-9-]{1,8}",
    ]
}

/// Any JSON value, with object keys that are often real field names.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => select(vec![
            "vmId", "vm_id", "config", "customerId", "cpu", "vcpuCount", "vcpu_count", "memory",
            "sizeBytes", "size_bytes", "boot", "kernelPath", "kernelArgs", "initrdPath",
            "storage", "path", "readOnly", "read_only", "isRootDevice", "network", "macAddress",
            "tapDevice", "ipv4Config", "rxRateLimit", "txRateLimit", "refillTime", "burst",
            "console", "memoryLimitMib", "cpuQuotaPercent", "metadata", "rxRateLimiter",
            "txRateLimiter", "driveRateLimiter", "bandwidth", "ops", "size", "oneTimeBurst",
            "refillTimeMs", "force", "timeoutSeconds", "stateFilter", "pageSize",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("not finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        short_string().prop_map(Value::from),
        select(vec![
            "",
            "1",
            "-1",
            "1.5",
            "1e400",
            "18446744073709551616",
            "NaN",
            "true"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn token_bucket() -> impl Strategy<Value = pb::TokenBucket> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(size, one_time_burst, refill_time_ms)| {
        pb::TokenBucket {
            size,
            one_time_burst,
            refill_time_ms,
        }
    })
}

fn rate_limiter() -> impl Strategy<Value = Option<pb::RateLimiter>> {
    proptest::option::of(
        (
            proptest::option::of(token_bucket()),
            proptest::option::of(token_bucket()),
        )
            .prop_map(|(bandwidth, ops)| pb::RateLimiter { bandwidth, ops }),
    )
}

fn vm_config() -> impl Strategy<Value = pb::VmConfig> {
    let device = (short_string(), any::<bool>(), any::<bool>()).prop_map(
        |(path, read_only, is_root_device)| pb::StorageDevice {
            path,
            read_only,
            is_root_device,
            ..Default::default()
        },
    );
    let rate_limit = proptest::option::of((any::<i64>(), any::<i64>(), any::<i64>()).prop_map(
        |(bandwidth, refill_time, burst)| pb::RateLimit {
            bandwidth,
            refill_time,
            burst,
        },
    ));
    let interface = (
        short_string(),
        short_string(),
        rate_limit.clone(),
        rate_limit,
        rate_limiter(),
        rate_limiter(),
    )
        .prop_map(
            |(mac_address, tap_device, rx, tx, rxl, txl)| pb::NetworkInterface {
                mac_address,
                tap_device,
                rx_rate_limit: rx,
                tx_rate_limit: tx,
                rx_rate_limiter: rxl,
                tx_rate_limiter: txl,
                ..Default::default()
            },
        );
    (
        (
            any::<i32>(),
            any::<i64>(),
            short_string(),
            short_string(),
            vec(device, 0..3),
            vec(interface, 0..2),
        ),
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            btree_map(short_string(), short_string(), 0..3),
            rate_limiter(),
        ),
        (
            proptest::option::of(short_string()),
            vec(proptest::option::of(any::<u64>()), 4),
        ),
    )
        .prop_map(
            |(
                (vcpu_count, size_bytes, kernel_path, kernel_args, storage, network),
                (memory_limit_mib, cpu_quota_percent, metadata, drive_rl),
                (cpuset, io),
            )| pb::VmConfig {
                cpu: Some(pb::CpuConfig {
                    vcpu_count,
                    ..Default::default()
                }),
                memory: Some(pb::MemoryConfig {
                    size_bytes,
                    ..Default::default()
                }),
                boot: Some(pb::BootConfig {
                    kernel_path,
                    kernel_args,
                    ..Default::default()
                }),
                storage,
                network,
                memory_limit_mib,
                cpu_quota_percent,
                metadata: metadata.into_iter().collect(),
                drive_rate_limiter: drive_rl,
                cpuset,
                io_read_bps: io[0],
                io_write_bps: io[1],
                io_read_iops: io[2],
                io_write_iops: io[3],
                ..Default::default()
            },
        )
}

fn create_vm_request() -> impl Strategy<Value = pb::CreateVmRequest> {
    (short_string(), proptest::option::of(vm_config())).prop_map(|(vm_id, config)| {
        pb::CreateVmRequest {
            vm_id,
            config,
            customer_id: String::new(),
        }
    })
}

/// A real request of some type: encoded as proto3 JSON or protobuf.
fn any_request() -> impl Strategy<Value = (Value, Vec<u8>)> {
    prop_oneof![
        create_vm_request().prop_map(|r| (serde_json::to_value(&r).unwrap(), r.encode_to_vec())),
        (short_string(), any::<bool>(), any::<i32>()).prop_map(|(vm_id, force, t)| {
            let r = pb::ShutdownVmRequest {
                vm_id,
                force,
                timeout_seconds: t,
            };
            (serde_json::to_value(&r).unwrap(), r.encode_to_vec())
        }),
        short_string().prop_map(|vm_id| {
            let r = pb::GetVmInfoRequest { vm_id };
            (serde_json::to_value(&r).unwrap(), r.encode_to_vec())
        }),
    ]
}

/// Replaces the `n`-th node (in depth-first order, modulo the node count) of `v` by `with`.
fn replace_nth(v: &mut Value, n: usize, with: Value) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, n: &mut usize, with: &mut Option<Value>) {
        if *n == 0 {
            if let Some(w) = with.take() {
                *v = w;
            }
            return;
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, n, with)),
            Value::Object(o) => o.values_mut().for_each(|c| walk(c, n, with)),
            _ => {}
        }
    }
    let mut n = n % count(v);
    walk(v, &mut n, &mut Some(with));
}

/// Random edits of an encoding: truncation, a flipped byte, appended garbage.
fn mutate_bytes(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    prop_oneof![
        2 => Just(bytes.clone()),
        1 => (0..=len).prop_map({
            let b = bytes.clone();
            move |n| b[..n].to_vec()
        }),
        1 => (any::<usize>(), any::<u8>()).prop_map({
            let b = bytes.clone();
            move |(i, x)| {
                let mut b = b.clone();
                if !b.is_empty() {
                    let i = i % b.len();
                    b[i] ^= x | 1;
                }
                b
            }
        }),
        1 => vec(any::<u8>(), 1..16).prop_map(move |tail| {
            let mut b = bytes.clone();
            b.extend(tail);
            b
        }),
    ]
}

/// gRPC length-prefixed framing around `payload`, sometimes wrong.
fn grpc_frame(payload: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)],
        0usize..3,
    )
        .prop_map(move |(flag, len, frames)| {
            let mut out = Vec::new();
            for _ in 0..frames.max(1) {
                out.push(flag);
                let n = len.unwrap_or(payload.len() as u32);
                out.extend(n.to_be_bytes());
                out.extend(&payload);
            }
            out
        })
}

/// Deep nesting, closed or not.
fn nesting() -> impl Strategy<Value = Vec<u8>> {
    (
        1usize..20_000,
        select(vec![
            ("[", "]"),
            ("{\"config\":", "}"),
            ("{\"a\":", "}"),
            ("{\"vmId\":[", "]}"),
            ("{\"config\":{\"metadata\":{\"k\":", "}}}"),
            ("{\"config\":{\"drives\":[", "]}}"),
        ]),
        any::<bool>(),
    )
        .prop_map(|(depth, (open, close), closed)| {
            let mut s = open.repeat(depth);
            if closed {
                s.push_str("null");
                s.push_str(&close.repeat(depth));
            }
            s.into_bytes()
        })
}

/// Sequences of JSON-ish tokens: unbalanced, with bad escapes, lone surrogates, huge numbers.
fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    vec(
        select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\"vmId\"",
            "\"config\"",
            "\"vcpuCount\"",
            "\"drives\"",
            "\"metadata\"",
            "1",
            "-",
            "0",
            "00",
            "1e999",
            "-1e-999",
            ".5",
            "18446744073709551616",
            "\"\\ud800\"",
            "\"\\u00\"",
            "\"\\x\"",
            "\"\u{0}\"",
            "null",
            "true",
            "\"",
            "\\",
            "\u{feff}",
            "\u{7f}",
            "\u{ff}",
        ]),
        0..40,
    )
    .prop_map(|t| t.concat().into_bytes())
}

/// A body: anything from random bytes to real requests.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..256),
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => (any_request(), any::<usize>(), json_value(), any::<bool>()).prop_map(
            |((mut v, _), n, with, edit)| {
                if edit {
                    replace_nth(&mut v, n, with);
                }
                v.to_string().into_bytes()
            }
        ),
        3 => any_request().prop_flat_map(|(_, bytes)| mutate_bytes(bytes)),
        2 => any_request().prop_flat_map(|(_, bytes)| grpc_frame(bytes)),
        1 => vec(any::<u8>(), 0..64).prop_flat_map(grpc_frame),
        1 => nesting(),
        2 => token_soup(),
        1 => select(vec!["", " \n\t", "{}", "null", "[]", "{} {}", "\"\"", "0"])
            .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// Headers besides the content type that the server reads.
fn extra_headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        (0u64..100).prop_map(|n| n.to_string().into_bytes()),
        header_bytes(12),
        Just(b"18446744073709551616".to_vec()),
        Just(b" 5 ".to_vec()),
    ];
    let encoding = prop_oneof![
        4 => Just(b"identity".to_vec()),
        1 => Just(b"gzip".to_vec()),
        1 => Just(b"".to_vec()),
        1 => header_bytes(10),
    ];
    vec(
        prop_oneof![
            number.clone().prop_map(|v| ("content-length", v)),
            number.clone().prop_map(|v| ("connect-timeout-ms", v)),
            encoding.clone().prop_map(|v| ("content-encoding", v)),
            encoding
                .clone()
                .prop_map(|v| ("connect-content-encoding", v)),
            encoding.prop_map(|v| ("grpc-encoding", v)),
            number.prop_map(|mut v| {
                v.push(b'm');
                ("grpc-timeout", v)
            }),
            header_bytes(8).prop_map(|v| ("connect-protocol-version", v)),
            Just(("te", b"trailers".to_vec())),
        ],
        0..4,
    )
}

#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    content_type: Option<Bytes>,
    authorization: Option<Bytes>,
    headers: Vec<(&'static str, Bytes)>,
    body: Bytes,
    /// The server's options: token required, body limit.
    token: bool,
    max_body_bytes: usize,
}

fn call() -> impl Strategy<Value = Call> {
    (
        (http_method(), path(), content_type()),
        prop_oneof![
            4 => Just(None),
            2 => Just(Some(format!("Bearer {TOKEN}").into_bytes())),
            1 => Just(Some(format!("bearer  {TOKEN} ").into_bytes())),
            1 => header_bytes(20).prop_map(Some),
        ],
        extra_headers(),
        body(),
        prop_oneof![5 => Just(false), 1 => Just(true)],
        prop_oneof![5 => Just(4usize << 20), 1 => 0usize..512],
        any::<bool>(),
    )
        .prop_map(
            |((method, path, content_type), authorization, headers, body, token, max, frame)| {
                // Half the gRPC calls get a well-framed message.
                let body = if frame && is_grpc(media(content_type.as_deref()).as_deref()) {
                    let mut framed = vec![0];
                    framed.extend((body.len() as u32).to_be_bytes());
                    framed.extend(body);
                    framed
                } else {
                    body
                };
                Call {
                    method,
                    path,
                    content_type: content_type.map(Bytes::from),
                    authorization: authorization.map(Bytes::from),
                    headers: headers
                        .into_iter()
                        .map(|(n, v)| (n, Bytes::from(v)))
                        .collect(),
                    body: Bytes::from(body),
                    token,
                    max_body_bytes: max,
                }
            },
        )
}

/// The media type as the server reads it (before `;`, trimmed, lowercase).
fn media(content_type: Option<&[u8]>) -> Option<String> {
    content_type.map(|v| {
        String::from_utf8_lossy(v)
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

/// Whether the server hands a request with this media type to gRPC.
fn is_grpc(media: Option<&str>) -> bool {
    matches!(media, Some(m) if m.starts_with("application/grpc")
        && !m.starts_with("application/grpc-web"))
}

fn authorized(c: &Call) -> bool {
    if !c.token {
        return true;
    }
    let Some(v) = &c.authorization else {
        return false;
    };
    v.len() >= 7
        && v[..7].eq_ignore_ascii_case(b"bearer ")
        && v[7..].trim_ascii() == TOKEN.as_bytes()
}

fn build(c: &Call) -> Request<Body> {
    let mut req = Request::builder().method(c.method.clone()).uri(&c.path);
    if let Some(ct) = &c.content_type {
        req = req.header("content-type", ct.as_ref());
    }
    if let Some(auth) = &c.authorization {
        req = req.header("authorization", auth.as_ref());
    }
    for (name, value) in &c.headers {
        req = req.header(*name, value.as_ref());
    }
    req.body(Body::from(c.body.clone()))
        .unwrap_or_else(|e| panic!("test bug: cannot build {c:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Properties.

/// Any request gets success or a well-formed error, and the checks the server makes before
/// decoding (token, gRPC, path, HTTP method, content type) answer with the right code.
#[test]
fn any_request_gets_success_or_a_well_formed_error() {
    check(6000, call, |c| {
        let app = router(
            common::fake(),
            ServerOptions {
                bearer_token: c.token.then(|| TOKEN.to_owned()),
                max_body_bytes: c.max_body_bytes,
            },
        );
        let r = block_on(send(app, build(&c)))?;
        if c.method == Method::HEAD {
            // A HEAD answer has no body (axum drops it, as HTTP says), so only its status shows.
            prop_assert!(r.body.is_empty());
            prop_assert!(
                r.status == StatusCode::OK || r.status.is_client_error(),
                "HEAD answered {}",
                r.status
            );
            return Ok(());
        }
        let media = media(c.content_type.as_deref());
        if is_grpc(media.as_deref()) {
            let status = grpc_reply(&r)?;
            if !authorized(&c) {
                prop_assert_eq!(status, 16);
            }
            return Ok(());
        }
        let outcome = connect_reply(&r)?;
        let method = c
            .path
            .strip_prefix("http://localhost")
            .unwrap_or(&c.path)
            .split('?')
            .next()
            .and_then(|p| p.strip_prefix(&format!("/{SERVICE_NAME}/")))
            .filter(|m| METHODS.contains(m));
        let expected = if !authorized(&c) {
            Some((401, Code::Unauthenticated))
        } else if method.is_none() {
            Some((404, Code::Unimplemented))
        } else if c.method != Method::POST {
            Some((405, Code::Unimplemented))
        } else if !matches!(
            media.as_deref(),
            None | Some(
                "" | "application/json" | "application/proto" | "application/x-www-form-urlencoded"
            )
        ) {
            Some((415, Code::InvalidArgument))
        } else {
            None
        };
        if let Some((status, code)) = expected {
            let got = outcome.as_ref().map(|(code, _)| *code);
            prop_assert_eq!(
                (r.status.as_u16(), got),
                (status, Some(code)),
                "{}",
                r.text()
            );
        }
        if r.status == StatusCode::METHOD_NOT_ALLOWED {
            prop_assert_eq!(
                r.headers.get("allow").map(|v| v.as_bytes()),
                Some(&b"POST"[..])
            );
        }
        Ok(())
    });
}

// Wrong types, field by field.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Str,
    U32,
    U64,
    I32,
    I64,
    Bool,
    Msg,
    List,
    Map,
    MapValue,
}

/// Every field of every request (paths in camelCase; `0` indexes the first drive).
fn fields(method: &str) -> Vec<(Vec<&'static str>, Kind)> {
    let mut f = match method {
        "CreateVm" => vec![
            (vec!["vmId"], Kind::Str),
            (vec!["customerId"], Kind::Str),
            (vec!["config"], Kind::Msg),
            (vec!["config", "cpu"], Kind::Msg),
            (vec!["config", "cpu", "vcpuCount"], Kind::I32),
            (vec!["config", "cpu", "maxVcpuCount"], Kind::I32),
            (vec!["config", "memory"], Kind::Msg),
            (vec!["config", "memory", "sizeBytes"], Kind::I64),
            (vec!["config", "memory", "hotplugEnabled"], Kind::Bool),
            (vec!["config", "boot"], Kind::Msg),
            (vec!["config", "boot", "kernelPath"], Kind::Str),
            (vec!["config", "boot", "kernelArgs"], Kind::Str),
            (vec!["config", "storage"], Kind::List),
            (vec!["config", "storage", "0"], Kind::Msg),
            (vec!["config", "storage", "0", "path"], Kind::Str),
            (vec!["config", "storage", "0", "readOnly"], Kind::Bool),
            (vec!["config", "storage", "0", "isRootDevice"], Kind::Bool),
            (vec!["config", "network"], Kind::List),
            (vec!["config", "network", "0"], Kind::Msg),
            (vec!["config", "network", "0", "tapDevice"], Kind::Str),
            (vec!["config", "network", "0", "rxRateLimit"], Kind::Msg),
            (
                vec!["config", "network", "0", "rxRateLimit", "bandwidth"],
                Kind::I64,
            ),
            (
                vec!["config", "network", "0", "rxRateLimit", "refillTime"],
                Kind::I64,
            ),
            (
                vec!["config", "network", "0", "rxRateLimit", "burst"],
                Kind::I64,
            ),
            (vec!["config", "console"], Kind::Msg),
            (vec!["config", "console", "enabled"], Kind::Bool),
            (vec!["config", "memoryLimitMib"], Kind::U32),
            (vec!["config", "cpuQuotaPercent"], Kind::U32),
            (vec!["config", "ioReadBps"], Kind::U64),
            (vec!["config", "ioWriteIops"], Kind::U64),
            (vec!["config", "metadata"], Kind::Map),
            (vec!["config", "metadata", "k"], Kind::MapValue),
        ],
        "ShutdownVm" => vec![
            (vec!["vmId"], Kind::Str),
            (vec!["force"], Kind::Bool),
            (vec!["timeoutSeconds"], Kind::I32),
        ],
        "ListVms" => vec![
            (vec!["pageSize"], Kind::I32),
            (vec!["pageToken"], Kind::Str),
        ],
        _ => vec![(vec!["vmId"], Kind::Str)],
    };
    if method == "CreateVm" {
        let limiters = [
            vec!["config", "driveRateLimiter"],
            vec!["config", "network", "0", "txRateLimiter"],
        ];
        for rl in limiters {
            f.push((rl.clone(), Kind::Msg));
            for bucket in ["bandwidth", "ops"] {
                let mut b = rl.clone();
                b.push(bucket);
                f.push((b.clone(), Kind::Msg));
                for field in ["size", "oneTimeBurst", "refillTimeMs"] {
                    let mut x = b.clone();
                    x.push(field);
                    f.push((x, Kind::U64));
                }
            }
        }
    }
    f
}

/// A valid request body of `method` with every field set (camelCase).
fn full_request(method: &str) -> Value {
    let bucket = json!({"size": "1", "oneTimeBurst": 2, "refillTimeMs": "3"});
    let rl = json!({"bandwidth": bucket, "ops": bucket});
    match method {
        "CreateVm" => json!({
            "vmId": "vm-1",
            "customerId": "c-1",
            "config": {
                "cpu": {"vcpuCount": 1, "maxVcpuCount": 1},
                "memory": {"sizeBytes": "134217728", "hotplugEnabled": false},
                "boot": {"kernelPath": "/k", "kernelArgs": "console=ttyS0"},
                "storage": [{"path": "/r", "readOnly": false, "isRootDevice": true}],
                "network": [{"tapDevice": "tap0",
                             "rxRateLimit": {"bandwidth": "1000", "refillTime": 100, "burst": "0"},
                             "txRateLimiter": rl}],
                "console": {"enabled": true},
                "memoryLimitMib": 300, "cpuQuotaPercent": "50", "ioReadBps": "1000",
                "ioWriteIops": 10, "metadata": {"k": "v"}, "driveRateLimiter": rl,
            },
        }),
        "ShutdownVm" => json!({"vmId": "vm-1", "force": true, "timeoutSeconds": 5}),
        "ListVms" => json!({"pageSize": 10, "pageToken": ""}),
        _ => json!({"vmId": "vm-1"}),
    }
}

fn request_type(method: &str) -> String {
    format!("vmprovisioner.v1.{method}Request")
}

fn snake(camel: &str) -> String {
    let mut s = String::new();
    for ch in camel.chars() {
        if ch.is_ascii_uppercase() {
            s.push('_');
            s.push(ch.to_ascii_lowercase());
        } else {
            s.push(ch);
        }
    }
    s
}

/// Whether the key at `depth` is spelled in snake_case: one bit of `mask` per depth.
fn spelled(key: &str, depth: usize, mask: u64) -> String {
    if mask >> (depth % 64) & 1 == 1 {
        snake(key)
    } else {
        key.to_owned()
    }
}

/// Renames the field names of `v` (not the metadata keys, which are data).
fn respell(v: Value, depth: usize, mask: u64) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| {
                    let v = if k == "metadata" {
                        v
                    } else {
                        respell(v, depth + 1, mask)
                    };
                    (spelled(&k, depth, mask), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| respell(v, depth, mask)).collect()),
        other => other,
    }
}

/// The path serde_path_to_error reports for `path` spelled with `mask`.
fn shown_path(path: &[&str], mask: u64) -> String {
    let mut s = String::new();
    let mut depth = 0;
    let mut in_metadata = false;
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            s.push_str(&format!("[{seg}]"));
            continue;
        }
        if !s.is_empty() {
            s.push('.');
        }
        if in_metadata {
            s.push_str(seg);
        } else {
            s.push_str(&spelled(seg, depth, mask));
        }
        in_metadata = *seg == "metadata";
        depth += 1;
    }
    s
}

fn set_path(v: &mut Value, path: &[&str], with: Value) {
    let mut cur = v;
    for seg in &path[..path.len() - 1] {
        cur = match seg.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[*seg],
        };
    }
    let last = path[path.len() - 1];
    match last.parse::<usize>() {
        Ok(i) => cur[i] = with,
        Err(_) => cur[last] = with,
    }
}

/// Keeps only what lies on `path` (the ancestors of the field).
fn minimal(full: &Value, path: &[&str]) -> Value {
    let mut out = json!({});
    let mut src = full;
    let mut dst = &mut out;
    for seg in &path[..path.len() - 1] {
        if let Ok(i) = seg.parse::<usize>() {
            src = &src[i];
            dst = &mut dst[i];
        } else {
            src = &src[*seg];
            dst[*seg] = if src.is_array() {
                json!([{}])
            } else {
                json!({})
            };
            dst = &mut dst[*seg];
        }
    }
    out
}

/// Values that are never of `kind`.
fn wrong_value(kind: Kind) -> BoxedStrategy<Value> {
    let containers = prop_oneof![
        Just(json!([])),
        Just(json!({})),
        Just(json!([1])),
        Just(json!({"a": 1})),
        Just(json!([["x"]])),
    ];
    let bools = any::<bool>().prop_map(Value::from);
    let numbers = prop_oneof![
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        Just(json!(1.5)),
    ];
    let non_numeric_strings = prop_oneof![
        "\\PC{0,10}".prop_filter("numeric", |s| s.parse::<f64>().is_err()),
        select(vec![
            "", "lots", "1.5", " 7", "7 ", "0x10", "1e3", "-", "+", "NaN"
        ])
        .prop_map(str::to_owned),
    ];
    match kind {
        Kind::U32 | Kind::U64 => {
            let max = if kind == Kind::U32 {
                u64::from(u32::MAX)
            } else {
                u64::MAX
            };
            let out_of_range = prop_oneof![
                (i64::MIN..0).prop_map(Value::from),
                (-1e6f64..1e6)
                    .prop_filter("integral", |f| f.fract() != 0.0)
                    .prop_map(Value::from),
                Just(json!(1e20)),
                (1u128..1 << 100).prop_map(move |n| Value::from((u128::from(max) + n).to_string())),
                (i64::MIN..0).prop_map(|n| Value::from(n.to_string())),
            ];
            let mut s = prop_oneof![
                bools.boxed(),
                containers.boxed(),
                non_numeric_strings.prop_map(Value::from).boxed(),
                out_of_range.boxed(),
            ]
            .boxed();
            if kind == Kind::U32 {
                let big = ((1u64 << 32)..u64::MAX).prop_map(Value::from);
                s = prop_oneof![4 => s, 1 => big].boxed();
            }
            s
        }
        Kind::I32 | Kind::I64 => {
            let out_of_range = prop_oneof![
                (-1e6f64..1e6)
                    .prop_filter("integral", |f| f.fract() != 0.0)
                    .prop_map(Value::from),
                Just(json!(1e30)),
                (1u128..1 << 100).prop_map(|n| Value::from((u128::from(u64::MAX) + n).to_string())),
            ];
            let mut s = prop_oneof![
                bools.boxed(),
                containers.boxed(),
                non_numeric_strings.prop_map(Value::from).boxed(),
                out_of_range.boxed(),
            ]
            .boxed();
            if kind == Kind::I32 {
                let big = ((1i64 << 31)..i64::MAX).prop_map(Value::from);
                s = prop_oneof![4 => s, 1 => big].boxed();
            }
            s
        }
        Kind::Str | Kind::MapValue => prop_oneof![
            numbers.boxed(),
            bools.boxed(),
            if kind == Kind::Str {
                containers.boxed()
            } else {
                prop_oneof![Just(json!([])), Just(json!({"a": "b"})), Just(json!(["v"]))].boxed()
            },
        ]
        .boxed(),
        Kind::Bool => prop_oneof![
            numbers.boxed(),
            "\\PC{0,6}"
                .prop_filter("a boolean word", |s| s != "true" && s != "false")
                .prop_map(Value::from)
                .boxed(),
            containers.boxed(),
        ]
        .boxed(),
        Kind::Msg => prop_oneof![
            numbers.boxed(),
            bools.boxed(),
            "\\PC{0,6}".prop_map(Value::from).boxed(),
            Just(json!([])).boxed(),
            Just(json!([{}])).boxed(),
        ]
        .boxed(),
        Kind::List => prop_oneof![
            numbers.boxed(),
            bools.boxed(),
            "\\PC{0,6}".prop_map(Value::from).boxed(),
            Just(json!({})).boxed(),
            Just(json!({"path": "/d"})).boxed(),
        ]
        .boxed(),
        Kind::Map => prop_oneof![
            numbers.boxed(),
            bools.boxed(),
            "\\PC{0,6}".prop_map(Value::from).boxed(),
            Just(json!([])).boxed(),
            Just(json!([["k", "v"]])).boxed(),
        ]
        .boxed(),
    }
}

#[derive(Debug, Clone)]
struct WrongType {
    method: &'static str,
    path: Vec<&'static str>,
    kind: Kind,
    value: Value,
    mask: u64,
    full: bool,
    content_type: Option<&'static str>,
}

fn wrong_type() -> impl Strategy<Value = WrongType> {
    select(
        METHODS
            .iter()
            .copied()
            .filter(|m| *m != "ListVms")
            .collect::<Vec<_>>(),
    )
    .prop_flat_map(|method| (Just(method), select(fields(method))))
    .prop_flat_map(|(method, (path, kind))| {
        (
            Just((method, path, kind)),
            wrong_value(kind),
            any::<u64>(),
            any::<bool>(),
            select(vec![
                Some("application/json"),
                Some("application/json; charset=utf-8"),
                Some("application/x-www-form-urlencoded"),
                None,
            ]),
        )
    })
    .prop_map(
        |((method, path, kind), value, mask, full, content_type)| WrongType {
            method,
            path,
            kind,
            value,
            mask,
            full,
            content_type,
        },
    )
}

fn post(
    app: &axum::Router,
    method: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> impl Future<Output = Result<Reply, TestCaseError>> + Send + 'static {
    let mut req = Request::post(format!("/{SERVICE_NAME}/{method}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    send(app.clone(), req.body(Body::from(body)).unwrap())
}

/// A value of the wrong type in any field of any request (JSON, any spelling of the names) is
/// `invalid_argument` whose message names the request type and the field's path as sent.
#[test]
fn a_wrong_type_in_any_field_is_invalid_argument_naming_the_field() {
    check(4000, wrong_type, |w| {
        let full = full_request(w.method);
        let mut doc = if w.full {
            full.clone()
        } else {
            minimal(&full, &w.path)
        };
        set_path(&mut doc, &w.path, w.value.clone());
        let doc = respell(doc, 0, w.mask);
        let app = router(common::fake(), ServerOptions::default());
        let r = block_on(post(
            &app,
            w.method,
            w.content_type,
            doc.to_string().into_bytes(),
        ))?;
        let outcome = connect_reply(&r)?;
        let (code, message) = outcome.ok_or_else(|| {
            TestCaseError::fail(format!("accepted {doc} ({:?} at {:?})", w.kind, w.path))
        })?;
        prop_assert_eq!(code, Code::InvalidArgument, "{}", message);
        let want = format!(
            "invalid JSON for {} at {}: ",
            request_type(w.method),
            shown_path(&w.path, w.mask)
        );
        prop_assert!(
            message.starts_with(&want),
            "{} does not start with {:?} (sent {})",
            message,
            want,
            doc
        );
        Ok(())
    });
}

/// A numeric field of `CreateVm` whose value comes back in `GetVmInfo`, and its width.
fn numeric_field() -> impl Strategy<Value = (Vec<&'static str>, Kind)> {
    select(
        fields("CreateVm")
            .into_iter()
            .filter(|(p, k)| matches!(k, Kind::U32 | Kind::U64) && p[1] != "vcpuCount")
            .collect::<Vec<_>>(),
    )
}

/// Number literals of every shape and size, as sent on the wire.
fn number_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        select(vec![
            "0",
            "-0",
            "4294967295",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
            "9007199254740993",
            "1e400",
            "-1e400",
            "1e-400",
            "1.0",
            "5e0",
            "00",
            "01",
            "+1",
        ])
        .prop_map(str::to_owned),
        "[0-9]{19,60}",
        "-[0-9]{1,30}",
        "-?[0-9]{1,6}\\.[0-9]{1,4}",
        "-?[0-9]{1,3}[eE][+-]?[0-9]{1,4}",
    ]
}

/// A number of any size in a numeric field, as a JSON number or a string, is either taken
/// exactly (`GetVmInfo` gives it back) or refused as `invalid_argument` naming the field.
/// Integers in range are always taken; negative, fractional and too-large ones never are.
#[test]
fn numbers_of_any_size_are_taken_exactly_or_refused_naming_the_field() {
    fn input() -> impl Strategy<Value = ((Vec<&'static str>, Kind), String, bool)> {
        (numeric_field(), number_literal(), any::<bool>())
    }
    check(4000, input, |((path, kind), literal, quoted)| {
        let max = if kind == Kind::U32 {
            u64::from(u32::MAX)
        } else {
            u64::MAX
        };
        let placeholder = "\"@@\"";
        let mut doc = minimal(&full_request("CreateVm"), &path);
        doc["vmId"] = json!("n");
        set_path(&mut doc, &path, json!("@@"));
        let sent = if quoted {
            format!("\"{literal}\"")
        } else {
            literal.clone()
        };
        let body = doc.to_string().replace(placeholder, &sent);
        // What the value means, if it is an integer: strings parse like Rust's `FromStr`;
        // JSON numbers as serde_json reads them.
        let (must, exact): (Option<bool>, Option<u64>) = if quoted {
            let v = if kind == Kind::U32 {
                literal.parse::<u32>().ok().map(u64::from)
            } else {
                literal.parse::<u64>().ok()
            };
            (Some(v.is_some()), v)
        } else {
            match serde_json::from_str::<Value>(&literal) {
                Ok(Value::Number(n)) if n.is_u64() => {
                    let n = n.as_u64().unwrap();
                    (Some(n <= max), Some(n).filter(|n| *n <= max))
                }
                Ok(Value::Number(n)) if n.is_i64() => (Some(false), None),
                // A float: refused unless it is an integer in range, which may be taken.
                Ok(Value::Number(n)) => {
                    let f = n.as_f64().unwrap();
                    let integral = f.fract() == 0.0 && f >= 0.0 && f <= max as f64;
                    (if integral { None } else { Some(false) }, None)
                }
                _ => (Some(false), None),
            }
        };
        let app = router(common::fake(), ServerOptions::default());
        let r = block_on(post(
            &app,
            "CreateVm",
            Some("application/json"),
            body.clone().into_bytes(),
        ))?;
        let outcome = connect_reply(&r)?;
        if let Some(must) = must {
            prop_assert_eq!(outcome.is_none(), must, "{} -> {:?}", body, outcome);
        }
        match outcome {
            Some((code, message)) => {
                prop_assert_eq!(code, Code::InvalidArgument);
                let want = format!(
                    "invalid JSON for vmprovisioner.v1.CreateVmRequest at {}: ",
                    shown_path(&path, 0)
                );
                prop_assert!(message.starts_with(&want), "{} (sent {})", message, body);
            }
            None => {
                let info = block_on(post(
                    &app,
                    "GetVmInfo",
                    Some("application/json"),
                    br#"{"vmId":"n"}"#.to_vec(),
                ))?;
                prop_assert_eq!(info.status, StatusCode::OK);
                let v: Value = serde_json::from_slice(&info.body).unwrap();
                let mut got = &v;
                for seg in &path {
                    got = match seg.parse::<usize>() {
                        Ok(i) => &got[i],
                        Err(_) => &got[*seg],
                    };
                }
                // Defaults (zero) are left out of proto3 JSON; uint64 is a string.
                let got = match got {
                    Value::Null => 0,
                    Value::Number(n) => n.as_u64().unwrap(),
                    Value::String(s) => s.parse().unwrap(),
                    other => return Err(TestCaseError::fail(format!("echoed {other}"))),
                };
                match exact {
                    Some(want) => prop_assert_eq!(got, want, "{}", body),
                    // An integral float: its value, exactly.
                    None => {
                        prop_assert_eq!(got as f64, literal.parse::<f64>().unwrap(), "{}", body)
                    }
                }
            }
        }
        Ok(())
    });
}

// Protobuf: wrong wire types and broken values, field by field.

/// (tag, proto field name, whether it is a varint field) of each message.
const CREATE_VM_REQUEST: &[(u32, &str, bool)] = &[
    (1, "vm_id", false),
    (2, "config", false),
    (3, "customer_id", false),
];
const VM_CONFIG: &[(u32, &str, bool)] = &[
    (1, "cpu", false),
    (2, "memory", false),
    (3, "boot", false),
    (4, "storage", false),
    (5, "network", false),
    (6, "console", false),
    (7, "metadata", false),
    (100, "cpuset", false),
    (101, "io_read_bps", true),
    (102, "io_write_bps", true),
    (103, "io_read_iops", true),
    (104, "io_write_iops", true),
    (105, "memory_limit_mib", true),
    (106, "cpu_quota_percent", true),
    (107, "drive_rate_limiter", false),
];
const CPU_CONFIG: &[(u32, &str, bool)] = &[
    (1, "vcpu_count", true),
    (2, "max_vcpu_count", true),
    (3, "topology", false),
    (4, "features", false),
];
const MEMORY_CONFIG: &[(u32, &str, bool)] = &[
    (1, "size_bytes", true),
    (2, "hotplug_enabled", true),
    (3, "max_size_bytes", true),
    (4, "backing", false),
];
const BOOT_CONFIG: &[(u32, &str, bool)] = &[
    (1, "kernel_path", false),
    (2, "initrd_path", false),
    (3, "kernel_args", false),
    (4, "boot_options", false),
];
const STORAGE_DEVICE: &[(u32, &str, bool)] = &[
    (1, "id", false),
    (2, "path", false),
    (3, "read_only", true),
    (4, "is_root_device", true),
    (5, "interface_type", false),
    (6, "options", false),
];
const NETWORK_INTERFACE: &[(u32, &str, bool)] = &[
    (1, "id", false),
    (2, "mac_address", false),
    (3, "tap_device", false),
    (4, "interface_type", false),
    (5, "options", false),
    (6, "ipv4_config", false),
    (7, "ipv6_config", false),
    (8, "mode", true),
    (10, "rx_rate_limit", false),
    (11, "tx_rate_limit", false),
    (100, "rx_rate_limiter", false),
    (101, "tx_rate_limiter", false),
];
const RATE_LIMIT: &[(u32, &str, bool)] = &[
    (1, "bandwidth", true),
    (2, "refill_time", true),
    (3, "burst", true),
];
const RATE_LIMITER: &[(u32, &str, bool)] = &[(1, "bandwidth", false), (2, "ops", false)];
const TOKEN_BUCKET: &[(u32, &str, bool)] = &[
    (1, "size", true),
    (2, "one_time_burst", true),
    (3, "refill_time_ms", true),
];
const STRING_FIELDS: &[&str] = &[
    "vm_id",
    "customer_id",
    "kernel_path",
    "initrd_path",
    "kernel_args",
    "id",
    "path",
    "interface_type",
    "mac_address",
    "tap_device",
    "cpuset",
];

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn key(tag: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(tag) << 3 | u64::from(wire), out);
}

fn len_delimited(tag: u32, payload: &[u8], out: &mut Vec<u8>) {
    key(tag, 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// How a field is broken.
#[derive(Debug, Clone, Copy)]
enum Break {
    /// Sent with a wire type that is not its own (0, 1, 2, 3 or 5).
    WireType(u8),
    /// A varint longer than 10 bytes.
    LongVarint,
    /// A length past the end of the message.
    Truncated,
    /// A string that is not UTF-8.
    NotUtf8,
}

/// One field on the way down: (message, tag, proto field name).
type Step = (&'static str, u32, &'static str);

/// One broken field at the end of a chain of messages, e.g. CreateVmRequest.config ->
/// VmConfig.drives -> Drive.path.
fn broken_field() -> impl Strategy<Value = (Vec<Step>, Break, Vec<u8>)> {
    let leaf = |msg: &'static str, table: &'static [(u32, &'static str, bool)]| {
        select(table.to_vec()).prop_map(move |f| (msg, f))
    };
    const CONFIG: Step = ("CreateVmRequest", 2, "config");
    const NETWORK: Step = ("VmConfig", 5, "network");
    let chain = prop_oneof![
        leaf("CreateVmRequest", CREATE_VM_REQUEST).prop_map(|l| (vec![], l)),
        leaf("VmConfig", VM_CONFIG).prop_map(|l| (vec![CONFIG], l)),
        leaf("CpuConfig", CPU_CONFIG).prop_map(|l| (vec![CONFIG, ("VmConfig", 1, "cpu")], l)),
        leaf("MemoryConfig", MEMORY_CONFIG)
            .prop_map(|l| (vec![CONFIG, ("VmConfig", 2, "memory")], l)),
        leaf("BootConfig", BOOT_CONFIG).prop_map(|l| (vec![CONFIG, ("VmConfig", 3, "boot")], l)),
        leaf("StorageDevice", STORAGE_DEVICE)
            .prop_map(|l| (vec![CONFIG, ("VmConfig", 4, "storage")], l)),
        leaf("NetworkInterface", NETWORK_INTERFACE).prop_map(|l| (vec![CONFIG, NETWORK], l)),
        (
            select(vec![(10, "rx_rate_limit"), (11, "tx_rate_limit")]),
            leaf("RateLimit", RATE_LIMIT)
        )
            .prop_map(|((t, n), l)| (vec![CONFIG, NETWORK, ("NetworkInterface", t, n)], l)),
        leaf("RateLimiter", RATE_LIMITER)
            .prop_map(|l| (vec![CONFIG, ("VmConfig", 107, "drive_rate_limiter")], l)),
        (
            select(vec![(1, "bandwidth"), (2, "ops")]),
            leaf("TokenBucket", TOKEN_BUCKET)
        )
            .prop_map(|((t, n), l)| (
                vec![
                    CONFIG,
                    NETWORK,
                    ("NetworkInterface", 100, "rx_rate_limiter"),
                    ("RateLimiter", t, n),
                ],
                l
            )),
    ];
    (chain, any::<u8>(), vec(any::<u8>(), 0..12)).prop_map(
        |((parents, (msg, (tag, name, is_varint))), pick, junk)| {
            let mut breaks = vec![Break::Truncated];
            let own = if is_varint { 0 } else { 2 };
            breaks.extend(
                [0u8, 1, 2, 3, 5]
                    .into_iter()
                    .filter(|w| *w != own)
                    .map(Break::WireType),
            );
            if is_varint {
                breaks.push(Break::LongVarint);
            }
            if STRING_FIELDS.contains(&name) {
                breaks.push(Break::NotUtf8);
            }
            let how = breaks[usize::from(pick) % breaks.len()];
            let mut chain = parents;
            chain.push((msg, tag, name));
            (chain, how, junk)
        },
    )
}

fn encode_broken(chain: &[Step], how: Break, junk: &[u8]) -> Vec<u8> {
    let (_, tag, _) = chain[chain.len() - 1];
    let mut inner = Vec::new();
    match how {
        Break::WireType(w) => {
            key(tag, w, &mut inner);
            match w {
                0 => varint(7, &mut inner),
                1 => inner.extend([0u8; 8]),
                2 => {
                    varint(junk.len() as u64, &mut inner);
                    inner.extend(junk);
                }
                3 => {} // a group start with no end
                _ => inner.extend([0u8; 4]),
            }
        }
        Break::LongVarint => {
            key(tag, 0, &mut inner);
            inner.extend([0xffu8; 11]);
        }
        Break::Truncated => {
            key(tag, 2, &mut inner);
            varint(junk.len() as u64 + 1000, &mut inner);
            inner.extend(junk);
        }
        Break::NotUtf8 => {
            let mut s = junk.to_vec();
            s.extend([0xff, 0xfe]);
            len_delimited(tag, &s, &mut inner);
        }
    }
    // Wrap in the parents, innermost first.
    for (_, tag, _) in chain[..chain.len() - 1].iter().rev() {
        let mut outer = Vec::new();
        len_delimited(*tag, &inner, &mut outer);
        inner = outer;
    }
    inner
}

/// A protobuf `CreateVm` with any field broken (wrong wire type, overlong varint, a length past
/// the end, a string that is not UTF-8), at any depth, is `invalid_argument` naming each message
/// and field on the way.
#[test]
fn broken_protobuf_fields_are_invalid_argument_naming_the_field() {
    check(4000, broken_field, |(chain, how, junk)| {
        let body = encode_broken(&chain, how, &junk);
        let app = router(common::fake(), ServerOptions::default());
        let r = block_on(post(&app, "CreateVm", Some("application/proto"), body))?;
        let (code, message) = connect_reply(&r)?
            .ok_or_else(|| TestCaseError::fail(format!("accepted {chain:?} {how:?}")))?;
        prop_assert_eq!(code, Code::InvalidArgument);
        prop_assert!(
            message.starts_with("invalid protobuf for vmprovisioner.v1.CreateVmRequest: "),
            "{}",
            message
        );
        for (msg, _, field) in &chain {
            prop_assert!(
                message.contains(&format!("{msg}.{field}")),
                "{} does not name {}.{} ({:?})",
                message,
                msg,
                field,
                how
            );
        }
        Ok(())
    });
}

/// `Endpoint::parse` takes any string: an error is `invalid_argument` with a message; a TCP
/// endpoint is an http:// URL, a Unix one a non-empty path; the endpoint's display parses back
/// to it.
#[test]
fn endpoint_parse_takes_any_string() {
    fn input() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,30}",
            any::<String>(),
            "(unix:|http://|https://|//|/| )?[a-z0-9:/.\\[\\] -]{0,20}",
        ]
    }
    check(20_000, input, |s| {
        match Endpoint::parse(&s) {
            Err(e) => {
                prop_assert_eq!(e.code, Code::InvalidArgument);
                prop_assert!(!e.message.trim().is_empty());
            }
            Ok(endpoint) => {
                match &endpoint {
                    Endpoint::Tcp(url) => prop_assert!(url.starts_with("http://"), "{}", url),
                    Endpoint::Unix(p) => prop_assert!(!p.as_os_str().is_empty()),
                }
                let shown = endpoint.to_string();
                prop_assert_eq!(
                    Endpoint::parse(&shown).ok(),
                    Some(endpoint),
                    "{:?} shown as {:?}",
                    s,
                    shown
                );
            }
        }
        Ok(())
    });
}

/// The client's decoding of an error response takes any status and body: a Connect error body
/// gives its code (unknown names are `unknown`), anything else an error naming the HTTP status.
#[test]
fn the_client_decodes_any_error_response() {
    fn input() -> impl Strategy<Value = (u16, Vec<u8>)> {
        (
            100u16..1000,
            prop_oneof![
                vec(any::<u8>(), 0..600),
                json_value().prop_map(|v| v.to_string().into_bytes()),
                (short_string(), json_value()).prop_map(|(code, message)| json!({
                    "code": code,
                    "message": message
                })
                .to_string()
                .into_bytes()),
                "\\PC{0,1200}".prop_map(String::into_bytes),
            ],
        )
    }
    check(4000, input, |(status, body)| {
        let status = StatusCode::from_u16(status).unwrap();
        let e = ApiError::from_connect_response(status, &body);
        let connect = serde_json::from_slice::<Map<String, Value>>(&body)
            .ok()
            .filter(|m| {
                m.get("code").is_some_and(Value::is_string)
                    && m.get("message").is_none_or(Value::is_string)
            });
        match connect {
            Some(m) => {
                let code = m["code"].as_str().unwrap();
                prop_assert_eq!(e.code, code.parse().unwrap_or(Code::Unknown));
            }
            None => {
                prop_assert!(
                    e.message.starts_with(&format!("HTTP {status}")),
                    "{}",
                    e.message
                );
                prop_assert!(e.message.len() <= 600, "{} bytes", e.message.len());
            }
        }
        Ok(())
    });
}
