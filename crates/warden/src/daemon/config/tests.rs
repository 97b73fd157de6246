use super::*;
use std::path::Path;

fn env(vars: &[(&str, &str)]) -> Sources {
    Sources {
        env: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Sources::default()
    }
}

fn load_env(vars: &[(&str, &str)]) -> Result<Effective, ConfigError> {
    load(&env(vars))
}

fn write_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn env_origin(name: &str) -> Origin {
    Origin::Env(name.into())
}

#[test]
fn defaults() {
    let e = load(&Sources::default()).unwrap();
    let c = &e.config;
    assert_eq!(c.backend, "firecracker");
    assert!(c.jailer_enabled && !c.require_jailer && c.pidns && !c.netns);
    assert_eq!((c.jailer_uid, c.jailer_gid), (10000, 10000));
    assert_eq!(c.chroot_base, Path::new("/srv/jailer"));
    assert_eq!(c.memory_limit_bytes, None);
    assert_eq!(c.cpu_quota_percent, None);
    assert_eq!(c.fd_limit, 2048);
    assert_eq!(c.parent_cgroup, "warden");
    assert_eq!(c.cgroup_version, None);
    assert_eq!(c.listen, "127.0.0.1:8080");
    assert_eq!(c.state_dir, Path::new("/var/lib/warden"));
    assert_eq!(c.stop_timeout_secs, 5);
    assert_eq!(c.log_format, LogFormat::Json);
    assert!(e.origin.values().all(|o| *o == Origin::Default));
    assert_eq!(e.origin.len(), KEYS.len());
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
}

#[test]
fn the_seed_environment_block_sets_every_field() {
    let seed = [
        ("UNKEY_METALD_JAILER_ENABLED", "true"),
        ("UNKEY_METALD_JAILER_BINARY", "/usr/bin/jailer"),
        ("UNKEY_METALD_FIRECRACKER_BINARY", "/usr/bin/firecracker"),
        ("UNKEY_METALD_JAILER_UID", "1000"),
        ("UNKEY_METALD_JAILER_GID", "1000"),
        ("UNKEY_METALD_JAILER_CHROOT_DIR", "/srv/jailer"),
        ("UNKEY_METALD_JAILER_NETNS", "true"),
        ("UNKEY_METALD_JAILER_PIDNS", "true"),
        ("UNKEY_METALD_JAILER_MEMORY_LIMIT", "134217728"),
        ("UNKEY_METALD_JAILER_CPU_QUOTA", "100"),
        ("UNKEY_METALD_JAILER_FD_LIMIT", "1024"),
        ("UNKEY_METALD_BACKEND", "firecracker"),
    ];
    let e = load_env(&seed).unwrap();
    let c = &e.config;
    assert!(c.jailer_enabled);
    assert_eq!(c.jailer_binary, Path::new("/usr/bin/jailer"));
    assert_eq!(c.firecracker_binary, Path::new("/usr/bin/firecracker"));
    assert_eq!((c.jailer_uid, c.jailer_gid), (1000, 1000));
    assert_eq!(c.chroot_base, Path::new("/srv/jailer"));
    assert!(c.netns && c.pidns);
    assert_eq!(c.memory_limit_bytes, Some(134_217_728));
    assert_eq!(c.memory_limit_mb(512), Some(128));
    assert_eq!(c.cpu_quota_percent, Some(100));
    assert_eq!(c.fd_limit, 1024);
    assert_eq!(c.backend, "firecracker");
    for (var, _) in seed {
        let def = KEYS
            .iter()
            .find(|d| var.strip_prefix("UNKEY_METALD_") == Some(d.env))
            .unwrap();
        assert_eq!(e.origin[def.key], env_origin(var), "{var}");
    }
    // The seed sets one uid for all VMs: honoured, with a warning that it is shared.
    assert_eq!(c.jail_id_range, None);
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(
        e.warnings[0].contains("every VM runs as uid 1000"),
        "{:?}",
        e.warnings
    );
}

