//! cgroups: the host's layout (found by `jail`'s [`Hierarchy`]) and, for the version warden
//! will use, whether the memory, cpu and pids controllers are there and writable.

use std::path::Path;

use jail::cgroup::delegation::Delegation as Subtree;
use jail::cgroup::{Hierarchy, Layout};

use crate::daemon::config::Delegation;
use jail::CgroupVersion;
use nix::unistd::{access, AccessFlags};

use super::Check;

/// The controllers warden's limits use (memory limit, CPU quota, pids.max).
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

const DELEGATE_FIX: &str = "give warden a delegated cgroup: add `Delegate=yes` to the [Service] \
     section of warden.service (see deploy/warden.service), then `systemctl daemon-reload && \
     systemctl restart warden`; in a container, start it with its own writable cgroup \
     (e.g. `docker run --cgroupns=private --privileged ...`)";

pub(super) fn check(
    mounts_file: &Path,
    configured: Option<CgroupVersion>,
    parent: &str,
    production: bool,
    delegation: Delegation,
) -> Vec<Check> {
    let h = match Hierarchy::from_mounts_file(mounts_file) {
        Ok(h) => h,
        Err(e) => {
            return vec![Check::fail(
                "cgroups",
                e.to_string(),
                "mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd, which mounts it)",
            )]
        }
    };
    let version = configured.unwrap_or_else(|| h.default_version());
    let how = if configured.is_some() {
        "configured"
    } else {
        "detected"
    };
    let v2 = |h: &Hierarchy| {
        h.v2.as_ref().map(|p| {
            let ctl = if h.v2_controllers.is_empty() {
                "no controllers".to_owned()
            } else {
                format!("controllers: {}", h.v2_controllers.join(" "))
            };
            format!("cgroup2 at {} ({ctl})", p.display())
        })
    };
    let v1_names = || {
        let mut names: Vec<&str> = h.v1.iter().map(|(c, _)| c.as_str()).collect();
        names.dedup();
        names.join(",")
    };
    let layout = match h.layout {
        Layout::Legacy => format!("legacy (v1 only: {})", v1_names()),
        Layout::Hybrid => format!(
            "hybrid (v1: {}; {})",
            v1_names(),
            v2(&h).unwrap_or_default()
        ),
        Layout::Unified => format!("unified (v2 only: {})", v2(&h).unwrap_or_default()),
    };
    let mut checks = vec![Check::pass(
        "cgroups",
        format!(
            "{layout}; warden uses cgroup v{} ({how}, jailer --cgroup-version {})",
            version.as_arg(),
            version.as_arg()
        ),
    )];
    for controller in CONTROLLERS {
        checks.push(match version {
            CgroupVersion::V1 => v1_controller(&h, controller),
            CgroupVersion::V2 => v2_controller(&h, controller, production),
        });
    }
    checks.push(parent_cgroup(&h, version, parent));
    if version == CgroupVersion::V2 {
        checks.push(delegation_check(&h, parent, delegation));
    }
    checks
}

