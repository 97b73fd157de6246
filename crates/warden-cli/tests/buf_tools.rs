//! Buf's tools on our API: `buf lint` on `vm.proto`, and `buf curl` against a real daemon once
//! per protocol (Connect and gRPC), with the schema taken from our file. The pinned buf comes
//! from the `@bufbuild/buf` npm package, installed once into `~/.cache/warden`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const BUF_PACKAGE: &str = "@bufbuild/buf@1.75.0";

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../warden-api/proto")
}

/// The buf binary, installed with npm on first use.
fn buf() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let tag: String = BUF_PACKAGE
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let dir = home.join(".cache/warden").join(tag);
    let bin = dir.join("node_modules/.bin/buf");
    if !bin.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(BUF_PACKAGE)
            .output()
            .expect("run npm (CI installs it; see .ci/run)");
        assert!(
            out.status.success(),
            "npm install {BUF_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn buf_lint_passes_on_our_proto() {
    run(Command::new(buf()).arg("lint").current_dir(proto_dir()));
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_calls_the_daemon_over_connect_and_grpc() {
    let buf = buf();
    let d = Daemon::start(&[]);
    let id = unique("bufcurl");
    let schema = proto_dir().join("vmprovisioner/v1/vm.proto");
    let url = |m: &str| format!("{}/vmprovisioner.v1.VmService/{m}", d.url());
    // Connect (JSON), with metald's request shape.
    let body = format!(
        r#"{{"vm_id":"{id}","customer_id":"c1","config":{{"boot":{{"kernel_path":"{}","kernel_args":"mode=idle"}},"memory":{{"size_bytes":134217728}}}}}}"#,
        testguest()
    );
    let created = run(Command::new(&buf)
        .args(["curl", "--protocol", "connect", "--schema"])
        .arg(&schema)
        .args(["-d", &body, &url("CreateVm")]));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["vmId"], id.as_str(), "{created}");
    assert_eq!(created["state"], "VM_STATE_CREATED", "{created}");
    // gRPC (h2c).
    let listed = run(Command::new(&buf)
        .args([
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--schema",
        ])
        .arg(&schema)
        .args([
            "-d",
            r#"{"state_filter":["VM_STATE_CREATED"]}"#,
            &url("ListVms"),
        ]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["vms"][0]["vmId"], id.as_str(), "{listed}");
    assert_eq!(listed["vms"][0]["customerId"], "c1", "{listed}");
    assert_eq!(listed["totalCount"], 1, "{listed}");
    d.client()
        .delete_vm(warden_api::pb::DeleteVmRequest {
            vm_id: id,
            force: false,
        })
        .await
        .unwrap();
    d.assert_clean();
}
