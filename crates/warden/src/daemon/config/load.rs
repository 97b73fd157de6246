//! [`load`]: defaults, then the file, then the environment, then the flags, each value tagged
//! with where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::value::{Kind, Raw};
use super::{
    key_def, ConfigError, DaemonConfig, Effective, KeyDef, Origin, Sources, ENV_PREFIXES, KEYS,
    OTHER_WARDEN_VARS,
};

fn apply(
    config: &mut DaemonConfig,
    def: &'static KeyDef,
    raw: &Raw,
    origin: Origin,
    shown: &str,
) -> Result<Origin, ConfigError> {
    match (def.set)(config, raw) {
        Some(()) => Ok(origin),
        None => Err(ConfigError::Invalid {
            key: def.key,
            origin,
            value: if def.secret {
                "***".into()
            } else {
                shown.to_string()
            },
            expected: def.expected,
        }),
    }
}

/// The TOML value as a [`Raw`], if its type fits the key.
fn raw_from_toml(kind: Kind, value: &toml::Value) -> Option<Raw> {
    use toml::Value as V;
    match (kind, value) {
        (Kind::Bool, V::Boolean(b)) => Some(Raw::Text(b.to_string())),
        (Kind::Integer | Kind::IntegerOrString, V::Integer(n)) => Some(Raw::Text(n.to_string())),
        (Kind::String | Kind::IntegerOrString, V::String(s)) => Some(Raw::Text(s.clone())),
        (Kind::StringList, V::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Raw::List),
        _ => None,
    }
}

/// Loads the configuration: defaults, then the file, then the environment, then the flags.
pub fn load(sources: &Sources) -> Result<Effective, ConfigError> {
    let mut config = DaemonConfig::default();
    let mut origin: BTreeMap<&'static str, Origin> =
        KEYS.iter().map(|d| (d.key, Origin::Default)).collect();
    let mut warnings = Vec::new();

    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.clone(),
            error: e.to_string(),
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
        for (key, value) in &table {
            let def = key_def(key).ok_or_else(|| ConfigError::UnknownKey {
                key: key.clone(),
                path: path.clone(),
            })?;
            if def.key != key && table.contains_key(def.key) {
                return Err(ConfigError::Conflict(format!(
                    "{} sets both {key} and {}, its new name; keep only {}",
                    path.display(),
                    def.key,
                    def.key
                )));
            }
            let here = Origin::File(path.clone());
            let shown = value.to_string();
            let Some(raw) = raw_from_toml(def.kind, value) else {
                return Err(ConfigError::Invalid {
                    key: def.key,
                    origin: here,
                    value: if def.secret { "***".into() } else { shown },
                    expected: def.expected,
                });
            };
            origin.insert(def.key, apply(&mut config, def, &raw, here, &shown)?);
        }
    }

    let lookup = |name: &str| {
        sources
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    for def in KEYS {
        let [old, new] = def.env_names();
        let chosen = match (lookup(&old), lookup(&new)) {
            (Some(a), Some(b)) => {
                if a != b {
                    warnings.push(format!(
                        "{old} is ignored: {new} is also set, to another value, and takes \
                         precedence"
                    ));
                }
                Some((new, b))
            }
            (Some(v), None) => Some((old, v)),
            (None, Some(v)) => Some((new, v)),
            (None, None) => None,
        };
        if let Some((name, value)) = chosen {
            let raw = Raw::Text(value.to_string());
            origin.insert(
                def.key,
                apply(&mut config, def, &raw, Origin::Env(name), value)?,
            );
        }
    }
    let mut unknown: Vec<&str> = sources
        .env
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|name| {
            ENV_PREFIXES.iter().any(|p| {
                name.strip_prefix(p)
                    .is_some_and(|suffix| !KEYS.iter().any(|d| d.env == suffix))
            }) && !OTHER_WARDEN_VARS.contains(name)
        })
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    for name in unknown {
        warnings.push(format!(
            "ignoring {name}: not a warden setting (settings: UNKEY_METALD_<NAME> or WARDEN_<NAME> \
             with NAME one of {})",
            KEYS.iter().map(|d| d.env).collect::<Vec<_>>().join(", ")
        ));
    }

    for (key, value) in &sources.flags {
        let (def, flag) = key_def(key)
            .and_then(|d| Some((d, d.flag?)))
            .ok_or_else(|| ConfigError::UnknownFlag {
                key: key.to_string(),
            })?;
        let raw = Raw::Text(value.clone());
        origin.insert(
            def.key,
            apply(&mut config, def, &raw, Origin::Flag(flag.into()), value)?,
        );
    }

    let single = ["jailer_uid", "jailer_gid"]
        .into_iter()
        .find(|k| origin[k] != Origin::Default);
    match (single, origin["jail_id_range"] != Origin::Default) {
        (Some(k), true) if config.jail_id_range.is_some() => {
            return Err(ConfigError::Conflict(format!(
                "{k} ({}) and jail_id_range ({}) contradict each other: either every VM runs as \
                 one uid, or each gets its own from the range; drop one",
                origin[k], origin["jail_id_range"]
            )))
        }
        (Some(k), _) => {
            config.jail_id_range = None;
            warnings.push(format!(
                "{k} is set ({}): every VM runs as uid {} gid {}, so a compromised VMM can signal \
                 the others and read their files; leave jailer_uid/jailer_gid unset for a uid per VM",
                origin[k], config.jailer_uid, config.jailer_gid
            ));
        }
        _ => {}
    }
    if config.require_jailer && !config.jailer_enabled {
        return Err(ConfigError::Conflict(format!(
            "require_jailer = true ({}) contradicts jailer_enabled = false ({}): production mode \
             needs the jailer; enable it or drop require_jailer",
            origin["require_jailer"], origin["jailer_enabled"]
        )));
    }
    if config.auth_token.is_none() && !is_loopback(&config.listen) {
        warnings.push(format!(
            "listen = {} ({}) accepts connections from other hosts and no auth_token is set: \
             anyone who can reach it can run VMs",
            config.listen, origin["listen"]
        ));
    }
    Ok(Effective {
        config,
        origin,
        warnings,
    })
}

fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host == "localhost"),
    }
}
