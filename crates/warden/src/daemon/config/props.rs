//! Property tests of [`load`]: any value for any key, from the environment (either prefix or
//! both), the file (any TOML text, any value of any type) and flags, gives a configuration or an
//! error whose text names the variable, key or flag at fault, and that value alone gives the same
//! error. Never a panic.

use super::*;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;

/// Values near and far from what the keys accept.
fn text_value() -> impl Strategy<Value = String> {
    let interesting = select(vec![
        "",
        " ",
        "true",
        "false",
        "YES",
        "No",
        "1",
        "0",
        "-1",
        "2",
        "+5",
        " 7 ",
        "1.5",
        "1e3",
        "1000",
        "65536",
        "134217728",
        "4294967295",
        "4294967296",
        "2147483647",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "/abs",
        "/a,/b",
        "/a, b",
        "rel",
        "a,b",
        ",",
        " , ",
        "/",
        "//",
        "/a/../b",
        "127.0.0.1:8080",
        "0.0.0.0:1",
        "[::1]:1",
        "[::1]",
        "[::1:1",
        "[]:1",
        "h:99999",
        ":80",
        "localhost:http",
        "localhost:1",
        "a b:1",
        "1900000000-1900065535",
        "off",
        "OFF",
        "5-1",
        "1000-2147483646",
        "1000-2147483647",
        "999-2000",
        "-",
        "1-",
        "-1-2",
        "10.0.0.0/8",
        "10.0.0.1/31",
        "1.2.3.4/33",
        "1.2.3.4/",
        "1.2.3.4/07",
        "/16",
        "256.1.1.1/16",
        "bridge",
        "none",
        "Bridge",
        "json",
        "text",
        "firecracker",
        "warden",
        "warden/a",
        "a/../b",
        "/warden",
        "warden/",
        "a//b",
        "https://x.example",
        "x.example",
        "http://",
        "auto",
        "\0",
        "\u{0}1",
        "é",
        "\t1\t",
        "1\n",
        "***",
        "toolongbridgename0",
        "br_0-1",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        6 => interesting,
        3 => "\\PC{0,20}",
        1 => any::<String>(),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| format!("{a}-{b}")),
        1 => (any::<[u8; 4]>(), any::<u8>())
            .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3])),
        1 => ("[a-z0-9.-]{0,10}", any::<u32>()).prop_map(|(h, p)| format!("{h}:{p}")),
    ]
}

