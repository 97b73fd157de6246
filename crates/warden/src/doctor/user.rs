//! The jail user: never root, and when a user name is configured, it exists with those ids.

use nix::unistd::{Gid, Group, Uid, User};

use super::Check;

const NAME: &str = "jail-user";

fn create_fix(name: &str, uid: u32, gid: u32) -> String {
    format!("groupadd -r -g {gid} {name} && useradd -r -s /bin/false -d /srv/jailer -u {uid} -g {gid} {name}")
}

pub(super) fn check(uid: u32, gid: u32, user_name: Option<&str>) -> Check {
    let default = crate::vm::jailer::DEFAULT_JAIL_UID;
    if uid == 0 || gid == 0 {
        let which = match (uid, gid) {
            (0, 0) => "uid and gid are",
            (0, _) => "uid is",
            _ => "gid is",
        };
        return Check::fail(
            NAME,
            format!("jail {which} 0 (root) ({uid}:{gid}): Firecracker would keep root's privileges inside the jail"),
            format!(
                "use an unprivileged user: {} and pass --jailer-uid {default} --jailer-gid {default} (the default)",
                create_fix(user_name.unwrap_or("jailer"), default, default)
            ),
        );
    }
    if let Some(name) = user_name {
        return match User::from_name(name) {
            Ok(Some(u)) if u.uid.as_raw() == uid && u.gid.as_raw() == gid => {
                Check::pass(NAME, format!("user {name} exists with uid {uid} gid {gid}"))
            }
            Ok(Some(u)) => Check::fail(
                NAME,
                format!(
                    "user {name} has uid {} gid {}, but warden is configured with uid {uid} gid {gid}",
                    u.uid, u.gid
                ),
                format!("pass --jailer-uid {} --jailer-gid {} (or `usermod -u {uid} -g {gid} {name}`)", u.uid, u.gid),
            ),
            Ok(None) => Check::fail(NAME, format!("user {name} does not exist"), create_fix(name, uid, gid)),
            Err(e) => Check::fail(NAME, format!("cannot look up user {name}: {}", e.desc()), format!("getent passwd {name}")),
        };
    }
    let owner = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let group = Group::from_gid(Gid::from_raw(gid)).ok().flatten();
    let group_s = group.map(|g| format!(" ({})", g.name)).unwrap_or_default();
    match owner {
        Some(u) if !is_service_shell(&u.shell.to_string_lossy()) => Check::warn(
            NAME,
            format!(
                "jail uid {uid} is login user {} (shell {}): a process escaping a jail would act as them",
                u.name,
                u.shell.display()
            ),
            format!("use a dedicated user: {} and pass --jailer-uid {default} --jailer-gid {default}", create_fix("jailer", default, default)),
        ),
        Some(u) => Check::pass(NAME, format!("jail uid {uid} ({}) gid {gid}{group_s}, not root", u.name)),
        None => Check::pass(NAME, format!("jail uid {uid} gid {gid}{group_s}, not root (no passwd entry needed)")),
    }
}

/// Whether a login shell means "no interactive logins".
fn is_service_shell(shell: &str) -> bool {
    shell.is_empty()
        || shell.ends_with("/false")
        || shell.ends_with("/nologin")
        || shell.ends_with("/sync")
}

/// The range per-VM uids and gids come from must be nobody else's: no user or group in
/// `/etc/passwd` or `/etc/group`, no subordinate range in `/etc/subuid` or `/etc/subgid`.
/// Without a range every VM shares one uid, which is a warning.
pub(super) fn id_range(
    range: Option<(u32, u32)>,
    uid: u32,
    gid: u32,
    etc: &std::path::Path,
) -> super::Check {
    const NAME: &str = "jail-id-range";
    let Some((first, last)) = range else {
        return Check::warn(
            NAME,
            format!(
                "every VM runs as uid {uid} gid {gid}: a compromised Firecracker can signal the \
                 others' threads and, after a jail escape, read their disks"
            ),
            "give each VM its own uid: leave jailer_uid/jailer_gid unset so jail_id_range applies \
             (Firecracker's production host guide recommends a unique uid and gid per VM)",
        );
    };
    let read = |name: &str| std::fs::read_to_string(etc.join(name)).unwrap_or_default();
    let overlaps = |a: u64, b: u64| a <= u64::from(last) && b >= u64::from(first);
    let mut hits = Vec::new();
    for (file, id_field) in [("passwd", 2), ("group", 2)] {
        for line in read(file).lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let Some(id) = f.get(id_field).and_then(|v| v.parse::<u64>().ok()) {
                if overlaps(id, id) {
                    hits.push(format!(
                        "{} {} ({id}) in /etc/{file}",
                        if file == "passwd" { "user" } else { "group" },
                        f[0]
                    ));
                }
            }
        }
    }
    for file in ["subuid", "subgid"] {
        for line in read(file).lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let (Some(start), Some(count)) = (
                f.get(1).and_then(|v| v.parse::<u64>().ok()),
                f.get(2).and_then(|v| v.parse::<u64>().ok()),
            ) {
                if count > 0 && overlaps(start, start + count - 1) {
                    hits.push(format!(
                        "{}'s range {start}-{} in /etc/{file}",
                        f[0],
                        start + count - 1
                    ));
                }
            }
        }
    }
    if hits.is_empty() {
        Check::pass(
            NAME,
            format!(
                "each VM gets its own uid/gid from {first}-{last} ({} ids), which no user, group \
                 or subordinate range uses",
                u64::from(last) - u64::from(first) + 1
            ),
        )
    } else {
        Check::fail(
            NAME,
            format!("jail_id_range {first}-{last} overlaps {}", hits.join(", ")),
            "choose a jail_id_range that none of these use (the default 1900000000-1900065535 \
             lies above useradd's subordinate ranges and systemd's container ranges)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_overlapping_a_user_or_subordinate_range_fails_naming_it() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(
            etc.path().join("passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(etc.path().join("group"), "root:x:0:\n").unwrap();
        std::fs::write(etc.path().join("subuid"), "alice:100000:65536\n").unwrap();
        let c = id_range(Some((165000, 170000)), 1, 1, etc.path());
        assert_eq!(c.status, super::super::Status::Fail, "{c:?}");
        assert!(
            c.detail
                .contains("alice's range 100000-165535 in /etc/subuid"),
            "{c:?}"
        );
        let c = id_range(Some((900, 1000)), 1, 1, etc.path());
        assert!(c.detail.contains("user alice (1000)"), "{c:?}");
        let ok = id_range(Some((1_900_000_000, 1_900_065_535)), 1, 1, etc.path());
        assert_eq!(ok.status, super::super::Status::Pass, "{ok:?}");
        let shared = id_range(None, 10000, 10000, etc.path());
        assert_eq!(shared.status, super::super::Status::Warn);
    }
}
