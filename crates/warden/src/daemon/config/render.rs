//! `--print-config` ([`Effective::render`], [`Effective::render_json`]) and the reference
//! document ([`reference_markdown`]).

use super::value::Shown;
use super::{Effective, Origin, KEYS, OTHER_WARDEN_VARS};

impl Shown {
    fn toml(&self) -> String {
        match self {
            Self::Str(s) => toml::Value::String(s.clone()).to_string(),
            Self::Int(n) => n.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::List(v) => {
                let items: Vec<String> = v
                    .iter()
                    .map(|s| toml::Value::String(s.clone()).to_string())
                    .collect();
                format!("[{}]", items.join(", "))
            }
            Self::Unset(what) => format!("(unset: {what})"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Self::Str(s) => s.clone().into(),
            Self::Int(n) => (*n).into(),
            Self::Bool(b) => (*b).into(),
            Self::List(v) => v.clone().into(),
            Self::Unset(_) => serde_json::Value::Null,
        }
    }
}

impl Effective {
    /// `warden serve --print-config`: one `key = value    # origin` line per key, the token as
    /// `***`.
    pub fn render(&self) -> String {
        let rows: Vec<(String, String)> = KEYS
            .iter()
            .map(|d| {
                let origin = self
                    .origin
                    .get(d.key)
                    .map_or_else(|| "default".into(), Origin::to_string);
                (
                    format!("{} = {}", d.key, (d.get)(&self.config).toml()),
                    origin,
                )
            })
            .collect();
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(line, origin)| format!("{line:<width$}    # {origin}\n"))
            .collect()
    }

    /// The same as JSON: `{"config": {key: value}, "origin": {key: {"source", "name"}},
    /// "warnings": [..]}`; unset values are `null`, the token `"***"`.
    pub fn render_json(&self) -> String {
        let config: serde_json::Map<String, serde_json::Value> = KEYS
            .iter()
            .map(|d| (d.key.to_string(), (d.get)(&self.config).json()))
            .collect();
        let value = serde_json::json!({
            "config": config,
            "origin": self.origin,
            "warnings": self.warnings,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The reference table of every setting, rendered from [`KEYS`]; `docs/configuration.md` holds
/// it below its marker line.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    out.push_str("## Precedence\n\n");
    out.push_str(
        "1. command-line flags\n\
         2. environment variables: `WARDEN_<NAME>`, then `UNKEY_METALD_<NAME>` (when both are \
         set, `WARDEN_<NAME>` wins; if their values differ, a warning names the ignored one)\n\
         3. the TOML file given with `--config PATH` (top-level keys only; an unknown key is an \
         error)\n\
         4. the defaults below\n\n",
    );
    out.push_str(
        "An empty environment variable counts as unset. Booleans accept `true`/`false`, `1`/`0` \
         and `yes`/`no` in any case (in the file: TOML `true`/`false`). Unknown \
         `UNKEY_METALD_*` and `WARDEN_*` variables are ignored with a warning, except those \
         other parts of warden read: ",
    );
    let others: Vec<String> = OTHER_WARDEN_VARS.iter().map(|v| format!("`{v}`")).collect();
    out.push_str(&others.join(", "));
    out.push_str(
        ".\n\n`warden serve --print-config` prints every value and where it came from.\n\n",
    );
    out.push_str("## Settings\n\n");
    out.push_str("| Key | Environment | Flag | Default | Accepted | Meaning |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for d in KEYS {
        let [old, new] = d.env_names();
        out.push_str(&format!(
            "| `{}`{} | `{old}`<br>`{new}` | {} | {} | {} | {} |\n",
            d.key,
            d.old_keys()
                .map(|k| format!("<br>(was `{k}`)"))
                .collect::<String>(),
            d.flag.map_or_else(|| "none".into(), |f| format!("`{f}`")),
            md_cell(d.default),
            md_cell(d.expected),
            md_cell(d.doc),
        ));
    }
    out
}
