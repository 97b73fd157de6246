//! Filesystem checks: the chroot base directory (ownership, mode, same filesystem as the
//! assets), the longest API socket path it leads to, and the state directory.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use jail::plan::SOCKET_IN_JAIL;
use jail::{CgroupVersion, MAX_SOCKET_PATH};

use super::{os_reason, Check};

/// The closest ancestor of `path` (or `path` itself) that exists.
fn nearest_existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

fn dev_str(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

pub(super) fn chroot_base(base: &Path, asset_dirs: &[PathBuf]) -> Vec<Check> {
    const NAME: &str = "chroot-base";
    let b = base.display();
    let create_fix = format!("mkdir -p {b} && chown root:root {b} && chmod 755 {b}");
    let mut checks = Vec::new();
    if !base.is_absolute() {
        checks.push(Check::fail(
            NAME,
            format!("{b} is a relative path; the jailer needs an absolute chroot base"),
            "use an absolute path, e.g. --chroot-base /srv/jailer",
        ));
        return checks;
    }
    match std::fs::metadata(base) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => checks.push(Check::warn(
            NAME,
            format!("{b} does not exist; it will be created at the first VM start"),
            create_fix,
        )),
        Err(e) => checks.push(Check::fail(
            NAME,
            format!("cannot stat {b}: {}", os_reason(&e)),
            format!("ls -ld {b}"),
        )),
        Ok(m) if !m.is_dir() => checks.push(Check::fail(
            NAME,
            format!("{b} exists but is not a directory"),
            format!("mv {b} {b}.old && {create_fix}"),
        )),
        Ok(m) => {
            let mode = m.mode() & 0o7777;
            if m.uid() != 0 {
                checks.push(Check::fail(
                    NAME,
                    format!(
                        "{b} is owned by uid {} (mode {mode:o}), not root: that user could tamper with every jail",
                        m.uid()
                    ),
                    format!("chown root:root {b} && chmod 755 {b}"),
                ));
            } else if mode & 0o022 != 0 {
                checks.push(Check::fail(
                    NAME,
                    format!("{b} is group- or world-writable (mode {mode:o}): other users could tamper with jails"),
                    format!("chmod go-w {b}"),
                ));
            } else {
                checks.push(Check::pass(
                    NAME,
                    format!("{b} owned by root, mode {mode:o}"),
                ));
            }
        }
    }
    checks.push(same_filesystem(base, asset_dirs));
    checks
}

/// Staging hard-links read-only images only when they are on the chroot base's filesystem.
fn same_filesystem(base: &Path, asset_dirs: &[PathBuf]) -> Check {
    const NAME: &str = "chroot-fs";
    let b = base.display();
    let Some(base_dev) = nearest_existing(base)
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
    else {
        return Check::warn(
            NAME,
            format!("cannot stat {b} or any parent"),
            format!("ls -ld {b}"),
        );
    };
    if asset_dirs.is_empty() {
        return Check::pass(
            NAME,
            "no asset directory configured; nothing to compare with the chroot base",
        );
    }
    let mut same = Vec::new();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for dir in asset_dirs {
        let d = dir.display();
        match std::fs::metadata(dir) {
            Ok(m) if m.dev() == base_dev => same.push(d.to_string()),
            Ok(m) => {
                problems.push(format!(
                    "{d} is on another filesystem (device {}) than {b} (device {}): staging will copy images instead of hard-linking them",
                    dev_str(m.dev()),
                    dev_str(base_dev)
                ));
                fixes.push(format!(
                    "keep images on the chroot base's filesystem (e.g. mkdir -p {}/images and move them there), or put the chroot base on {d}'s filesystem (e.g. mkdir -p {}/jailer and pass --chroot-base {}/jailer)",
                    base.parent().unwrap_or(base).display(),
                    mount_point(dir).display(),
                    mount_point(dir).display().to_string().trim_end_matches('/'),
                ));
            }
            Err(e) => {
                problems.push(format!(
                    "asset directory {d} cannot be read: {}",
                    os_reason(&e)
                ));
                fixes.push(format!(
                    "mkdir -p {d}, or drop it from the asset directories"
                ));
            }
        }
    }
    if problems.is_empty() {
        Check::pass(
            NAME,
            format!(
                "{} on the same filesystem as {b} (device {}): staging hard-links",
                same.join(", "),
                dev_str(base_dev)
            ),
        )
    } else {
        Check::warn(NAME, problems.join("; "), fixes.join("; "))
    }
}

/// The mount point holding `path`: the highest ancestor on the same device.
fn mount_point(path: &Path) -> PathBuf {
    let Ok(dev) = std::fs::metadata(path).map(|m| m.dev()) else {
        return path.to_owned();
    };
    let mut top = path;
    for a in path.ancestors().skip(1) {
        match std::fs::metadata(a) {
            Ok(m) if m.dev() == dev => top = a,
            _ => break,
        }
    }
    top.to_owned()
}

/// Ids shorter than this must always fit: room for a UUID (36 characters).
const MIN_ID_ROOM: usize = 36;