/// Where a daemon started like this process would put its VMs on cgroup v2, and whether the
/// kernel's no-internal-processes rule lets the jailer enable controllers there.
fn delegation_check(h: &Hierarchy, parent: &str, setting: Delegation) -> Check {
    const NAME: &str = "cgroup-delegation";
    const UNIT_FIX: &str = "run the daemon as a systemd service with these lines in its \
         [Service] section (deploy/warden.service has them): `Delegate=yes` and \
         `KillMode=process`; then `systemctl daemon-reload && systemctl restart warden`";
    let Some(mount) = &h.v2 else {
        return Check::fail(NAME, "no cgroup2 filesystem is mounted", UNIT_FIX);
    };
    if setting == Delegation::Off {
        return Check::pass(
            NAME,
            format!(
                "cgroup_delegation is off: VMs go under {}",
                mount.join(parent).display()
            ),
        );
    }
    let under_systemd = Path::new("/run/systemd/system").exists();
    let own = Subtree::detect(mount, Path::new("/proc"), std::process::id())
        .filter(|d| setting == Delegation::On || d.is_delegated(under_systemd));
    let Some(sub) = own else {
        let detail = format!(
            "this process is not in a delegated cgroup: a daemon started like it stays where it \
             starts and puts VMs under {}",
            mount.join(parent).display()
        );
        return if setting == Delegation::On {
            Check::fail(
                NAME,
                format!("cgroup_delegation is on but {detail}"),
                UNIT_FIX,
            )
        } else if under_systemd {
            Check::warn(NAME, detail, UNIT_FIX)
        } else {
            Check::pass(NAME, detail)
        };
    };
    let dir = sub.dir();
    if let Err(e) = access(&dir.join("cgroup.subtree_control"), AccessFlags::W_OK) {
        return Check::fail(
            NAME,
            format!(
                "the delegated cgroup {} is not writable: {}",
                dir.display(),
                e.desc()
            ),
            UNIT_FIX,
        );
    }
    let offered = sub.controllers();
    let missing: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !offered.iter().any(|o| o == c))
        .collect();
    let detail = format!(
        "delegated cgroup {} (controllers: {}); the daemon moves into {} and puts VMs under {}",
        dir.display(),
        offered.join(" "),
        sub.supervisor_dir().display(),
        // The daemon's own preflight runs after it settled: its parent is already beside the leaf.
        mount
            .join(if parent.starts_with(&format!("{}/", sub.subtree)) {
                parent.to_owned()
            } else {
                sub.vm_parent(parent)
            })
            .display()
    );
    if missing.is_empty() {
        Check::pass(NAME, detail)
    } else {
        Check::warn(
            NAME,
            format!("{detail}; it is not given {}", missing.join(" ")),
            format!("{UNIT_FIX}; systemd delegates every controller with Delegate=yes"),
        )
    }
}

/// The VMs' parent cgroup under each hierarchy warden will use: absent (the jailer makes it) or
/// a writable directory.
fn parent_cgroup(h: &Hierarchy, version: CgroupVersion, parent: &str) -> Check {
    const NAME: &str = "cgroup-parent";
    let roots: Vec<&Path> = match version {
        CgroupVersion::V1 => CONTROLLERS.iter().filter_map(|c| h.v1_mount(c)).collect(),
        CgroupVersion::V2 => h.v2.as_deref().into_iter().collect(),
    };
    let mut found = Vec::new();
    for dir in roots.iter().map(|r| r.join(parent)) {
        match std::fs::metadata(&dir) {
            Err(_) => {}
            Ok(m) if !m.is_dir() => {
                return Check::fail(
                    NAME,
                    format!("parent cgroup {} is not a directory", dir.display()),
                    "choose another parent_cgroup (--parent-cgroup NAME)",
                )
            }
            Ok(_) => match access(&dir, AccessFlags::W_OK) {
                Ok(()) => found.push(dir.display().to_string()),
                Err(e) => {
                    return Check::fail(
                        NAME,
                        format!(
                            "parent cgroup {} is not writable: {}",
                            dir.display(),
                            e.desc()
                        ),
                        format!(
                        "{DELEGATE_FIX}; or choose another parent_cgroup (--parent-cgroup NAME)"
                    ),
                    )
                }
            },
        }
    }
    Check::pass(
        NAME,
        if found.is_empty() {
            format!("parent cgroup {parent:?} does not exist yet; the jailer creates it")
        } else {
            format!("parent cgroup {parent:?}: {} writable", found.join(", "))
        },
    )
}

fn name(controller: &str) -> String {
    format!("cgroup-{controller}")
}