/// Values `key` accepts, in their text form (environment, flags).
fn valid_text(key: &str) -> BoxedStrategy<String> {
    fn num(r: std::ops::RangeInclusive<u64>) -> BoxedStrategy<String> {
        prop_oneof![
            r.clone().prop_map(|n| n.to_string()),
            Just(r.start().to_string()),
            Just(r.end().to_string()),
        ]
        .boxed()
    }
    let words = |w: Vec<&'static str>| select(w).prop_map(str::to_owned).boxed();
    match key {
        "backend" => words(vec!["firecracker", " firecracker "]),
        "jailer_enabled" | "require_jailer" | "netns" | "pidns" | "stop_vms_on_exit" => {
            words(vec!["true", "false", "1", "0", "yes", "no", "TRUE", " No "])
        }
        "jailer_binary" | "firecracker_binary" | "chroot_base" | "unix_socket" | "state_dir" => {
            "/[a-z0-9._/ -]{0,12}".boxed()
        }
        "jailer_uid" | "jailer_gid" | "cpu_quota_percent" => num(1..=u64::from(u32::MAX)),
        "jail_id_range" => prop_oneof![
            1 => Just("off".to_owned()),
            4 => (1000u32..i32::MAX as u32)
                .prop_flat_map(|a| (Just(a), a..i32::MAX as u32))
                .prop_map(|(a, b)| format!("{a}-{b}")),
        ]
        .boxed(),
        "memory_limit_bytes" => num(MIN_MEMORY_LIMIT_BYTES..=u64::MAX),
        "fd_limit" | "max_vms" | "max_concurrent_boots" => num(1..=u64::MAX),
        "io_read_bps" | "io_write_bps" | "io_read_iops" | "io_write_iops" => num(1..=u64::MAX),
        "cpuset" => prop_oneof![
            (0u32..64).prop_map(|n| n.to_string()),
            (0u32..32, 0u32..32).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            words(vec!["0-3,5", " 1,3 "]),
        ]
        .boxed(),
        "max_memory_mib" => num(128..=u64::MAX),
        "pool_size" => num(0..=1024),
        "pool_memory_mib" => num(128..=u64::MAX),
        "max_vcpus" => num(1..=32),
        "max_drives" => num(0..=64),
        "max_metadata_entries" => num(0..=1024),
        "serial_log_max_bytes" => num(65536..=u64::MAX),
        "stop_timeout_secs" => num(0..=u64::MAX),
        "parent_cgroup" => "[a-z0-9_-][a-z0-9._-]{0,5}(/[a-z0-9_-][a-z0-9._-]{0,5}){0,2}"
            .prop_filter("dot names", |s| s.split('/').all(|c| c != "." && c != ".."))
            .boxed(),
        "cgroup_version" => words(vec!["1", "2", "auto"]),
        "listen" => prop_oneof![
            words(vec![
                "127.0.0.1:8080",
                "[::1]:1",
                "localhost:0",
                "0.0.0.0:65535"
            ]),
            ("[a-z0-9.-]{1,10}", any::<u16>()).prop_map(|(h, p)| format!("{h}:{p}")),
        ]
        .boxed(),
        "auth_token" => "[!-~]{1,20}".boxed(),
        "network_mode" => words(vec!["none", "bridge"]),
        "bridge" => "[A-Za-z0-9_-]{1,15}".boxed(),
        "address_pool" => (any::<[u8; 4]>(), 8u8..=30)
            .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3]))
            .boxed(),
        "asset_dirs" => vec("/[a-z0-9._/-]{0,8}", 1..3)
            .prop_map(|v| v.join(","))
            .boxed(),
        "allowed_origins" => vec("(https?|ftp)://[a-z0-9.-]{1,8}(:[0-9]{1,5})?", 0..3)
            .prop_map(|v| v.join(", "))
            .boxed(),
        "allowed_hosts" => vec("[a-z0-9.-]{1,10}", 0..3)
            .prop_map(|v| v.join(","))
            .boxed(),
        "log_format" => words(vec!["json", "text"]),
        "cgroup_delegation" => words(vec!["auto", "on", "off"]),
        other => panic!("no valid values for {other}: add them"),
    }
}

/// A value for `key`: mostly one it accepts, else anything.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    prop_oneof![3 => valid_text(key), 1 => text_value()].boxed()
}

/// A name of `def`'s variables, or both, with values.
fn env_vars() -> impl Strategy<Value = Vec<(String, String)>> {
    let setting = (0..KEYS.len())
        .prop_flat_map(|i| {
            (
                Just(i),
                0u8..4,
                value_for(KEYS[i].key),
                value_for(KEYS[i].key),
            )
        })
        .prop_map(|(i, which, a, b)| {
            let [old, new] = KEYS[i].env_names();
            match which {
                0 => vec![(old, a)],
                1 => vec![(new, a)],
                2 => vec![(old, a.clone()), (new, a)],
                _ => vec![(old, a), (new, b)],
            }
        });
    let other = prop_oneof![
        "(WARDEN_|UNKEY_METALD_)[A-Z_]{0,12}",
        select(OTHER_WARDEN_VARS.to_vec()).prop_map(str::to_owned),
        Just("PATH".to_owned()),
    ];
    (vec(setting, 0..8), btree_map(other, text_value(), 0..3)).prop_map(|(settings, other)| {
        // One value per name, as in a real environment.
        let mut vars: BTreeMap<String, String> = other.into_iter().collect();
        for (name, value) in settings.into_iter().flatten() {
            vars.insert(name, value);
        }
        vars.into_iter().collect()
    })
}

