//! The daemon's settings as command-line arguments, built from [`config::KEYS`]: `serve`, `gc`
//! and `doctor` take the same flags, and `--help` lists each with its meaning, its default and
//! its environment variables.
//!
//! clap only collects the flags, as text. The environment, the file and the parsing stay with
//! [`config::load`], which knows where each value came from (`--print-config`) and applies the
//! one precedence: flags, environment, file, defaults. An unknown flag is clap's error, naming
//! it.

use std::marker::PhantomData;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use warden::daemon::config::{self, KeyDef, KEYS};

/// Earlier flag spellings a command keeps accepting (hidden from `--help`), as
/// (flag without `--`, key).
pub trait OldFlags {
    /// The spellings.
    const FLAGS: &'static [(&'static str, &'static str)];
}

/// `serve` and `gc`: only the old names of renamed keys.
#[derive(Debug, Clone, Copy)]
pub struct NoOldFlags;

impl OldFlags for NoOldFlags {
    const FLAGS: &'static [(&'static str, &'static str)] = &[];
}

/// The settings given as flags: (key, value) pairs for [`config::Sources::flags`].
#[derive(Debug, Clone)]
pub struct Settings<O: OldFlags = NoOldFlags> {
    /// Each flag given, once, as (key, text); a list given several times is joined by commas.
    pub flags: Vec<(&'static str, String)>,
    old: PhantomData<O>,
}

impl<O: OldFlags> Settings<O> {
    /// The configuration sources: these flags, this process's environment and `file`.
    pub fn sources(self, file: Option<std::path::PathBuf>) -> config::Sources {
        config::Sources::from_process(file, self.flags)
    }
}

/// The clap argument of one setting; `None` for a setting without a flag (the token).
fn arg(def: &'static KeyDef, old: &[(&'static str, &'static str)]) -> Option<Arg> {
    let long = def.flag?.strip_prefix("--")?;
    let [seed_env, own_env] = def.env_names();
    let env = format!("[env: {own_env}, {seed_env}]");
    let mut a = Arg::new(def.key)
        .long(long)
        .value_name(def.value_name())
        .action(ArgAction::Append)
        .help(format!("{} {env}", def.doc))
        .long_help(format!(
            "{}\n\nAccepted: {}.\nDefault: {}.\n{env}",
            def.doc, def.expected, def.default
        ));
    if def.is_bool() {
        a = a.num_args(0..=1).default_missing_value("true");
    }
    for k in def.old_keys() {
        a = a.alias(k.replace('_', "-"));
    }
    for (flag, _) in old.iter().filter(|(_, key)| *key == def.key) {
        a = a.alias(*flag);
    }
    Some(a)
}

impl<O: OldFlags> Args for Settings<O> {
    fn augment_args(cmd: Command) -> Command {
        let unflagged: Vec<String> = KEYS
            .iter()
            .filter(|d| d.flag.is_none())
            .map(|d| {
                let [seed_env, own_env] = d.env_names();
                format!("  {}: {own_env} or {seed_env} (or the file)", d.key)
            })
            .collect();
        cmd.args(KEYS.iter().filter_map(|d| arg(d, O::FLAGS)))
            .after_help(format!(
                "Settings without a flag (command lines are visible to every user):\n{}\n\n\
                 Precedence: flags, then WARDEN_*, then UNKEY_METALD_*, then --config FILE, then \
                 the defaults. docs/configuration.md describes every setting.",
                unflagged.join("\n")
            ))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<O: OldFlags> FromArgMatches for Settings<O> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Vec::new();
        for def in KEYS.iter().filter(|d| d.flag.is_some()) {
            let Some(values) = m.get_many::<String>(def.key) else {
                continue;
            };
            let values: Vec<&str> = values.map(String::as_str).collect();
            let value = if def.is_list() {
                values.join(",")
            } else {
                // The last one given wins, as with any repeated flag.
                values.last().copied().unwrap_or_default().to_owned()
            };
            flags.push((def.key, value));
        }
        Ok(Self {
            flags,
            old: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn parse(args: &[&str]) -> Result<Vec<(&'static str, String)>, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|c| c.settings.flags)
    }

    #[test]
    fn flags_become_keys_with_their_text() {
        let flags = parse(&[
            "--listen",
            "0.0.0.0:1",
            "--stop-vms-on-exit",
            "--netns=false",
            "--asset-dirs",
            "/a",
            "--asset-dirs=/b,/c",
            "--chroot-dir",
            "/old",
        ])
        .unwrap();
        let get = |k: &str| {
            flags
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("listen"), Some("0.0.0.0:1"));
        assert_eq!(get("stop_vms_on_exit"), Some("true"));
        assert_eq!(get("netns"), Some("false"));
        assert_eq!(get("asset_dirs"), Some("/a,/b,/c"));
        assert_eq!(get("chroot_base"), Some("/old"));
        assert_eq!(get("pidns"), None);
    }

    #[test]
    fn unknown_flags_and_the_token_as_a_flag_are_refused_by_name() {
        for bad in ["--nope", "--auth-token"] {
            let err = parse(&[bad, "x"]).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