#[test]
fn jail_id_range_takes_a_range_or_off_and_conflicts_with_a_single_uid() {
    assert_eq!(
        load_env(&[("WARDEN_JAIL_ID_RANGE", "off")])
            .unwrap()
            .config
            .jail_id_range,
        None
    );
    for bad in ["5-1", "0-10", "abc", "1000-4294967295", "999-2000"] {
        let e = load_env(&[("WARDEN_JAIL_ID_RANGE", bad)]).unwrap_err();
        assert!(e.to_string().contains("WARDEN_JAIL_ID_RANGE"), "{bad}: {e}");
    }
    let e = load_env(&[
        ("WARDEN_JAIL_ID_RANGE", "2000000-2000100"),
        ("WARDEN_JAILER_UID", "1234"),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("contradict"), "{e}");
    assert_eq!(
        load_env(&[]).unwrap().config.jail_id_range,
        Some(DEFAULT_JAIL_ID_RANGE),
        "per-VM uids by default"
    );
}

/// A value differing from the default for every key, as text, and how it is shown.
const SAMPLES: &[(&str, &str, &str)] = &[
    ("backend", "firecracker", "\"firecracker\""),
    ("jailer_enabled", "no", "false"),
    ("require_jailer", "YES", "true"),
    ("jailer_binary", "/opt/jailer", "\"/opt/jailer\""),
    ("firecracker_binary", "/opt/fc", "\"/opt/fc\""),
    ("jailer_uid", "1234", "1234"),
    ("jailer_gid", "4321", "4321"),
    ("chroot_base", "/tmp/jails", "\"/tmp/jails\""),
    ("netns", "1", "true"),
    ("pidns", "False", "false"),
    ("memory_limit_bytes", "268435456", "268435456"),
    ("cpu_quota_percent", "50", "50"),
    ("cpuset", "3,0-1", "\"0-1,3\""),
    ("io_read_bps", "1048576", "1048576"),
    ("io_write_bps", "2097152", "2097152"),
    ("io_read_iops", "100", "100"),
    ("io_write_iops", "50", "50"),
    ("fd_limit", "4096", "4096"),
    ("parent_cgroup", "warden/tenant-a", "\"warden/tenant-a\""),
    ("cgroup_version", "2", "2"),
    ("cgroup_delegation", "off", "\"off\""),
    ("listen", "[::1]:9000", "\"[::1]:9000\""),
    ("unix_socket", "/run/w.sock", "\"/run/w.sock\""),
    ("auth_token", "s3cret", "\"***\""),
    ("network_mode", "bridge", "\"bridge\""),
    ("bridge", "br-test", "\"br-test\""),
    ("address_pool", "10.9.8.7/24", "\"10.9.8.0/24\""),
    ("state_dir", "/tmp/state", "\"/tmp/state\""),
    ("asset_dirs", "/a, /b", "[\"/a\", \"/b\"]"),
    ("stop_timeout_secs", "9", "9"),
    ("stop_vms_on_exit", "true", "true"),
    ("log_format", "text", "\"text\""),
    ("jail_id_range", "2000000-2000099", "\"2000000-2000099\""),
    (
        "allowed_origins",
        "https://a.example",
        "[\"https://a.example\"]",
    ),
    ("allowed_hosts", "warden.internal", "[\"warden.internal\"]"),
    ("max_vms", "10", "10"),
    ("max_concurrent_boots", "3", "3"),
    ("pool_size", "2", "2"),
    ("pool_memory_mib", "1024", "1024"),
    ("max_memory_mib", "1024", "1024"),
    ("max_vcpus", "4", "4"),
    ("max_drives", "2", "2"),
    ("max_metadata_entries", "5", "5"),
    ("serial_log_max_bytes", "65536", "65536"),
];

#[test]
fn every_key_is_set_by_both_env_prefixes_and_its_flag() {
    assert_eq!(SAMPLES.len(), KEYS.len());
    for def in KEYS {
        let (_, value, shown) = SAMPLES.iter().find(|s| s.0 == def.key).unwrap();
        let line = format!("{} = {shown}", def.key);
        // require_jailer needs the jailer enabled; jailer_enabled=no conflicts with nothing.
        for name in def.env_names() {
            let e = load_env(&[(&name, value)]).unwrap();
            assert_eq!(e.origin[def.key], env_origin(&name));
            let rendered = e.render();
            assert!(rendered.contains(&line), "{line} not in\n{rendered}");
            assert!(
                rendered.contains(&format!("# from env {name}\n")),
                "{rendered}"
            );
        }
        if let Some(flag) = def.flag {
            let e = load(&Sources {
                flags: vec![(def.key, value.to_string())],
                ..Sources::default()
            })
            .unwrap();
            assert_eq!(e.origin[def.key], Origin::Flag(flag.into()));
            assert!(e.render().contains(&line));
        }
    }
}

#[test]
fn warden_prefix_beats_unkey_metald() {
    let e = load_env(&[
        ("WARDEN_JAILER_UID", "2000"),
        ("UNKEY_METALD_JAILER_UID", "1000"),
    ])
    .unwrap();
    assert_eq!(e.config.jailer_uid, 2000);
    assert_eq!(e.origin["jailer_uid"], env_origin("WARDEN_JAILER_UID"));
    assert!(
        e.warnings
            .iter()
            .any(|w| w.contains("UNKEY_METALD_JAILER_UID is ignored")),
        "{:?}",
        e.warnings
    );
    // The shadowed variable is not even parsed.
    let e = load_env(&[
        ("UNKEY_METALD_JAILER_UID", "abc"),
        ("WARDEN_JAILER_UID", "2000"),
    ])
    .unwrap();
    assert_eq!(e.config.jailer_uid, 2000);
    // An empty variable counts as unset.
    let e = load_env(&[
        ("UNKEY_METALD_JAILER_UID", "1000"),
        ("WARDEN_JAILER_UID", ""),
    ])
    .unwrap();
    assert_eq!(e.config.jailer_uid, 1000);
    assert_eq!(
        e.origin["jailer_uid"],
        env_origin("UNKEY_METALD_JAILER_UID")
    );
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let (_dir, path) = write_file("listen = \"10.0.0.1:1\"\njailer_uid = 3000\nfd_limit = 99\n");
    let sources = Sources {
        file: Some(path.clone()),
        env: vec![
            ("WARDEN_LISTEN".into(), "10.0.0.2:2".into()),
            ("UNKEY_METALD_JAILER_UID".into(), "4000".into()),
            ("WARDEN_AUTH_TOKEN".into(), "t".into()),
        ],
        flags: vec![("listen", "10.0.0.3:3".into())],
    };
    let e = load(&sources).unwrap();
    assert_eq!(e.config.listen, "10.0.0.3:3");
    assert_eq!(e.origin["listen"], Origin::Flag("--listen".into()));
    assert_eq!(e.config.jailer_uid, 4000);
    assert_eq!(
        e.origin["jailer_uid"],
        env_origin("UNKEY_METALD_JAILER_UID")
    );
    assert_eq!(e.config.fd_limit, 99);
    assert_eq!(e.origin["fd_limit"], Origin::File(path.clone()));
    assert_eq!(e.config.stop_timeout_secs, 5);
    assert_eq!(e.origin["stop_timeout_secs"], Origin::Default);

    let r = e.render();
    assert!(r.contains("listen = \"10.0.0.3:3\""), "{r}");
    assert!(r.contains("# flag --listen\n"));
    assert!(r.contains("# from env UNKEY_METALD_JAILER_UID\n"));
    assert!(r.contains(&format!("# file {}\n", path.display())));
    assert!(r.contains("stop_timeout_secs = 5"));
    assert!(r.contains("# default\n"));
    assert_eq!(r.lines().count(), KEYS.len());
}

#[test]
fn file_values_of_every_type() {
    let (_dir, path) = write_file(
        "netns = true\ncgroup_version = \"1\"\nasset_dirs = [\"/x\", \"/y\"]\n\
         memory_limit_bytes = 200000000\nlog_format = \"text\"\n",
    );
    let e = load(&Sources {
        file: Some(path),
        ..Sources::default()
    })
    .unwrap();
    assert!(e.config.netns);
    assert_eq!(e.config.cgroup_version, Some(CgroupVersion::V1));
    assert_eq!(
        e.config.asset_dirs,
        [PathBuf::from("/x"), PathBuf::from("/y")]
    );
    assert_eq!(e.config.memory_limit_mb(1), Some(191)); // 190.73 MiB, rounded up
    assert_eq!(e.config.log_format, LogFormat::Text);
}

#[test]
fn bad_values_name_the_variable_and_the_accepted_form() {
    let err = load_env(&[("UNKEY_METALD_JAILER_UID", "abc")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "UNKEY_METALD_JAILER_UID=\"abc\" is not valid: expected a non-zero integer uid (e.g. 1000)"
    );
    let err = load_env(&[("UNKEY_METALD_JAILER_MEMORY_LIMIT", "128MB")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "UNKEY_METALD_JAILER_MEMORY_LIMIT=\"128MB\" is not valid: expected bytes as an integer, \
         at least 134217728 (128 MiB)"
    );
    let bad: &[(&str, &str)] = &[
        ("BACKEND", "qemu"),
        ("JAILER_ENABLED", "maybe"),
        ("REQUIRE_JAILER", "2"),
        ("JAILER_BINARY", "jailer"),
        ("FIRECRACKER_BINARY", ""),
        ("JAILER_UID", "0"),
        ("JAILER_GID", "0"),
        ("JAILER_GID", "-5"),
        ("JAILER_CHROOT_DIR", "srv/jailer"),
        ("JAILER_NETNS", "on"),
        ("JAILER_PIDNS", "y"),
        ("JAILER_MEMORY_LIMIT", "1000"),
        ("JAILER_CPU_QUOTA", "0"),
        ("JAILER_CPU_QUOTA", "1.5"),
        ("JAILER_FD_LIMIT", "0"),
        ("PARENT_CGROUP", "/warden"),
        ("PARENT_CGROUP", "a/../b"),
        ("CGROUP_VERSION", "3"),
        ("LISTEN", "8080"),
        ("LISTEN", "localhost:http"),
        ("UNIX_SOCKET", "w.sock"),
        ("AUTH_TOKEN", "has space"),
        ("STATE_DIR", "state"),
        ("ASSET_DIRS", "/a,b"),
        ("ASSET_DIRS", ","),
        ("STOP_TIMEOUT", "5s"),
        ("STOP_VMS_ON_EXIT", "sure"),
        ("LOG_FORMAT", "JSONL"),
    ];
    for (suffix, value) in bad {
        if value.is_empty() {
            continue; // empty is unset, checked elsewhere
        }
        for prefix in ENV_PREFIXES {
            let name = format!("{prefix}{suffix}");
            let def = KEYS.iter().find(|d| d.env == *suffix).unwrap();
            let msg = load_env(&[(&name, value)]).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("{name}=")), "{msg}");
            assert!(
                msg.ends_with(&format!("is not valid: expected {}", def.expected)),
                "{msg}"
            );
            if def.secret {
                assert!(!msg.contains(value), "{msg}");
            }
        }
    }
    // Flags name the flag, the file names the key and the file.
    let err = load(&Sources {
        flags: vec![("jailer_gid", "0".into())],
        ..Sources::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--jailer-gid \"0\" is not valid: expected a non-zero integer gid (e.g. 1000)"
    );
    let (_dir, path) = write_file("jailer_uid = \"1000\"\n");
    let err = load(&Sources {
        file: Some(path.clone()),
        ..Sources::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "jailer_uid = \"1000\" in {} is not valid: expected a non-zero integer uid (e.g. 1000)",
            path.display()
        )
    );
}

#[test]
fn uid_and_gid_zero_are_refused() {
    for key in ["jailer_uid", "jailer_gid"] {
        let (_dir, path) = write_file(&format!("{key} = 0\n"));
        let err = load(&Sources {
            file: Some(path),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: k, .. } if k == key),
            "{err}"
        );
    }
}

#[test]
fn unknown_file_keys_and_bad_toml_are_refused() {
    let (_dir, path) = write_file("foo = 1\n");
    let err = load(&Sources {
        file: Some(path.clone()),
        ..Sources::default()
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "unknown key \"foo\" in {}; known keys: backend, ",
            path.display()
        )),
        "{msg}"
    );
    assert!(msg.ends_with("log_format"), "{msg}");

    let (_dir, path) = write_file("[jailer]\nuid = 1\n");
    assert!(matches!(
        load(&Sources { file: Some(path), ..Sources::default() }),
        Err(ConfigError::UnknownKey { key, .. }) if key == "jailer"
    ));
    let (_dir, path) = write_file("listen = \n");
    assert!(matches!(
        load(&Sources {
            file: Some(path),
            ..Sources::default()
        }),
        Err(ConfigError::Parse { .. })
    ));
    let missing = Sources {
        file: Some("/nonexistent/warden.toml".into()),
        ..Sources::default()
    };
    assert!(load(&missing)
        .unwrap_err()
        .to_string()
        .starts_with("cannot read config file /nonexistent/warden.toml"));
}

