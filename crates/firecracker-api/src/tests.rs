//! Client tests against a fake Firecracker: a Unix-socket HTTP server in a temporary folder.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// One request as the fake server saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    body: String,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Reads one HTTP/1.1 request (head plus `Content-Length` body) from `stream`.
async fn read_request(stream: &mut UnixStream) -> Seen {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before sending a full request head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut seen = Seen {
        head,
        body: String::new(),
    };
    let len: usize = seen
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before sending the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    seen.body = String::from_utf8(buf[head_end..head_end + len].to_vec()).unwrap();
    seen
}

/// A fake Firecracker that answers one request with `status` and `body`, then returns it.
fn fake(
    dir: &tempfile::TempDir,
    status: &'static str,
    body: &'static str,
) -> (Client, tokio::task::JoinHandle<Seen>) {
    let path = dir.path().join("fc.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let seen = read_request(&mut stream).await;
        let mut resp = format!("HTTP/1.1 {status}\r\nServer: Firecracker API\r\n");
        if !body.is_empty() {
            resp += &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        resp += "\r\n";
        resp += body;
        stream.write_all(resp.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        seen
    });
    (Client::new(path), server)
}

#[tokio::test]
async fn no_content_is_ok_and_request_is_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server) = fake(&dir, "204 No Content", "");
    let boot = BootSource {
        kernel_image_path: "/vmlinux".into(),
        ..Default::default()
    };
    client.put_boot_source(&boot).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.request_line(), "PUT /boot-source HTTP/1.1");
    assert_eq!(seen.header("host").as_deref(), Some("localhost"));
    assert_eq!(
        seen.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(seen.body, r#"{"kernel_image_path":"/vmlinux"}"#);
}

#[tokio::test]
async fn fault_message_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server) = fake(
        &dir,
        "400 Bad Request",
        r#"{"fault_message":"Boot source error: The kernel file cannot be opened"}"#,
    );
    let boot = BootSource {
        kernel_image_path: "/nope".into(),
        ..Default::default()
    };
    let err = client.put_boot_source(&boot).await.unwrap_err();
    server.await.unwrap();
    match &err {
        Error::Fault {
            method,
            uri,
            status,
            fault_message,
        } => {
            assert_eq!(method, Method::PUT);
            assert_eq!(uri, "/boot-source");
            assert_eq!(*status, 400);
            assert_eq!(
                fault_message,
                "Boot source error: The kernel file cannot be opened"
            );
        }
        other => panic!("expected Fault, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "Firecracker refused PUT /boot-source (400): Boot source error: The kernel file cannot be opened"
    );
}

#[tokio::test]
async fn fault_without_json_keeps_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server) = fake(&dir, "500 Internal Server Error", "oops\n");
    let err = client.action(ActionType::InstanceStart).await.unwrap_err();
    let seen = server.await.unwrap();
    assert_eq!(seen.request_line(), "PUT /actions HTTP/1.1");
    assert_eq!(seen.body, r#"{"action_type":"InstanceStart"}"#);
    assert!(
        matches!(&err, Error::Fault { status: 500, fault_message, .. } if fault_message == "oops"),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_decodes_json() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server) = fake(
        &dir,
        "200 OK",
        r#"{"id":"vm1","state":"Running","vmm_version":"1.12.1","app_name":"Firecracker"}"#,
    );
    let info = client.instance_info().await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.request_line(), "GET / HTTP/1.1");
    assert_eq!(seen.body, "");
    assert_eq!(info.id, "vm1");
    assert_eq!(info.state, InstanceState::Running);
}

#[tokio::test]
async fn bad_json_is_a_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server) = fake(&dir, "200 OK", r#"{"drives": 7}"#);
    let err = client.vm_config().await.unwrap_err();
    server.await.unwrap();
    assert!(
        matches!(&err, Error::Decode { uri, .. } if uri == "/vm/config"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "cannot decode Firecracker's response to GET /vm/config"
    );
}

#[tokio::test]
async fn device_ids_go_in_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (client, server) = fake(&dir, "204 No Content", "");
    let drive = Drive {
        drive_id: "root fs/1".into(),
        ..Default::default()
    };
    client.put_drive(&drive).await.unwrap();
    assert_eq!(
        server.await.unwrap().request_line(),
        "PUT /drives/root%20fs%2F1 HTTP/1.1"
    );

    let dir = tempfile::tempdir().unwrap();
    let (client, server) = fake(&dir, "204 No Content", "");
    let net = NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: "tap0".into(),
        ..Default::default()
    };
    client.put_network_interface(&net).await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.request_line(), "PUT /network-interfaces/eth0 HTTP/1.1");
    assert_eq!(seen.body, r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#);
}