/// The API socket of the longest id (64 characters) must fit in a `sockaddr_un`. With the
/// jailer's own default base, `/srv/jailer`, it does not (116 bytes): ids are then limited to
/// fewer characters, which is a warning while a UUID still fits and a failure below that.
pub(super) fn socket_path(base: &Path, firecracker: &Path) -> Check {
    const NAME: &str = "socket-path";
    let layout = jail::Layout::new(
        base,
        firecracker,
        "warden",
        CgroupVersion::V1,
        jail::cgroup::Hierarchy::empty(),
    );
    let exec_name = Path::new(&layout.exec_name);
    let max_id = jail::id::MAX_LEN;
    let longest_id = "x".repeat(max_id);
    let fits = layout.checked_socket_path(&longest_id);
    let raw = base.as_os_str().as_bytes();
    // Trailing slashes do not reach the joined path.
    let trailing = raw
        .iter()
        .rev()
        .take_while(|&&b| b == b'/')
        .count()
        .min(raw.len().saturating_sub(1));
    let base_len = raw.len() - trailing;
    let shown = format!(
        "{}/{}/<{max_id}-char id>/root{SOCKET_IN_JAIL}",
        base.display().to_string().trim_end_matches('/'),
        exec_name.display(),
    );
    let (len, over) = match fits {
        Ok(path) => {
            let len = path.as_os_str().len();
            return Check::pass(
                NAME,
                format!(
                    "longest API socket path is {len} bytes (limit {MAX_SOCKET_PATH}): {shown}"
                ),
            );
        }
        Err(e) => (e.len, e.excess()),
    };
    // Longest id that fits with this base, and longest base that fits a full-length id / a UUID.
    let id_room = max_id.saturating_sub(over);
    let base_for_max = base_len.saturating_sub(over);
    let base_for_uuid = (base_len + max_id - MIN_ID_ROOM).saturating_sub(over);
    let detail = format!(
        "the API socket path for a {max_id}-char id is {len} bytes, over the kernel's limit of {MAX_SOCKET_PATH}: \
         {shown}; with this chroot base ({base_len} bytes) VM ids can be at most {id_room} characters; \
         the longest base that fits is {base_for_max} bytes for {max_id}-char ids, {base_for_uuid} bytes for \
         {MIN_ID_ROOM}-char ids"
    );
    let fix = if id_room >= MIN_ID_ROOM {
        let full = if base_for_max >= 2 {
            format!("; for {max_id}-char ids use a chroot base of at most {base_for_max} bytes, e.g. mkdir -p /j && chmod 755 /j and pass --chroot-base /j")
        } else {
            String::new()
        };
        format!("keep VM ids at most {id_room} characters (a UUID is {MIN_ID_ROOM}){full}")
    } else {
        let suggestion = ["/srv/jailer", "/srv/jail", "/var/fc", "/srv/j", "/j"]
            .into_iter()
            .find(|s| s.len() <= base_for_uuid)
            .unwrap_or("/j");
        format!(
            "use a chroot base of at most {base_for_uuid} bytes: mkdir -p {suggestion} && chmod 755 {suggestion} \
             and pass --chroot-base {suggestion} (or keep VM ids at most {id_room} characters)"
        )
    };
    if id_room >= MIN_ID_ROOM {
        Check::warn(NAME, detail, fix)
    } else {
        Check::fail(NAME, detail, fix)
    }
}

pub(super) fn state_dir(dir: &Path) -> Check {
    const NAME: &str = "state-dir";
    let d = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Check::fail(
                NAME,
                format!("state directory {d} exists but is not a directory"),
                format!("mv {d} {d}.old && mkdir -p {d} && chmod 700 {d}"),
            )
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Some(parent) = nearest_existing(dir) else {
                return Check::fail(
                    NAME,
                    format!("no parent of {d} exists"),
                    format!("mkdir -p {d}"),
                );
            };
            return match std::fs::metadata(parent) {
                Ok(m) if !m.is_dir() => Check::fail(
                    NAME,
                    format!(
                        "state directory {d} cannot be created: {} is not a directory",
                        parent.display()
                    ),
                    "choose another state directory, e.g. --state-dir /var/lib/warden".to_owned(),
                ),
                _ => match nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK) {
                    Ok(()) => Check::pass(
                        NAME,
                        format!(
                            "{d} does not exist yet; it can be created in {}",
                            parent.display()
                        ),
                    ),
                    Err(e) => Check::fail(
                        NAME,
                        format!(
                            "state directory {d} cannot be created: {} is not writable ({})",
                            parent.display(),
                            e.desc()
                        ),
                        format!("mkdir -p {d} as root, or choose a writable --state-dir"),
                    ),
                },
            };
        }
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot stat state directory {d}: {}", os_reason(&e)),
                format!("ls -ld {d}"),
            )
        }
    }
    let probe = dir.join(format!(".warden-doctor-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match written {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Check::pass(NAME, format!("{d} is writable"))
        }
        Err(e) => {
            let fix = if e.raw_os_error() == Some(libc::EROFS) {
                format!("{d} is on a read-only filesystem: choose a state directory on a writable one, e.g. --state-dir /var/lib/warden")
            } else {
                format!("chown root:root {d} && chmod 700 {d}")
            };
            Check::fail(
                NAME,
                format!(
                    "state directory {d} is not writable: creating {} failed: {}",
                    probe.display(),
                    os_reason(&e)
                ),
                fix,
            )
        }
    }
}