/// Flags, by key: every key with a flag, plus keys that have none.
fn flags() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let known = select(KEYS.iter().map(|d| d.key).collect::<Vec<_>>())
        .prop_flat_map(|k| (Just(k), value_for(k)));
    let unknown = (
        select(vec!["nope", "", "LISTEN", "--listen", "auth_token"]),
        text_value(),
    );
    vec(prop_oneof![20 => known, 1 => unknown], 0..6)
}

/// Any TOML value, nested a little.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    use toml::Value as V;
    let leaf = prop_oneof![
        any::<bool>().prop_map(V::Boolean),
        any::<i64>().prop_map(V::Integer),
        (0i64..100_000).prop_map(V::Integer),
        any::<f64>().prop_map(V::Float),
        text_value().prop_map(V::String),
        select(vec!["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"])
            .prop_map(|d| V::Datetime(d.parse().unwrap())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(V::Array),
            btree_map("[a-z_]{1,8}", inner, 0..3).prop_map(|m| V::Table(m.into_iter().collect())),
        ]
    })
}

/// A value of the TOML type `kind` takes (the parser then judges its content).
fn typed_value(kind: Kind) -> BoxedStrategy<toml::Value> {
    use toml::Value as V;
    match kind {
        Kind::Bool => any::<bool>().prop_map(V::Boolean).boxed(),
        Kind::Integer => prop_oneof![any::<i64>(), 0i64..100_000, 1i64 << 27..1i64 << 33]
            .prop_map(V::Integer)
            .boxed(),
        Kind::String => text_value().prop_map(V::String).boxed(),
        Kind::StringList => vec(text_value(), 0..3)
            .prop_map(|v| V::Array(v.into_iter().map(V::String).collect()))
            .boxed(),
        Kind::IntegerOrString => prop_oneof![
            (0i64..4).prop_map(V::Integer),
            text_value().prop_map(V::String),
        ]
        .boxed(),
    }
}

/// A TOML value of `def`'s type from its text form (the parser then judges its content).
fn as_toml(def: &KeyDef, text: &str) -> toml::Value {
    use toml::Value as V;
    let int = || text.trim().parse::<i64>().ok().map(V::Integer);
    let string = || V::String(text.to_owned());
    match def.kind {
        Kind::Bool => parse_bool(&Raw::Text(text.to_owned())).map_or_else(string, V::Boolean),
        Kind::Integer => int().unwrap_or_else(string),
        Kind::String => string(),
        Kind::StringList => V::Array(
            text.split(',')
                .map(|s| V::String(s.trim().to_owned()))
                .collect(),
        ),
        Kind::IntegerOrString => int().unwrap_or_else(string),
    }
}

/// A table of settings: values the key accepts, values of its type, values of any type,
/// and unknown keys.
fn toml_table() -> impl Strategy<Value = toml::Table> {
    let entry = prop_oneof![
        6 => (0..KEYS.len()).prop_flat_map(|i| (Just(KEYS[i].key.to_owned()),
            valid_text(KEYS[i].key).prop_map(move |t| as_toml(&KEYS[i], &t)))),
        3 => (0..KEYS.len()).prop_flat_map(|i| (Just(KEYS[i].key.to_owned()),
            typed_value(KEYS[i].kind))),
        3 => (select(KEYS.iter().map(|d| d.key).collect::<Vec<_>>()).prop_map(str::to_owned),
            toml_value()),
        1 => ("[a-z_]{1,12}", toml_value()),
    ];
    vec(entry, 0..8).prop_map(|entries| entries.into_iter().collect())
}

