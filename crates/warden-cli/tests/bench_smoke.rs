//! `warden bench` cannot rot: every scenario runs once with tiny counts through the built
//! binary, prints JSON of the expected shape, and leaves nothing on the host (no jail, cgroup,
//! temp dir or Firecracker of its own).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `warden bench <args> --json` with jails under a temp dir; returns the report and the
/// bench's pid (which names everything it creates).
fn bench(args: &[&str], chroot_base: Option<&Path>) -> (Value, u32) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.arg("bench").args(args).arg("--json");
    if let Some(base) = chroot_base {
        cmd.arg("--chroot-base").arg(base);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "warden bench {args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, pid)
}

/// The keys every report has, and an all-zero `leftovers`.
fn check_common(r: &Value, scenario: &str) {
    assert_eq!(r["scenario"], scenario, "{r:#}");
    assert!(r["machine"].as_str().unwrap().contains("CPUs"), "{r:#}");
    assert!(!r["note"].as_str().unwrap().is_empty());
    for key in ["rows", "phases", "rates", "steps", "warnings"] {
        assert!(r[key].is_array(), "{key} missing: {r:#}");
    }
    let left = r["leftovers"].as_object().expect("leftovers");
    for key in [
        "jail_dirs",
        "cgroup_dirs",
        "parent_cgroups",
        "temp_dirs",
        "processes",
    ] {
        assert_eq!(left[key], 0, "leftovers.{key}: {r:#}");
    }
}

/// A latency row of `n` samples with finite, ordered figures.
fn check_row(row: &Value, n: u64) {
    assert_eq!(row["n"], n, "{row:#}");
    let (median, p95, max) = (
        row["median_ms"].as_f64().unwrap(),
        row["p95_ms"].as_f64().unwrap(),
        row["max_ms"].as_f64().unwrap(),
    );
    assert!(median > 0.0 && median <= p95 && p95 <= max, "{row:#}");
}

/// Nothing named after the bench's pid is left: temp dirs, parent cgroups, jails, processes.
fn assert_nothing_left(pid: u32, chroot_base: Option<&Path>) {
    let tmp: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("wb{pid}-"))
        })
        .map(|e| e.path())
        .collect();
    assert!(tmp.is_empty(), "temp dirs left: {tmp:?}");
    let mut cgroups = Vec::new();
    for c in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for e in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("wbench-{pid}"))
            {
                cgroups.push(e.path());
            }
        }
    }
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    if let Some(base) = chroot_base {
        let jails: Vec<_> = std::fs::read_dir(base.join("firecracker"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(jails.is_empty(), "jails left: {jails:?}");
    }
    let needle = format!("bench-{pid}-");
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle) && !c.contains("cargo"))
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

fn chroot_base() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wbt")
        .tempdir_in("/tmp")
        .unwrap()
}

#[test]
fn bench_start_smoke() {
    let base = chroot_base();
    let (r, pid) = bench(&["start", "--count", "1"], Some(base.path()));
    check_common(&r, "start");
    let rows = r["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for want in [
        "bare firecracker",
        "bare jailer",
        "warden run",
        "library start_vm",
        "daemon CreateVm+BootVm",
        "daemon from pool",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want}: {names:?}"
        );
    }
    // Every pooled boot took a warm jail.
    assert!(r["note"].as_str().unwrap().contains("misses 0"), "{r:#}");
    for row in rows {
        check_row(row, 1);
        assert!(row["ratio"].as_f64().unwrap() > 0.0, "{row:#}");
    }
    let phases = r["phases"].as_array().unwrap();
    assert!(phases.iter().any(|p| p["name"] == "socket ready"), "{r:#}");
    assert!(
        phases.iter().any(|p| p["name"] == "daemon: BootVm"),
        "{r:#}"
    );
    assert_nothing_left(pid, Some(base.path()));
}