fn v1_controller(h: &Hierarchy, controller: &str) -> Check {
    let name = name(controller);
    let Some(dir) = h.v1_mount(controller) else {
        let fix = if h.v2_controllers.iter().any(|c| c == controller) {
            "use cgroup v2, where the controller is: --cgroup-version 2 (cgroup_version = 2)"
                .to_owned()
        } else {
            format!(
                "mkdir -p /sys/fs/cgroup/{controller} && mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}"
            )
        };
        return Check::fail(
            &name,
            format!("cgroup v1 has no {controller} controller mounted"),
            fix,
        );
    };
    match access(dir, AccessFlags::W_OK) {
        Ok(()) => Check::pass(
            &name,
            format!(
                "v1 {controller} controller at {} is writable",
                dir.display()
            ),
        ),
        Err(e) => {
            let fix = if e == nix::errno::Errno::EROFS {
                format!("mount -o remount,rw {}", dir.display())
            } else {
                "run warden as root (the jailer creates cgroups before it drops privileges)"
                    .to_owned()
            };
            Check::fail(
                &name,
                format!(
                    "v1 {controller} controller at {} is not writable: {}",
                    dir.display(),
                    e.desc()
                ),
                fix,
            )
        }
    }
}

fn v2_controller(h: &Hierarchy, controller: &str, production: bool) -> Check {
    let name = name(controller);
    let Some(root) = &h.v2 else {
        return Check::fail(
            &name,
            "no cgroup2 filesystem is mounted",
            "mount -t cgroup2 none /sys/fs/cgroup, or use cgroup v1: --cgroup-version 1",
        );
    };
    if !h.v2_controllers.iter().any(|c| c == controller) {
        let listed = root.join("cgroup.controllers");
        let detail = format!(
            "{controller} is not in {} ({:?})",
            listed.display(),
            h.v2_controllers.join(" ")
        );
        let fix = match (h.layout, h.v1_mount(controller)) {
            (_, Some(v1)) => format!(
                "the {controller} controller is bound to cgroup v1 at {}: use cgroup v1 (--cgroup-version 1, \
                 or leave it unset), or boot with systemd.unified_cgroup_hierarchy=1 to move every controller to v2",
                v1.display()
            ),
            _ => DELEGATE_FIX.to_owned(),
        };
        // The limit is derived: left out with a warning, refused in production mode.
        return if production {
            Check::fail(
                &name,
                format!("{detail}; production mode refuses VMs without it"),
                fix,
            )
        } else {
            Check::warn(
                &name,
                format!("{detail}: VMs run without this limit (named in their isolation report)"),
                fix,
            )
        };
    }
    // The jailer writes `+<controller>` into `cgroup.subtree_control` from the root down to the
    // VM's parent cgroup.
    let subtree = root.join("cgroup.subtree_control");
    match access(&subtree, AccessFlags::W_OK) {
        Ok(()) => Check::pass(
            &name,
            format!(
                "v2 {controller} controller available in {} and {} writable",
                root.display(),
                subtree.display()
            ),
        ),
        Err(e) => Check::fail(
            &name,
            format!(
                "{} is not writable ({}): cgroups are not delegated to warden",
                subtree.display(),
                e.desc()
            ),
            DELEGATE_FIX,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn the_parent_cgroup_may_be_missing_or_a_writable_directory_but_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cgroup");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let mounts = dir.path().join("mounts");
        std::fs::write(
            &mounts,
            format!("cgroup2 {} cgroup2 rw,nosuid 0 0\n", root.display()),
        )
        .unwrap();
        let parent = |name: &str| {
            check(
                &mounts,
                Some(CgroupVersion::V2),
                name,
                false,
                Delegation::Auto,
            )
            .into_iter()
            .find(|c| c.name == "cgroup-parent")
            .unwrap()
        };

        let c = parent("tenant/a");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.detail.contains("does not exist yet"), "{c:?}");

        std::fs::create_dir(root.join("warden")).unwrap();
        let c = parent("warden");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(
            c.detail
                .contains(&root.join("warden").display().to_string()),
            "{c:?}"
        );

        std::fs::write(root.join("file"), "").unwrap();
        let c = parent("file");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.unwrap().contains("--parent-cgroup"));
    }
}