/// TOML-ish text: lines of keys, values, headers, comments and junk.
fn toml_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => select(KEYS.iter().map(|d| d.key).collect::<Vec<_>>()).prop_map(str::to_owned),
        1 => "[a-z_.\"' -]{0,12}",
    ];
    let literal = select(vec![
        "\"x\"",
        "'lit'",
        "\"\"\"multi\nline\"\"\"",
        "'''raw'''",
        "1",
        "-0",
        "+1",
        "0x1F",
        "0o17",
        "0b101",
        "1_000",
        "1__0",
        "01",
        "1e5",
        "-1.5",
        "inf",
        "-inf",
        "nan",
        "true",
        "false",
        "True",
        "[1, \"a\"]",
        "[\"/a\", \"/b\"]",
        "[]",
        "[[1], [2]]",
        "{a = 1}",
        "{}",
        "1979-05-27",
        "1979-05-27T07:32:00Z",
        "07:32:00",
        "\"\\u0000\"",
        "\"\\uD800\"",
        "\"\\x\"",
        "\"unterminated",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "",
        "=",
    ]);
    let line = prop_oneof![
        6 => (key.clone(), prop_oneof![
                3 => literal.prop_map(str::to_owned),
                1 => text_value().prop_map(|v| toml::Value::String(v).to_string()),
            ])
            .prop_map(|(k, v)| format!("{k} = {v}")),
        1 => key.clone().prop_map(|k| format!("[{k}]")),
        1 => key.prop_map(|k| format!("[[{k}]]")),
        1 => "#\\PC{0,10}",
        1 => "\\PC{0,20}",
    ];
    vec(line, 0..8).prop_map(|lines| lines.join("\n"))
}

/// A file path of this test thread's own, for the file under test.
fn file_path() -> PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
    }
    DIR.with(|d| d.path().join("warden.toml"))
}