#[test]
fn bench_throughput_smoke() {
    let base = chroot_base();
    let (r, pid) = bench(
        &[
            "throughput",
            "--count",
            "2",
            "--concurrency",
            "1,2",
            "--rounds",
            "1",
        ],
        Some(base.path()),
    );
    check_common(&r, "throughput");
    let rates = r["rates"].as_array().unwrap();
    assert_eq!(rates.len(), 6, "3 series x 2 concurrencies: {r:#}");
    for series in ["bare jailer", "library start_vm", "daemon"] {
        for conc in [1, 2] {
            let rate = rates
                .iter()
                .find(|x| x["series"] == series && x["concurrency"] == conc)
                .unwrap_or_else(|| panic!("{series} x{conc}: {r:#}"));
            assert_eq!(rate["vms"], 2);
            assert!(rate["vms_per_s"].as_f64().unwrap() > 0.0, "{rate:#}");
            assert!(rate["seconds"].as_f64().unwrap() > 0.0, "{rate:#}");
            assert!(rate["ratio"].as_f64().unwrap() > 0.0, "{rate:#}");
        }
    }
    for row in r["rows"].as_array().unwrap() {
        check_row(row, 2);
    }
    assert_nothing_left(pid, Some(base.path()));
}

#[test]
fn bench_scale_smoke() {
    let (r, pid) = bench(&["scale", "--steps", "2,3", "--calls", "3"], None);
    check_common(&r, "scale");
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{r:#}");
    for (step, n) in steps.iter().zip([2, 3]) {
        assert_eq!(step["vms"], n);
        for key in [
            "start_all_s",
            "start_vms_per_s",
            "boot_p50_ms",
            "daemon_rss_mib",
            "firecracker_rss_per_vm_kib",
            "list_vms_p50_ms",
            "list_vms_p99_ms",
            "get_vm_info_p50_ms",
            "get_vm_info_p99_ms",
            "delete_all_s",
        ] {
            assert!(step[key].as_f64().unwrap() > 0.0, "{key}: {step:#}");
        }
        assert!(step["mem_available_per_vm_kib"].is_number());
        assert!(step["daemon_rss_per_vm_kib"].is_number());
        assert_eq!(step["jail_dirs_left"], 0, "{step:#}");
        assert_eq!(step["cgroup_dirs_left"], 0, "{step:#}");
    }
    assert_nothing_left(pid, None);
}

#[test]
fn bench_recover_smoke() {
    let (r, pid) = bench(&["recover", "--vms", "2", "--rounds", "1"], None);
    check_common(&r, "recover");
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{r:#}");
    check_row(&rows[0], 2);
    for row in &rows[1..] {
        check_row(row, 1);
    }
    assert!(rows[3]["name"].as_str().unwrap().contains("GetVmInfo"));
    assert_nothing_left(pid, None);
}

#[test]
fn bench_restore_smoke() {
    let base = chroot_base();
    let (r, pid) = bench(
        &["restore", "--count", "2", "--clones", "3", "--bursts", "1"],
        Some(base.path()),
    );
    check_common(&r, "restore");
    let rows = r["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), 5, "{names:?}");
    for (row, want) in rows.iter().zip([
        "bare firecracker",
        "library restore_vm",
        "daemon RestoreVm (jailed)",
        "daemon RestoreVm from pool",
        "daemon 3 concurrent clones",
    ]) {
        assert!(row["name"].as_str().unwrap().starts_with(want), "{names:?}");
    }
    for row in &rows[..4] {
        check_row(row, 2);
        assert!(row["ratio"].as_f64().unwrap() > 0.0, "{row:#}");
    }
    // One burst of three clones, each timed.
    check_row(&rows[4], 3);
    assert!(rows[4]["p99_ms"].as_f64().unwrap() >= rows[4]["median_ms"].as_f64().unwrap());
    let phases = r["phases"].as_array().unwrap();
    assert!(phases.iter().any(|p| p["name"] == "snapshot load"), "{r:#}");
    assert_nothing_left(pid, Some(base.path()));
}