#[tokio::test]
async fn pause_and_resume_patch_vm() {
    for (resume, state) in [(false, "Paused"), (true, "Resumed")] {
        let dir = tempfile::tempdir().unwrap();
        let (client, server) = fake(&dir, "204 No Content", "");
        if resume {
            client.resume().await.unwrap();
        } else {
            client.pause().await.unwrap();
        }
        let seen = server.await.unwrap();
        assert_eq!(seen.request_line(), "PATCH /vm HTTP/1.1");
        assert_eq!(seen.body, format!(r#"{{"state":"{state}"}}"#));
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fc.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request(&mut stream).await;
        // Never answer; hold the connection open until the client gives up.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let client = Client::new(&path).with_timeout(Duration::from_millis(100));
    let err = client
        .put_metrics(&Metrics {
            metrics_path: "/m".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { uri, .. } if uri == "/metrics"),
        "{err:?}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn requests_do_not_retry_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(dir.path().join("missing.sock"));
    let err = client.instance_info().await.unwrap_err();
    match &err {
        Error::Connect { path, source } => {
            assert_eq!(path, client.socket_path());
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with("cannot connect to Firecracker API socket "));
}

#[tokio::test]
async fn wait_ready_times_out_when_the_socket_never_appears() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(dir.path().join("never.sock"));
    let start = std::time::Instant::now();
    let err = client
        .wait_ready(Duration::from_millis(60))
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    match err {
        Error::SocketTimeout { path, waited } => {
            assert_eq!(path, dir.path().join("never.sock"));
            assert!(waited >= Duration::from_millis(60), "{waited:?}");
        }
        other => panic!("expected SocketTimeout, got {other:?}"),
    }
}

#[tokio::test]
async fn wait_ready_retries_refused_connections() {
    // A socket file nobody listens on: connecting is refused until the deadline.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let err = Client::new(&path)
        .wait_ready(Duration::from_millis(30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SocketTimeout { .. }), "{err:?}");
}

#[tokio::test]
async fn wait_ready_succeeds_when_the_socket_appears_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let bind_path = path.clone();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(80)).await;
        let listener = UnixListener::bind(&bind_path).unwrap();
        listener.accept().await.unwrap();
    });
    let start = std::time::Instant::now();
    Client::new(&path)
        .wait_ready(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(80));
    server.await.unwrap();
}

/// A fake Firecracker that answers `204 No Content` to every request, `per_connection` of them
/// on each connection it accepts (then closes it), and reports each connection's request lines.
fn keeping_fake(
    dir: &tempfile::TempDir,
    per_connection: usize,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<Vec<String>>) {
    let path = dir.path().join("fc.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut lines = Vec::new();
            for _ in 0..per_connection {
                let seen = read_request(&mut stream).await;
                lines.push(seen.request_line().to_owned());
                stream
                    .write_all(b"HTTP/1.1 204 No Content\r\nServer: Firecracker API\r\n\r\n")
                    .await
                    .unwrap();
            }
            stream.shutdown().await.unwrap();
            tx.send(lines).unwrap();
        }
    });
    (Client::new(path), rx)
}

#[tokio::test]
async fn a_kept_connection_carries_every_request_of_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut connections) = keeping_fake(&dir, 3);
    let api = client.keep_alive();
    api.put_machine_config(&MachineConfiguration::default())
        .await
        .unwrap();
    // A clone shares the connection.
    api.clone()
        .put_boot_source(&BootSource::default())
        .await
        .unwrap();
    api.action(ActionType::InstanceStart).await.unwrap();
    assert_eq!(
        connections.recv().await.unwrap(),
        [
            "PUT /machine-config HTTP/1.1",
            "PUT /boot-source HTTP/1.1",
            "PUT /actions HTTP/1.1"
        ]
    );
}

#[tokio::test]
async fn a_kept_connection_closed_while_idle_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut connections) = keeping_fake(&dir, 1);
    let api = client.keep_alive();
    api.put_boot_source(&BootSource::default()).await.unwrap();
    // The server has closed the first connection after its one answer.
    assert_eq!(
        connections.recv().await.unwrap(),
        ["PUT /boot-source HTTP/1.1"]
    );
    api.action(ActionType::InstanceStart).await.unwrap();
    assert_eq!(connections.recv().await.unwrap(), ["PUT /actions HTTP/1.1"]);
}

#[tokio::test]
async fn a_plain_client_connects_for_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut connections) = keeping_fake(&dir, 1);
    client
        .put_boot_source(&BootSource::default())
        .await
        .unwrap();
    client.action(ActionType::InstanceStart).await.unwrap();
    assert_eq!(connections.recv().await.unwrap().len(), 1);
    assert_eq!(connections.recv().await.unwrap().len(), 1);
}