/// Whether the text of `err` names what was given: the variable, the key and file, or the
/// flag; and, for an invalid value, whether that value alone gives the same error.
fn names_its_source(
    err: &ConfigError,
    sources: &Sources,
    file_text: Option<&[u8]>,
) -> Result<(), TestCaseError> {
    let msg = err.to_string();
    match err {
        ConfigError::Invalid {
            key,
            origin,
            value,
            expected,
        } => {
            let def = key_def(key).unwrap();
            prop_assert!(
                msg.ends_with(&format!("is not valid: expected {expected}")),
                "{msg}"
            );
            prop_assert_eq!(*expected, def.expected);
            let alone = match origin {
                Origin::Env(name) => {
                    prop_assert!(msg.starts_with(&format!("{name}=")), "{msg}");
                    prop_assert!(def.env_names().contains(name), "{name} is not {key}'s");
                    let given = sources.env.iter().rev().find(|(k, _)| k == name);
                    let Some((_, given)) = given else {
                        return Err(TestCaseError::fail(format!("{name} was not set: {msg}")));
                    };
                    prop_assert!(!given.is_empty(), "empty {name} was read: {msg}");
                    // A variable shadowed by its WARDEN_ twin is never read.
                    let [old, new] = def.env_names();
                    if *name == old {
                        prop_assert!(
                            !sources.env.iter().any(|(k, v)| *k == new && !v.is_empty()),
                            "{old} was read although {new} is set: {msg}"
                        );
                    }
                    if def.secret && given != "***" {
                        prop_assert!(!msg.contains(&format!("{given:?}")), "{msg}");
                    }
                    Sources {
                        env: vec![(name.clone(), given.clone())],
                        ..Sources::default()
                    }
                }
                Origin::Flag(flag) => {
                    prop_assert_eq!(Some(flag.as_str()), def.flag);
                    prop_assert!(msg.starts_with(&format!("{flag} {value:?}")), "{msg}");
                    let given = sources.flags.iter().find(|(k, v)| k == key && v == value);
                    prop_assert!(given.is_some(), "{} was not given: {}", flag, msg);
                    Sources {
                        flags: vec![(def.key, value.clone())],
                        ..Sources::default()
                    }
                }
                Origin::File(path) => {
                    prop_assert_eq!(Some(path), sources.file.as_ref());
                    prop_assert!(msg.starts_with(&format!("{key} = ")), "{msg}");
                    prop_assert!(msg.contains(&format!(" in {}", path.display())), "{msg}");
                    if def.secret {
                        prop_assert_eq!(value.as_str(), "***");
                    }
                    // The key alone, in a file of its own.
                    let text = String::from_utf8_lossy(file_text.unwrap_or_default());
                    let table: toml::Table = text.parse().unwrap();
                    let mut one = toml::Table::new();
                    one.insert(key.to_string(), table[*key].clone());
                    let alone = file_path().with_file_name("alone.toml");
                    std::fs::write(&alone, toml::to_string(&one).unwrap()).unwrap();
                    let e = load(&Sources {
                        file: Some(alone.clone()),
                        ..Sources::default()
                    })
                    .unwrap_err()
                    .to_string();
                    let shown = alone.display().to_string();
                    prop_assert_eq!(e.replace(&shown, &path.display().to_string()), msg);
                    return Ok(());
                }
                Origin::Default => {
                    return Err(TestCaseError::fail(format!("a default is invalid: {msg}")))
                }
            };
            let e = load(&alone).err().map(|e| e.to_string());
            prop_assert_eq!(e.as_deref(), Some(msg.as_str()), "not the value alone");
        }
        ConfigError::UnknownKey { key, path } => {
            prop_assert_eq!(Some(path), sources.file.as_ref());
            prop_assert!(key_def(key).is_none(), "{key} is a key");
            prop_assert!(
                msg.starts_with(&format!("unknown key {key:?} in {}", path.display())),
                "{msg}"
            );
        }
        ConfigError::UnknownFlag { key } => {
            prop_assert!(sources.flags.iter().any(|(k, _)| k == key));
            prop_assert!(
                key_def(key).and_then(|d| d.flag).is_none(),
                "{key} has a flag"
            );
            let want = format!("no command-line flag sets {key:?}");
            prop_assert!(msg.starts_with(&want), "{}", msg);
        }
        ConfigError::Read { path, .. } => {
            prop_assert_eq!(Some(path), sources.file.as_ref());
            prop_assert!(std::str::from_utf8(file_text.unwrap_or_default()).is_err());
            let want = format!("cannot read config file {}", path.display());
            prop_assert!(msg.starts_with(&want), "{}", msg);
        }
        ConfigError::Parse { path, message } => {
            prop_assert_eq!(Some(path), sources.file.as_ref());
            prop_assert!(!message.trim().is_empty());
            let want = format!("{} is not valid TOML: ", path.display());
            prop_assert!(msg.starts_with(&want), "{}", msg);
        }
        ConfigError::Conflict(_) => {
            let pair = [
                ("jail_id_range", ["jailer_uid", "jailer_gid"].as_slice()),
                ("require_jailer", ["jailer_enabled"].as_slice()),
            ];
            prop_assert!(
                pair.iter()
                    .any(|(a, bs)| msg.contains(a) && bs.iter().any(|b| msg.contains(b))),
                "{msg}"
            );
            // Each side names where it came from.
            prop_assert!(
                ["from env ", "flag --", "file "]
                    .iter()
                    .any(|o| msg.contains(o)),
                "{msg}"
            );
        }
    }
    Ok(())
}

