//! Warm jails: a jail made before its VM is known (id reserved, uid, cgroups, namespace, the
//! jailer run and Firecracker's API up, nothing staged), which a VM then takes over.
//!
//! A VM fits a warm jail when its own plan, made with the jail's id and uid, differs from the
//! jail's only in what can still change after the jailer ran: the staged files (placed into the
//! chroot at the take) and the cgroup values (rewritten in the directories the jailer made).
//! Everything else (every path, the argv's shape, the uid, the namespaces, the cgroup
//! directories and which files are set in them, the resource limits) must be the same, or the
//! VM takes the normal path, with one exception: the file-size cap (`fsize`, which the jailer
//! derives from the VM's memory and largest file) may be lower in the VM's plan than in the
//! jail's. Resource limits are set by the jailer on itself before its exec, and changing them on
//! Firecracker afterwards (`prlimit` on a process of another uid) needs `CAP_SYS_RESOURCE`,
//! which a host may not grant (this one does not). A warm jail is therefore planned for the
//! largest VM it is meant to serve, and a smaller VM in it keeps that jail's cap. [`fits`] decides it; [`crate::Jail::take_over`] acts on it.

use crate::plan::JailPlan;

/// Why a VM does not fit a warm jail: the plan fields that differ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the VM's jail differs from the warm jail in {}", .fields.join(", "))]
pub struct Misfit {
    /// The differing fields of [`JailPlan`], by their serialized names.
    pub fields: Vec<String>,
}

/// Whether the VM planned as `vm` (with `warm`'s id and uid) can take over the warm jail `warm`.
pub fn fits(warm: &JailPlan, vm: &JailPlan) -> Result<(), Misfit> {
    let (a, b) = (shape(warm), shape(vm));
    let mut fields: Vec<String> = match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
            .collect(),
        _ => vec!["plan".to_owned()],
    };
    if !fsize_fits(warm, vm) {
        fields.push("rlimits (the VM needs a larger fsize than the warm jail has)".to_owned());
    }
    if !warm.staged.is_empty() {
        fields.push("staged (the warm jail has files already)".to_owned());
    }
    if !warm.jailed {
        fields.push("jailed (a warm jail is always jailed)".to_owned());
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Misfit { fields })
    }
}

const FSIZE: &str = "fsize";

/// The VM's file-size cap is at most the jail's (both unset is fine too).
fn fsize_fits(warm: &JailPlan, vm: &JailPlan) -> bool {
    let of = |p: &JailPlan| p.rlimits.iter().find(|(n, _)| n == FSIZE).map(|(_, v)| *v);
    match (of(warm), of(vm)) {
        (Some(w), Some(v)) => v <= w,
        (w, v) => w == v,
    }
}

