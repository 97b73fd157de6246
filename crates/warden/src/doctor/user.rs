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
                "use an unprivileged user: {} and pass --uid {default} --gid {default} (the default)",
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
                format!("pass --uid {} --gid {} (or `usermod -u {uid} -g {gid} {name}`)", u.uid, u.gid),
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
            format!("use a dedicated user: {} and pass --uid {default} --gid {default}", create_fix("jailer", default, default)),
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