/// What a successful load must show: every given value's origin, and a printable result.
fn loaded_as_given(e: &Effective, sources: &Sources) -> Result<(), TestCaseError> {
    for def in KEYS {
        let [old, new] = def.env_names();
        let set = |n: &str| sources.env.iter().any(|(k, v)| k == n && !v.is_empty());
        let flag = sources.flags.iter().any(|(k, _)| *k == def.key);
        let want = if flag {
            Some(Origin::Flag(def.flag.unwrap().into()))
        } else if set(&new) {
            Some(Origin::Env(new.clone()))
        } else if set(&old) {
            Some(Origin::Env(old.clone()))
        } else {
            None
        };
        if let Some(want) = want {
            prop_assert_eq!(&e.origin[def.key], &want, "{}", def.key);
        }
        let shadowed = sources.env.iter().find(|(k, v)| *k == old && !v.is_empty());
        let winner = sources.env.iter().find(|(k, v)| *k == new && !v.is_empty());
        if let (Some((_, a)), Some((_, b))) = (shadowed, winner) {
            prop_assert_eq!(
                a != b,
                e.warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("{old} is ignored"))),
                "{:?}",
                e.warnings
            );
        }
    }
    prop_assert_eq!(e.render().lines().count(), KEYS.len());
    let json: serde_json::Value = serde_json::from_str(&e.render_json()).unwrap();
    prop_assert!(json["config"].is_object());
    // The token is never shown.
    if e.config.auth_token.is_some() {
        let rendered = e.render();
        let line = rendered.lines().find(|l| l.starts_with("auth_token = "));
        prop_assert!(
            line.is_some_and(|l| l.starts_with("auth_token = \"***\" ")),
            "{:?}",
            line
        );
        prop_assert_eq!(&json["config"]["auth_token"], "***");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Any values in the environment, under either prefix or both.
    #[test]
    fn any_environment_loads_or_names_the_variable(env in env_vars()) {
        let sources = Sources { env, ..Sources::default() };
        match load(&sources) {
            Ok(e) => loaded_as_given(&e, &sources)?,
            Err(err) => names_its_source(&err, &sources, None)?,
        }
    }

    /// Any flags, for keys with a flag or without.
    #[test]
    fn any_flags_load_or_name_the_flag(flags in flags()) {
        let sources = Sources { flags, ..Sources::default() };
        match load(&sources) {
            Ok(e) => loaded_as_given(&e, &sources)?,
            Err(err) => names_its_source(&err, &sources, None)?,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A file of settings with values of any type: loaded, or an error naming the key (and
    /// the file) that the key alone also gives.
    #[test]
    fn any_settings_file_loads_or_names_the_key(table in toml_table()) {
        let path = file_path();
        let text = toml::to_string(&table).unwrap();
        std::fs::write(&path, &text).unwrap();
        let sources = Sources { file: Some(path), ..Sources::default() };
        match load(&sources) {
            Ok(e) => {
                for key in table.keys() {
                    prop_assert_eq!(&e.origin[key.as_str()], &Origin::File(file_path()));
                }
                loaded_as_given(&e, &sources)?;
            }
            Err(err) => {
                prop_assert!(!matches!(err, ConfigError::Parse { .. } | ConfigError::Read { .. }),
                    "{err} for {text}");
                names_its_source(&err, &sources, Some(text.as_bytes()))?;
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2500))]

    /// Any text (TOML-like, arbitrary, or not UTF-8) as the file.
    #[test]
    fn any_file_text_loads_or_names_the_file(bytes in prop_oneof![
        4 => toml_text().prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..64),
    ]) {
        let path = file_path();
        std::fs::write(&path, &bytes).unwrap();
        let sources = Sources { file: Some(path), ..Sources::default() };
        match load(&sources) {
            Ok(e) => loaded_as_given(&e, &sources)?,
            Err(err) => names_its_source(&err, &sources, Some(&bytes))?,
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Everything at once: the error names one of the sources given.
    #[test]
    fn file_environment_and_flags_together_load_or_name_the_source(
        table in toml_table(),
        env in env_vars(),
        flags in flags(),
    ) {
        let path = file_path();
        let text = toml::to_string(&table).unwrap();
        std::fs::write(&path, &text).unwrap();
        let sources = Sources { file: Some(path), env, flags };
        match load(&sources) {
            Ok(e) => loaded_as_given(&e, &sources)?,
            Err(err) => names_its_source(&err, &sources, Some(text.as_bytes()))?,
        }
    }
}
