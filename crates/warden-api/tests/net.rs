//! Real sockets: gRPC with the tonic client, the Connect `Client` over TCP and a Unix socket,
//! and `curl`.

mod common;

use std::time::Duration;

use warden_api::pb::vm_service_client::VmServiceClient;
use warden_api::{pb, router, serve_with_shutdown, Client, Code, Endpoint, Listen, ServerOptions};

fn with_token(token: &str) -> ServerOptions {
    ServerOptions {
        bearer_token: Some(token.into()),
        ..Default::default()
    }
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn grpc_with_tonic_client() {
    let addr = common::spawn_tcp(router(common::fake(), ServerOptions::default())).await;
    let mut grpc = VmServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let resp = grpc
        .create_vm(pb::CreateVmRequest {
            vm_id: "g1".into(),
            config: Some(pb::VmConfig::with_kernel(String::new()).vcpus(2)),
            customer_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.vm_id, "g1");
    assert_eq!(resp.state(), pb::VmState::Created);
    let info = grpc
        .get_vm_info(pb::GetVmInfoRequest { vm_id: "g1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.config.unwrap().cpu.unwrap().vcpu_count, 2);
    let booted = grpc
        .boot_vm(pb::BootVmRequest { vm_id: "g1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(booted.state(), pb::VmState::Running);
    assert_eq!(
        grpc.list_vms(pb::ListVmsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .vms
            .len(),
        1
    );

    // ApiError -> tonic::Status, for every code.
    let err = grpc
        .get_vm_info(pb::GetVmInfoRequest {
            vm_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("nope"));
    for code in Code::ALL {
        let err = grpc
            .delete_vm(pb::DeleteVmRequest {
                vm_id: format!("code:{code}"),
                force: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code.grpc_code(), "{code}");
        assert_eq!(err.message(), format!("forced {code}"));
    }

    // The same router also answers Connect on the same port.
    let client = Client::new(Endpoint::Tcp(format!("http://{addr}")), None);
    assert_eq!(
        client
            .list_vms(pb::ListVmsRequest::default())
            .await
            .unwrap()
            .vms
            .len(),
        1
    );
}

#[tokio::test]
async fn grpc_bearer_token() {
    let addr = common::spawn_tcp(router(common::fake(), with_token("tok"))).await;
    let mut grpc = VmServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let err = grpc
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = grpc
        .list_vms(authed(pb::ListVmsRequest::default(), "bad"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    grpc.list_vms(authed(pb::ListVmsRequest::default(), "tok"))
        .await
        .unwrap();
}

#[tokio::test]
async fn grpc_oversized_message_is_rejected() {
    let options = ServerOptions {
        max_body_bytes: 1024,
        ..Default::default()
    };
    let addr = common::spawn_tcp(router(common::fake(), options)).await;
    let mut grpc = VmServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let err = grpc
        .create_vm(pb::CreateVmRequest {
            vm_id: "x".repeat(4096),
            config: None,
            customer_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // The connection is still usable.
    grpc.list_vms(pb::ListVmsRequest::default()).await.unwrap();
}

#[tokio::test]
async fn connect_client_over_tcp() {
    let addr = common::spawn_tcp(router(common::fake(), with_token("tok"))).await;
    let client = Client::new(Endpoint::Tcp(format!("http://{addr}/")), Some("tok".into()))
        .with_timeout(Duration::from_secs(10));
    let created = client
        .create_vm(pb::CreateVmRequest {
            vm_id: String::new(),
            config: Some(
                pb::VmConfig::with_kernel(String::new())
                    .vcpus(1)
                    .memory_mib(128),
            ),
            customer_id: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(created.vm_id, "vm-1");
    let info = client
        .get_vm_info(pb::GetVmInfoRequest {
            vm_id: "vm-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(info.config.unwrap().memory_in_mib(), 128);
    client
        .boot_vm(pb::BootVmRequest {
            vm_id: "vm-1".into(),
        })
        .await
        .unwrap();
    client
        .pause_vm(pb::PauseVmRequest {
            vm_id: "vm-1".into(),
        })
        .await
        .unwrap();
    client
        .resume_vm(pb::ResumeVmRequest {
            vm_id: "vm-1".into(),
        })
        .await
        .unwrap();
    client
        .reboot_vm(pb::RebootVmRequest {
            vm_id: "vm-1".into(),
            force: false,
        })
        .await
        .unwrap();
    let stopped = client
        .shutdown_vm(pb::ShutdownVmRequest {
            vm_id: "vm-1".into(),
            force: true,
            timeout_seconds: 1,
        })
        .await
        .unwrap();
    assert_eq!(stopped.state(), pb::VmState::Shutdown);

    let err = client
        .get_vm_info(pb::GetVmInfoRequest {
            vm_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert!(err.message.contains("nope"), "{err}");
    let err = client
        .create_vm(pb::CreateVmRequest {
            vm_id: "big".into(),
            config: Some(pb::VmConfig::with_kernel(String::new()).vcpus(64)),
            customer_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(
        client
            .delete_vm(pb::DeleteVmRequest {
                vm_id: "vm-1".into(),
                force: false
            })
            .await
            .unwrap()
            .success
    );

    // Wrong or missing token.
    let err = Client::new(Endpoint::Tcp(format!("http://{addr}")), Some("bad".into()))
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unauthenticated);
    let err = Client::new(Endpoint::Tcp(format!("http://{addr}")), None)
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unauthenticated);
}

#[tokio::test]
async fn connect_client_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.sock");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with_shutdown(
        router(common::fake(), with_token("tok")),
        Listen::Unix(path.clone()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    for _ in 0..100 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let endpoint: Endpoint = format!("unix:{}", path.display()).parse().unwrap();
    assert_eq!(endpoint, Endpoint::Unix(path.clone()));
    let client = Client::new(endpoint, Some("tok".into()));
    client
        .create_vm(pb::CreateVmRequest {
            vm_id: "u1".into(),
            config: Some(Default::default()),
            customer_id: String::new(),
        })
        .await
        .unwrap();
    let list = client
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap();
    assert_eq!(list.vms.len(), 1);
    assert_eq!(list.vms[0].vm_id, "u1");
    let err = client
        .create_vm(pb::CreateVmRequest {
            vm_id: "u1".into(),
            config: None,
            customer_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::AlreadyExists);

    // gRPC over the Unix socket works too (h2c).
    let p = path.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut grpc = VmServiceClient::new(channel);
    assert_eq!(
        grpc.list_vms(authed(pb::ListVmsRequest::default(), "tok"))
            .await
            .unwrap()
            .into_inner()
            .vms
            .len(),
        1
    );

    // A second server on the same live socket is refused.
    let err = {
        let _guard = tokio::runtime::Handle::current().enter();
        warden_api::bind_unix(&path).unwrap_err()
    };
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "socket removed on shutdown");

    // Daemon gone: unavailable, naming the endpoint and `warden serve`.
    let err = client
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(err.message.contains(&path.display().to_string()), "{err}");
    assert!(err.message.contains("warden serve"), "{err}");
}

#[tokio::test]
async fn client_reports_unreachable_tcp_daemon() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(Endpoint::parse(&addr.to_string()).unwrap(), None);
    assert_eq!(client.endpoint(), &Endpoint::Tcp(format!("http://{addr}")));
    let err = client
        .list_vms(pb::ListVmsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(err.message.contains(&addr.to_string()), "{err}");
    assert!(err.message.contains("warden serve"), "{err}");
}

#[test]
fn endpoint_parsing() {
    use std::path::PathBuf;
    assert_eq!(
        Endpoint::parse("http://h:1").unwrap(),
        Endpoint::Tcp("http://h:1".into())
    );
    assert_eq!(
        Endpoint::parse("h:1").unwrap(),
        Endpoint::Tcp("http://h:1".into())
    );
    assert_eq!(
        Endpoint::parse("unix:///run/w.sock").unwrap(),
        Endpoint::Unix(PathBuf::from("/run/w.sock"))
    );
    assert_eq!(
        Endpoint::parse("unix:/run/w.sock").unwrap(),
        Endpoint::Unix(PathBuf::from("/run/w.sock"))
    );
    assert_eq!(
        Endpoint::parse("/run/w.sock").unwrap(),
        Endpoint::Unix(PathBuf::from("/run/w.sock"))
    );
    assert_eq!(
        Endpoint::parse("https://h").unwrap_err().code,
        Code::InvalidArgument
    );
    assert_eq!(Endpoint::Unix(PathBuf::from("/x")).to_string(), "unix:/x");
}

#[tokio::test]
async fn curl_seed_command() {
    let addr = common::spawn_tcp(router(common::fake(), ServerOptions::default())).await;
    let url = format!(
        "http://127.0.0.1:{}/vmprovisioner.v1.VmService/CreateVm",
        addr.port()
    );
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            &url,
            "-d",
            r#"{"config":{"cpu":{"vcpuCount":1}}}"#,
        ])
        .args(["-w", "\n%{http_code} %{content_type}"])
        .output()
        .await
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (body, meta) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(meta, "200 application/json", "{stdout}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["state"], "VM_STATE_CREATED");
    assert!(v["vmId"].as_str().is_some_and(|s| !s.is_empty()), "{v}");

    // The same shape with an unknown field names it.
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            &url,
            "-d",
            r#"{"config":{"vcpuCnt":1}}"#,
            "-w",
            "\n%{http_code}",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(code, "400");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], "invalid_argument");
    assert!(v["message"].as_str().unwrap().contains("vcpuCnt"), "{v}");

    // A 10 MiB upload gets a clean resource_exhausted.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 10 * 1024 * 1024]).unwrap();
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            &url,
            "-H",
            "content-type: application/json",
        ])
        .args([
            "--data-binary",
            &format!("@{}", big.display()),
            "-w",
            "\n%{http_code}",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with("\n429"),
        "stdout {stdout:?} stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resource_exhausted"), "{stdout}");
}