#[test]
fn unknown_env_variables_are_warnings_except_warden_s_own() {
    let mut vars: Vec<(&str, &str)> = vec![
        ("UNKEY_METALD_PORT", "1"),
        ("WARDEN_JAILER_UIDD", "1"),
        ("PATH", "/bin"),
        ("WARDENX", "1"),
    ];
    vars.extend(OTHER_WARDEN_VARS.iter().map(|v| (*v, "/x")));
    let e = load_env(&vars).unwrap();
    assert_eq!(e.warnings.len(), 2, "{:?}", e.warnings);
    assert!(e.warnings[0].starts_with("ignoring UNKEY_METALD_PORT: not a warden setting"));
    assert!(e.warnings[1].starts_with("ignoring WARDEN_JAILER_UIDD: not a warden setting"));
}

#[test]
fn render_shows_origins_and_hides_the_token() {
    let e = load_env(&[
        ("UNKEY_METALD_AUTH_TOKEN", "hunter2"),
        ("UNKEY_METALD_JAILER_UID", "1000"),
    ])
    .unwrap();
    assert_eq!(e.config.auth_token.as_deref(), Some("hunter2"));
    let r = e.render();
    assert!(!r.contains("hunter2"), "{r}");
    assert!(r.contains("auth_token = \"***\""), "{r}");
    let uid = r.lines().find(|l| l.starts_with("jailer_uid")).unwrap();
    assert!(uid.starts_with("jailer_uid = 1000 "), "{uid}");
    assert!(
        uid.ends_with("    # from env UNKEY_METALD_JAILER_UID"),
        "{uid}"
    );
    assert!(
        r.contains("memory_limit_bytes = (unset: guest memory + 64 MiB)"),
        "{r}"
    );
    // All origin comments start in the same column.
    let cols: Vec<usize> = r.lines().map(|l| l.find("    # ").unwrap()).collect();
    assert!(cols.windows(2).all(|w| w[0] == w[1]), "{r}");

    let json = e.render_json();
    assert!(!json.contains("hunter2"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["config"]["auth_token"], "***");
    assert_eq!(v["config"]["jailer_uid"], 1000);
    assert_eq!(v["config"]["memory_limit_bytes"], serde_json::Value::Null);
    assert_eq!(v["origin"]["jailer_uid"]["source"], "env");
    assert_eq!(v["origin"]["jailer_uid"]["name"], "UNKEY_METALD_JAILER_UID");
    assert_eq!(v["origin"]["listen"]["source"], "default");
    assert!(!format!("{:?}", e.config).contains("hunter2"));
}

#[test]
fn require_jailer_without_the_jailer_is_a_conflict() {
    let err = load_env(&[
        ("WARDEN_REQUIRE_JAILER", "true"),
        ("WARDEN_JAILER_ENABLED", "false"),
    ])
    .unwrap_err();
    assert!(matches!(err, ConfigError::Conflict(_)));
    assert!(
        err.to_string().contains("from env WARDEN_JAILER_ENABLED"),
        "{err}"
    );
}

#[test]
fn unauthenticated_public_listener_warns() {
    assert!(load_env(&[("WARDEN_LISTEN", "0.0.0.0:8080")])
        .unwrap()
        .warnings[0]
        .contains("no auth_token"));
    for quiet in [
        &[("WARDEN_LISTEN", "localhost:1")][..],
        &[("WARDEN_LISTEN", "0.0.0.0:1"), ("WARDEN_AUTH_TOKEN", "t")],
    ] {
        assert!(load_env(quiet).unwrap().warnings.is_empty());
    }
}

#[test]
fn flags_for_unknown_keys_are_a_bug() {
    for key in ["nope", "auth_token"] {
        let err = load(&Sources {
            flags: vec![(key, "x".into())],
            ..Sources::default()
        })
        .unwrap_err();
        assert_eq!(err, ConfigError::UnknownFlag { key: key.into() });
    }
}

#[test]
fn helpers_for_the_daemon() {
    let e = load_env(&[
        ("WARDEN_JAILER_UID", "1000"),
        ("WARDEN_JAILER_GID", "1001"),
        ("WARDEN_JAILER_CHROOT_DIR", "/tmp/j"),
        ("WARDEN_JAILER_PIDNS", "no"),
        ("WARDEN_JAILER_FD_LIMIT", "512"),
        ("WARDEN_JAILER_CPU_QUOTA", "150"),
        ("WARDEN_PARENT_CGROUP", "warden/a"),
        ("WARDEN_CGROUP_VERSION", "2"),
        ("WARDEN_JAILER_BINARY", "/j"),
        ("WARDEN_FIRECRACKER_BINARY", "/f"),
    ])
    .unwrap();
    let j = e.config.jailer_config();
    assert_eq!((j.uid, j.gid), (1000, 1001));
    assert_eq!(j.chroot_base_dir, Path::new("/tmp/j"));
    assert!(!j.new_pid_ns);
    assert_eq!(j.resource_limits.no_file, Some(512));
    assert_eq!(j.cpu_quota_pct, Some(150));
    assert_eq!(j.parent_cgroup, "warden/a");
    assert_eq!(j.cgroup_version, Some(CgroupVersion::V2));
    assert_eq!(j.jailer_binary, Path::new("/j"));
    assert_eq!(j.exec_file, Path::new("/f"));
    assert_eq!(j.netns, None);

    let mut c = e.config;
    assert_eq!(
        c.jailer_mode(),
        JailerMode::Required,
        "never a silent fallback"
    );
    c.require_jailer = true;
    assert_eq!(c.jailer_mode(), JailerMode::Required);
    c.jailer_enabled = false;
    assert_eq!(c.jailer_mode(), JailerMode::Disabled);

    assert_eq!(c.memory_limit_mb(256), Some(256 + VMM_OVERHEAD_MB));
    c.memory_limit_bytes = Some(MIN_MEMORY_LIMIT_BYTES + 1);
    assert_eq!(c.memory_limit_mb(256), Some(129));
    c.memory_limit_bytes = Some(u64::MAX);
    assert_eq!(c.memory_limit_mb(256), Some(u32::MAX));
}

const MARKER: &str = "<!-- Generated from crates/warden/src/daemon/config/keys.rs (KEYS); do not edit below this line. -->\n";

#[test]
fn docs_configuration_md_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let (intro, generated) = doc.split_once(MARKER).unwrap_or((doc.as_str(), ""));
    let expected = reference_markdown();
    if std::env::var_os("WARDEN_BLESS_DOCS").is_some() {
        std::fs::write(&path, format!("{intro}{MARKER}\n{expected}")).unwrap();
        return;
    }
    assert_eq!(
        generated.strip_prefix('\n').unwrap_or(generated),
        expected,
        "{} is out of date with KEYS; rerun this test with WARDEN_BLESS_DOCS=1 to rewrite it",
        path.display()
    );
}