/// A plan without what a take may change: staged files, cgroup values (in the plan and in the
/// jailer's `--cgroup file=value` arguments) and the fsize value (checked by [`fsize_fits`]).
fn shape(plan: &JailPlan) -> serde_json::Value {
    let mut p = plan.clone();
    p.staged.clear();
    for s in &mut p.cgroups {
        s.value.clear();
    }
    for (name, v) in &mut p.rlimits {
        if name == FSIZE {
            *v = 0;
        }
    }
    let mut valued = false;
    let mut after_rlimit = false;
    for a in &mut p.argv {
        if after_rlimit && a.starts_with("fsize=") {
            *a = FSIZE.to_owned();
        }
        after_rlimit = a == "--resource-limit";
        if valued {
            if let Some((name, _)) = a.split_once('=') {
                *a = name.to_owned();
            }
        }
        valued = a == "--cgroup";
    }
    serde_json::to_value(&p).expect("a plan serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{CgroupVersion, Hierarchy};
    use crate::spec::{JailSpec, StageRequest};

    fn plan(memory_mib: u64, with_kernel: bool, pids: Option<u64>) -> JailPlan {
        let kernel = tempfile::NamedTempFile::new().unwrap();
        let spec = JailSpec {
            id: crate::JailId::new("warm-1").unwrap(),
            jailed: true,
            jailer_binary: "/usr/local/bin/jailer".into(),
            exec_file: "/usr/local/bin/firecracker".into(),
            uid: 10000,
            gid: 10000,
            chroot_base_dir: "/srv/jailer".into(),
            cgroup_version: CgroupVersion::V1,
            parent_cgroup: "warden".into(),
            limits: crate::cgroup::CgroupLimits {
                memory_bytes: Some(memory_mib << 20),
                pids_max: pids,
                ..Default::default()
            },
            explicit_limits: vec![],
            strict_cgroups: false,
            resource_limits: Default::default(),
            new_pid_ns: true,
            netns: None,
            make_netns: false,
            fsize_headroom: None,
            net: None,
            sys_root: crate::spec::SYS.into(),
            files: if with_kernel {
                vec![StageRequest {
                    source: kernel.path().to_owned(),
                    name: "kernel".into(),
                    writable: false,
                    field: "kernel_path".into(),
                    opened: None,
                }]
            } else {
                vec![]
            },
        };
        let h = Hierarchy::parse(crate::cgroup::tests_support::HYBRID_MOUNTS).unwrap();
        spec.plan(&h).unwrap()
    }

    #[test]
    fn a_vm_that_differs_only_in_files_and_cgroup_values_fits() {
        let warm = plan(256, false, Some(1024));
        let vm = plan(1024, true, Some(1024));
        assert_ne!(warm.argv, vm.argv, "the memory limit is in the argv");
        assert_eq!(fits(&warm, &vm), Ok(()));
    }

    #[test]
    fn a_vm_with_another_set_of_cgroup_files_or_another_uid_does_not_fit() {
        let warm = plan(256, false, Some(1024));
        let no_pids = plan(256, true, None);
        let e = fits(&warm, &no_pids).unwrap_err();
        assert!(e.fields.contains(&"argv".to_owned()), "{e}");
        assert!(e.fields.contains(&"cgroups".to_owned()), "{e}");
        let mut other_uid = plan(256, true, Some(1024));
        other_uid.uid += 1;
        assert!(fits(&warm, &other_uid)
            .unwrap_err()
            .fields
            .contains(&"uid".to_owned()));
    }

    fn with_rlimits(mut p: JailPlan, rlimits: &[(&str, u64)]) -> JailPlan {
        p.rlimits = rlimits.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        p.argv.retain(|a| {
            a != "--resource-limit" && !a.contains("fsize=") && !a.contains("no-file=")
        });
        for (n, v) in rlimits {
            p.argv.push("--resource-limit".into());
            p.argv.push(format!("{n}={v}"));
        }
        p
    }

    #[test]
    fn a_vm_needing_no_larger_fsize_than_the_jail_fits_and_other_limits_must_match() {
        let warm = with_rlimits(
            plan(512, false, Some(1024)),
            &[("no-file", 2048), ("fsize", 3 << 30)],
        );
        let smaller = with_rlimits(
            plan(256, true, Some(1024)),
            &[("no-file", 2048), ("fsize", 2 << 30)],
        );
        assert_eq!(fits(&warm, &smaller), Ok(()));
        let larger = with_rlimits(
            plan(256, true, Some(1024)),
            &[("no-file", 2048), ("fsize", 4 << 30)],
        );
        assert!(fits(&warm, &larger)
            .unwrap_err()
            .to_string()
            .contains("larger fsize"));
        let files = with_rlimits(
            plan(256, true, Some(1024)),
            &[("no-file", 64), ("fsize", 2 << 30)],
        );
        let e = fits(&warm, &files).unwrap_err();
        assert!(e.fields.contains(&"rlimits".to_owned()), "{e}");
        assert!(e.fields.contains(&"argv".to_owned()), "{e}");
    }

    #[test]
    fn a_warm_jail_with_files_is_no_warm_jail() {
        let used = plan(256, true, Some(1024));
        assert!(fits(&used, &used).is_err());
    }
}
