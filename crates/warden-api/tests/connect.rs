//! Connect protocol tests through `router` without a socket.

mod common;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use prost::Message;
use serde_json::{json, Value};
use tower::ServiceExt;
use warden_api::{pb, router, Code, ServerOptions};

const BASE: &str = "/vmprovisioner.v1.VmService";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["code"], code, "body: {v}");
        v["message"].as_str().unwrap().to_owned()
    }
}

async fn send(app: &axum::Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(
    app: &axum::Router,
    method: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    let mut req = Request::post(format!("{BASE}/{method}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    send(app, req.body(body.into()).unwrap()).await
}

async fn post_json(app: &axum::Router, method: &str, body: Value) -> Reply {
    post(app, method, Some("application/json"), body.to_string()).await
}

fn app() -> axum::Router {
    router(common::fake(), ServerOptions::default())
}

#[tokio::test]
async fn json_create_then_get() {
    let app = app();
    let r = post_json(
        &app,
        "CreateVm",
        json!({"vmId": "vm1", "customerId": "acme", "config": {"cpu": {"vcpuCount": 2}, "memory": {"sizeBytes": "268435456"}, "metadata": {"team": "a"}, "memoryLimitMib": 300}}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(
        r.json(),
        json!({"vmId": "vm1", "state": "VM_STATE_CREATED", "wardenState": "VM_STATE_CREATED"})
    );

    let r = post_json(&app, "GetVmInfo", json!({"vmId": "vm1"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["vmId"], "vm1");
    assert_eq!(v["state"], "VM_STATE_CREATED");
    assert_eq!(v["config"]["cpu"]["vcpuCount"], 2);
    // int64 is a string in proto3 JSON.
    assert_eq!(v["config"]["memory"]["sizeBytes"], "268435456");
    assert_eq!(v["config"]["memoryLimitMib"], 300);
    assert_eq!(v["config"]["metadata"]["team"], "a");
    assert_eq!(v["warden"]["createdAtUnixMs"], "1700000000000");

    let r = post_json(&app, "ListVms", json!({})).await;
    assert_eq!(r.json()["vms"].as_array().unwrap().len(), 1);

    // A duplicate is already_exists (409).
    post_json(&app, "CreateVm", json!({"vmId": "vm1"}))
        .await
        .assert_error(409, "already_exists");
    // Lifecycle through Connect.
    let r = post_json(&app, "BootVm", json!({"vmId": "vm1"})).await;
    assert_eq!(
        r.json(),
        json!({"success": true, "state": "VM_STATE_RUNNING", "wardenState": "VM_STATE_RUNNING"})
    );
    post_json(&app, "BootVm", json!({"vmId": "vm1"}))
        .await
        .assert_error(400, "failed_precondition");
    let r = post_json(&app, "DeleteVm", json!({"vmId": "vm1"})).await;
    assert_eq!(r.json(), json!({"success": true}));
    post_json(&app, "GetVmInfo", json!({"vmId": "vm1"}))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn curl_form_content_type_is_json() {
    let app = app();
    let r = post(
        &app,
        "CreateVm",
        Some("application/x-www-form-urlencoded"),
        r#"{"config":{"cpu":{"vcpuCount":1}}}"#,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.content_type(), "application/json");
    assert_eq!(r.json()["state"], "VM_STATE_CREATED");
    let vm_id = r.json()["vmId"].as_str().unwrap().to_owned();

    // No content type at all: same treatment.
    let r = post(&app, "GetVmInfo", None, format!(r#"{{"vm_id":"{vm_id}"}}"#)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["config"]["cpu"]["vcpuCount"], 1);

    // An empty body is the empty message (`curl -X POST .../ListVms`).
    let r = post(&app, "ListVms", None, "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["vms"].as_array().unwrap().len(), 1);

    // Form-encoded with an unknown field is judged exactly like JSON.
    let m = post(
        &app,
        "CreateVm",
        Some("application/x-www-form-urlencoded"),
        r#"{"nope":1}"#,
    )
    .await
    .assert_error(400, "invalid_argument");
    assert!(m.contains("nope"), "{m}");

    // A real form body is not JSON: 415.
    let r = post(
        &app,
        "CreateVm",
        Some("application/x-www-form-urlencoded"),
        "vm_id=a&b=c",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn snake_and_camel_case_fields() {
    let app = app();
    let r = post_json(
        &app,
        "CreateVm",
        json!({"vm_id": "snake", "customer_id": "c", "config": {"cpu": {"vcpu_count": 3}, "memory": {"size_bytes": 134217728},
            "boot": {"kernel_path": "/k"}, "network": [{"tap_device": "tap0"}],
            "storage": [{"path": "/d", "read_only": true}], "cpu_quota_percent": 50}}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = post_json(
        &app,
        "CreateVm",
        json!({"vmId": "camel", "customerId": "c", "config": {"cpu": {"vcpuCount": 3}, "memory": {"sizeBytes": "134217728"},
            "boot": {"kernelPath": "/k"}, "network": [{"tapDevice": "tap0"}],
            "storage": [{"path": "/d", "readOnly": true}], "cpuQuotaPercent": 50}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let a = post_json(&app, "GetVmInfo", json!({"vm_id": "snake"}))
        .await
        .json();
    let b = post_json(&app, "GetVmInfo", json!({"vmId": "camel"}))
        .await
        .json();
    assert_eq!(a["config"], b["config"]);
    assert_eq!(
        a["config"],
        json!({"cpu": {"vcpuCount": 3}, "memory": {"sizeBytes": "134217728"}, "boot": {"kernelPath": "/k"},
            "network": [{"tapDevice": "tap0"}], "storage": [{"path": "/d", "readOnly": true}],
            "cpuQuotaPercent": 50})
    );
    // Enum values may be sent as names or numbers.
    let r = post_json(
        &app,
        "ShutdownVm",
        json!({"vmId": "snake", "force": true, "timeoutSeconds": "5"}),
    )
    .await;
    r.assert_error(400, "failed_precondition");
}

#[tokio::test]
async fn unknown_field_is_invalid_argument_naming_it() {
    let app = app();
    let m = post_json(&app, "CreateVm", json!({"vmId": "a", "bogusTopField": 1}))
        .await
        .assert_error(400, "invalid_argument");
    assert!(m.contains("bogusTopField"), "{m}");
    let m = post_json(
        &app,
        "CreateVm",
        json!({"config": {"cpu": {"vcpuCount": 1, "vcpus": 2}}}),
    )
    .await
    .assert_error(400, "invalid_argument");
    assert!(m.contains("vcpus") && m.contains("config.cpu"), "{m}");
}

#[tokio::test]
async fn wrong_types_and_bad_json_are_invalid_argument() {
    let app = app();
    for body in [
        json!({"config": {"cpu": {"vcpuCount": "lots"}}}),
        json!({"config": {"memory": {"sizeBytes": "1.5"}}}),
        json!({"config": {"cpu": {"vcpuCount": 1.5}}}),
        json!({"vmId": 5}),
        json!({"config": "big"}),
        json!({"config": {"storage": {"path": "/d"}}}),
        json!({"config": {"console": {"enabled": "yes"}}}),
        json!([1, 2]),
    ] {
        let m = post_json(&app, "CreateVm", body.clone())
            .await
            .assert_error(400, "invalid_argument");
        assert!(m.contains("CreateVmRequest"), "{body}: {m}");
    }
    post(&app, "CreateVm", Some("application/json"), "{\"vmId\":")
        .await
        .assert_error(400, "invalid_argument");
    post(&app, "CreateVm", Some("application/json"), "{} {}")
        .await
        .assert_error(400, "invalid_argument");
    // Nothing was created.
    assert_eq!(
        post_json(&app, "ListVms", json!({})).await.json(),
        json!({})
    );
}

#[tokio::test]
async fn binary_proto_round_trip() {
    let app = app();
    let req = pb::CreateVmRequest {
        vm_id: "bin".into(),
        config: Some(
            pb::VmConfig::with_kernel(String::new())
                .vcpus(4)
                .memory_mib(1024),
        ),
        customer_id: String::new(),
    };
    let r = post(
        &app,
        "CreateVm",
        Some("application/proto"),
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/proto");
    let resp = pb::CreateVmResponse::decode(r.body).unwrap();
    assert_eq!(resp.vm_id, "bin");
    assert_eq!(resp.state(), pb::VmState::Created);

    let req = pb::GetVmInfoRequest {
        vm_id: "bin".into(),
    };
    let r = post(
        &app,
        "GetVmInfo",
        Some("application/proto"),
        req.encode_to_vec(),
    )
    .await;
    let info = pb::GetVmInfoResponse::decode(r.body).unwrap();
    assert_eq!(info.config.unwrap().memory_in_mib(), 1024);

    // Garbage protobuf: invalid_argument, answered in Connect error JSON.
    let r = post(
        &app,
        "CreateVm",
        Some("application/proto"),
        vec![0xff, 0xff, 0xff],
    )
    .await;
    r.assert_error(400, "invalid_argument");
    assert_eq!(r.content_type(), "application/json");
    // Errors for proto requests are JSON too.
    let req = pb::GetVmInfoRequest {
        vm_id: "missing".into(),
    };
    post(
        &app,
        "GetVmInfo",
        Some("application/proto"),
        req.encode_to_vec(),
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn ten_mib_body_is_resource_exhausted() {
    let app = app();
    let big = vec![b' '; 10 * 1024 * 1024];
    // Declared length.
    let req = Request::post(format!("{BASE}/CreateVm"))
        .header("content-type", "application/json")
        .header("content-length", big.len().to_string())
        .body(Body::from(big.clone()))
        .unwrap();
    send(&app, req)
        .await
        .assert_error(429, "resource_exhausted");
    // Streamed, no length.
    let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024 * 1024])));
    let body = Body::from_stream(futures_stream(chunks));
    let req = Request::post(format!("{BASE}/CreateVm"))
        .body(body)
        .unwrap();
    send(&app, req)
        .await
        .assert_error(429, "resource_exhausted");
    // A custom, smaller limit.
    let app = router(
        common::fake(),
        ServerOptions {
            max_body_bytes: 16,
            ..Default::default()
        },
    );
    post_json(&app, "CreateVm", json!({"vmId": "a-rather-long-name"}))
        .await
        .assert_error(429, "resource_exhausted");
    post_json(&app, "CreateVm", json!({"vmId": "a"})).await;
}

fn futures_stream<I: Iterator + Send + 'static>(
    it: I,
) -> impl futures_core::Stream<Item = I::Item> + Send {
    tokio_stream::iter(it)
}

#[tokio::test]
async fn bearer_token_connect() {
    let app = router(
        common::fake(),
        ServerOptions {
            bearer_token: Some("s3cret".into()),
            ..Default::default()
        },
    );
    let m = post_json(&app, "ListVms", json!({}))
        .await
        .assert_error(401, "unauthenticated");
    assert!(m.contains("Bearer"), "{m}");
    for auth in [
        "Bearer wrong",
        "Bearer s3cre",
        "Bearer s3cret2",
        "Basic s3cret",
        "s3cret",
        "Bearer ",
    ] {
        let req = Request::post(format!("{BASE}/ListVms"))
            .header("content-type", "application/json")
            .header("authorization", auth)
            .body(Body::from("{}"))
            .unwrap();
        send(&app, req).await.assert_error(401, "unauthenticated");
    }
    for auth in ["Bearer s3cret", "bearer s3cret"] {
        let req = Request::post(format!("{BASE}/ListVms"))
            .header("content-type", "application/json")
            .header("authorization", auth)
            .body(Body::from("{}"))
            .unwrap();
        let r = send(&app, req).await;
        assert_eq!(r.status, StatusCode::OK, "{auth}");
    }
    // Unknown paths are not revealed without the token either.
    let r = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bearer_token_grpc_without_socket() {
    let app = router(
        common::fake(),
        ServerOptions {
            bearer_token: Some("s3cret".into()),
            ..Default::default()
        },
    );
    let req = Request::post(format!("{BASE}/ListVms"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::from(vec![0u8, 0, 0, 0, 0]))
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers.get("grpc-status").unwrap(), "16");
}

#[tokio::test]
async fn every_code_maps_to_its_http_status() {
    let app = app();
    let expected = [
        ("canceled", 499),
        ("unknown", 500),
        ("invalid_argument", 400),
        ("deadline_exceeded", 504),
        ("not_found", 404),
        ("already_exists", 409),
        ("permission_denied", 403),
        ("resource_exhausted", 429),
        ("failed_precondition", 400),
        ("aborted", 409),
        ("out_of_range", 400),
        ("unimplemented", 501),
        ("internal", 500),
        ("unavailable", 503),
        ("data_loss", 500),
        ("unauthenticated", 401),
    ];
    assert_eq!(expected.len(), Code::ALL.len());
    for (name, status) in expected {
        let code: Code = name.parse().unwrap();
        assert_eq!(code.http_status().as_u16(), status, "{name}");
        let m = post_json(&app, "DeleteVm", json!({"vmId": format!("code:{name}")}))
            .await
            .assert_error(status, name);
        assert_eq!(m, format!("forced {name}"));
    }
}

#[tokio::test]
async fn unknown_method_and_bad_requests() {
    let app = app();
    let m = post_json(&app, "Frobnicate", json!({}))
        .await
        .assert_error(404, "unimplemented");
    assert!(m.contains("CreateVm"), "{m}");
    let r = send(
        &app,
        Request::post("/other.Service/CreateVm")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    r.assert_error(404, "unimplemented");
    let r = send(
        &app,
        Request::get(format!("{BASE}/ListVms"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers.get("allow").unwrap(), "POST");
    let r = post(&app, "ListVms", Some("text/plain"), "{}").await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = post(&app, "ListVms", Some("application/connect+json"), "{}").await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Parameters on the content type are fine.
    let r = post(
        &app,
        "ListVms",
        Some("application/json; charset=utf-8"),
        "{}",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Compressed requests are refused cleanly.
    let req = Request::post(format!("{BASE}/ListVms"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from("{}"))
        .unwrap();
    send(&app, req).await.assert_error(501, "unimplemented");
}

#[derive(Clone, Default)]
struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn requests_are_logged_at_debug() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = app();
    post_json(&app, "CreateVm", json!({"vmId": "a"})).await;
    post_json(&app, "GetVmInfo", json!({"vmId": "b"})).await;
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("method=\"/vmprovisioner.v1.VmService/CreateVm\" code=\"ok\""),
        "{logs}"
    );
    assert!(
        logs.contains("method=\"/vmprovisioner.v1.VmService/GetVmInfo\" code=\"not_found\""),
        "{logs}"
    );
    assert!(logs.contains("duration_ms="), "{logs}");
    assert!(logs.contains("DEBUG"), "{logs}");
}

/// The envelopes of a Connect stream: (flags, message).
fn envelopes(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "a truncated envelope prefix: {body:?}");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

fn enveloped(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[tokio::test]
async fn watch_vms_streams_enveloped_events_over_connect() {
    let app = app();
    post_json(&app, "CreateVm", json!({"vmId": "w1"})).await;
    post_json(&app, "CreateVm", json!({"vmId": "w2"})).await;

    // JSON: one envelope per event, then the end-of-stream message.
    let r = post(
        &app,
        "WatchVms",
        Some("application/connect+json"),
        enveloped(b"{}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/connect+json");
    let env = envelopes(&r.body);
    assert_eq!(env.len(), 3, "{env:?}");
    let first: Value = serde_json::from_slice(&env[0].1).unwrap();
    assert_eq!(
        first,
        json!({"vmId": "w1", "newState": "VM_STATE_CREATED", "reason": "current"})
    );
    assert_eq!(env[2], (0x02, b"{}".to_vec()));

    // Binary protobuf.
    let req = pb::WatchVmsRequest::default().encode_to_vec();
    let r = post(
        &app,
        "WatchVms",
        Some("application/connect+proto"),
        enveloped(&req),
    )
    .await;
    let env = envelopes(&r.body);
    let ev = pb::WatchVmsResponse::decode(env[1].1.as_slice()).unwrap();
    assert_eq!(
        (ev.vm_id.as_str(), ev.new_state()),
        ("w2", pb::VmState::Created)
    );

    // An error is the end-of-stream message, with HTTP 200.
    let r = post(
        &app,
        "WatchVms",
        Some("application/connect+json"),
        enveloped(br#"{"vmId":"none"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let env = envelopes(&r.body);
    assert_eq!(env.len(), 1);
    let end: Value = serde_json::from_slice(&env[0].1).unwrap();
    assert_eq!(end["error"]["code"], "not_found", "{end}");

    // A bad request message names the type and field.
    let r = post(
        &app,
        "WatchVms",
        Some("application/connect+json"),
        enveloped(br#"{"vmId":5}"#),
    )
    .await;
    let end: Value = serde_json::from_slice(&envelopes(&r.body)[0].1).unwrap();
    assert_eq!(end["error"]["code"], "invalid_argument");
    assert!(
        end["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WatchVmsRequest at vmId"),
        "{end}"
    );
    // A broken envelope.
    let r = post(&app, "WatchVms", Some("application/connect+json"), "{}").await;
    let end: Value = serde_json::from_slice(&envelopes(&r.body)[0].1).unwrap();
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    // The unary content types are not the streaming protocol's.
    post(&app, "WatchVms", Some("application/json"), "{}")
        .await
        .assert_error(415, "invalid_argument");
}