#[test]
fn the_old_chroot_dir_key_still_works_in_the_file_and_as_a_flag_key() {
    let (_dir, path) = write_file("chroot_dir = \"/tmp/old-jails\"\n");
    let e = load(&Sources {
        file: Some(path.clone()),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(e.config.chroot_base, Path::new("/tmp/old-jails"));
    assert_eq!(e.origin["chroot_base"], Origin::File(path));
    assert!(e.render().contains("chroot_base = \"/tmp/old-jails\""));

    let e = load(&Sources {
        flags: vec![("chroot_dir", "/tmp/flagged".into())],
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(e.config.chroot_base, Path::new("/tmp/flagged"));
    assert_eq!(
        e.origin["chroot_base"],
        Origin::Flag("--chroot-base".into())
    );

    // The seed's variable is the key's own.
    let e = load_env(&[("UNKEY_METALD_JAILER_CHROOT_DIR", "/tmp/seed")]).unwrap();
    assert_eq!(e.config.chroot_base, Path::new("/tmp/seed"));
}

#[test]
fn a_file_with_both_the_old_and_the_new_name_of_a_key_is_refused() {
    let (_dir, path) = write_file("chroot_dir = \"/a\"\nchroot_base = \"/b\"\n");
    let err = load(&Sources {
        file: Some(path),
        ..Sources::default()
    })
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ConfigError::Conflict(_))
            && text.contains("chroot_dir")
            && text.contains("keep only chroot_base"),
        "{text}"
    );
}
