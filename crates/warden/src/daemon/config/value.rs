//! The value forms settings take, and their parsers: each returns `None` for a value the key
//! does not accept, and the caller names the key and what it expects.

use std::path::{Path, PathBuf};

/// The TOML type a key takes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Integer,
    String,
    StringList,
    IntegerOrString,
}

/// A value before parsing: text (environment, flags, file scalars) or a list (file arrays).
pub(super) enum Raw {
    Text(String),
    List(Vec<String>),
}

/// A value for display.
pub(super) enum Shown {
    Str(String),
    Int(u64),
    Bool(bool),
    List(Vec<String>),
    Unset(&'static str),
}

pub(super) fn text(raw: &Raw) -> Option<&str> {
    match raw {
        Raw::Text(s) => Some(s.trim()),
        Raw::List(_) => None,
    }
}

pub(super) fn parse_bool(raw: &Raw) -> Option<bool> {
    match text(raw)?.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

pub(super) fn parse_u64(raw: &Raw) -> Option<u64> {
    text(raw)?.parse().ok()
}

pub(super) fn parse_id(raw: &Raw) -> Option<u32> {
    text(raw)?
        .parse()
        .ok()
        .filter(|&id| jail::spec::valid_jail_id(id))
}

pub(super) fn parse_id_range(raw: &Raw) -> Option<Option<(u32, u32)>> {
    jail::spec::parse_id_range(text(raw)?)
}

pub(super) fn abs_path(s: &str) -> Option<PathBuf> {
    let p = Path::new(s);
    p.is_absolute().then(|| p.to_path_buf())
}

/// A subnet, as its network address and prefix length.
pub(super) fn parse_subnet(raw: &Raw) -> Option<(std::net::Ipv4Addr, u8)> {
    let cidr: jail::net::Ipv4Cidr = text(raw)?.parse().ok()?;
    Some((cidr.network(), cidr.prefix_len))
}

pub(super) fn parse_words(raw: &Raw, ok: impl Fn(&str) -> bool) -> Option<Vec<String>> {
    let items: Vec<String> = match raw {
        Raw::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Raw::List(v) => v.iter().map(|s| s.trim().to_owned()).collect(),
    };
    items
        .iter()
        .all(|w| !w.is_empty() && ok(w))
        .then_some(items)
}

pub(super) fn parse_path(raw: &Raw) -> Option<PathBuf> {
    abs_path(text(raw)?)
}

pub(super) fn parse_paths(raw: &Raw) -> Option<Vec<PathBuf>> {
    let items: Vec<&str> = match raw {
        Raw::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect(),
        Raw::List(v) => v.iter().map(|s| s.trim()).collect(),
    };
    if items.is_empty() {
        return None;
    }
    items.into_iter().map(abs_path).collect()
}

pub(super) fn parse_listen(raw: &Raw) -> Option<String> {
    let s = text(raw)?;
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')?
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    host_ok.then(|| s.to_string())
}

pub(super) fn parse_cgroup_path(raw: &Raw) -> Option<String> {
    let s = text(raw)?;
    jail::cgroup::valid_parent(s).then(|| s.to_string())
}

pub(super) fn path_shown(p: &Path) -> Shown {
    Shown::Str(p.display().to_string())
}
