//! One settings table drives `serve`, `gc` and `doctor`: `--help` lists every setting with its
//! variables, `doctor --config` checks what the daemon with that file would run, old spellings
//! keep working and unknown flags are refused by name.

use std::process::{Command, Output};

use warden::daemon::config::KEYS;

fn warden(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_gc_and_doctor_help_list_every_setting_with_its_variables() {
    for sub in ["serve", "gc", "doctor"] {
        let out = warden(&[sub, "--help"], &[]);
        let (help, err) = text(&out);
        assert!(out.status.success(), "{sub} --help: {err}");
        for def in KEYS {
            let [seed, own] = def.env_names();
            assert!(
                help.contains(&seed) && help.contains(&own),
                "warden {sub} --help lacks {seed} or {own}:\n{help}"
            );
            if let Some(flag) = def.flag {
                assert!(
                    help.contains(&format!("{flag} ")),
                    "warden {sub} --help lacks {flag}:\n{help}"
                );
            }
        }
    }
}

#[test]
fn doctor_with_the_daemons_config_file_checks_the_jailer_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warden.toml");
    std::fs::write(
        &file,
        "jailer_binary = \"/nonexistent/from-the-file/jailer\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out = warden(&["doctor", "--config", file], &[]);
    let (report, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}{err}");
    assert!(
        report.contains("FAIL jailer") && report.contains("/nonexistent/from-the-file/jailer"),
        "{report}"
    );

    // The daemon's precedence: the environment beats the file, a flag beats both.
    let out = warden(
        &["doctor", "--config", file],
        &[("UNKEY_METALD_JAILER_BINARY", "/nonexistent/from-env/jailer")],
    );
    assert!(text(&out).0.contains("/nonexistent/from-env/jailer"));
    let out = warden(
        &[
            "doctor",
            "--config",
            file,
            "--jailer-binary",
            "/nonexistent/flag",
        ],
        &[("UNKEY_METALD_JAILER_BINARY", "/nonexistent/from-env/jailer")],
    );
    assert!(text(&out).0.contains("/nonexistent/flag"));
}

#[test]
fn doctor_refuses_a_configuration_the_daemon_would_refuse() {
    let out = warden(&["doctor", "--jail-id-range", "5-1"], &[]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("--jail-id-range") && err.contains("5-1"),
        "{err}"
    );
}

#[test]
fn the_old_chroot_dir_flag_key_and_the_seed_variable_still_set_the_chroot_base() {
    let line = |out: &Output| {
        let (stdout, err) = text(out);
        assert!(out.status.success(), "{err}");
        stdout
            .lines()
            .find(|l| l.starts_with("chroot_base "))
            .unwrap_or_else(|| panic!("no chroot_base in {stdout}"))
            .to_owned()
    };
    let out = warden(
        &["serve", "--print-config", "--chroot-dir", "/tmp/old-flag"],
        &[],
    );
    assert!(line(&out).contains("\"/tmp/old-flag\""));
    let out = warden(
        &["serve", "--print-config", "--chroot-base", "/tmp/new-flag"],
        &[],
    );
    assert!(line(&out).contains("\"/tmp/new-flag\"") && line(&out).contains("--chroot-base"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.toml");
    std::fs::write(&file, "chroot_dir = \"/tmp/old-key\"\n").unwrap();
    let out = warden(
        &[
            "serve",
            "--print-config",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(line(&out).contains("\"/tmp/old-key\""));

    let out = warden(
        &["serve", "--print-config"],
        &[("UNKEY_METALD_JAILER_CHROOT_DIR", "/tmp/seed")],
    );
    let l = line(&out);
    assert!(
        l.contains("\"/tmp/seed\"") && l.contains("UNKEY_METALD_JAILER_CHROOT_DIR"),
        "{l}"
    );
}

#[test]
fn an_unknown_setting_flag_is_refused_by_name() {
    for sub in ["serve", "gc", "doctor"] {
        let out = warden(&[sub, "--no-such-setting", "1"], &[]);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{sub}: {err}");
        assert!(err.contains("--no-such-setting"), "{sub}: {err}");
    }
}
