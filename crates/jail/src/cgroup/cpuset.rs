//! CPU pinning: the kernel's list syntax (`0-3,5`) for CPUs and memory nodes, and the check that
//! every CPU asked for is online.
//!
//! Pinning is always explicit: a VM without a cpuset runs wherever the scheduler puts it. Memory
//! nodes are not chosen by callers: a pinned VM gets every online node, because cgroup v1 refuses
//! to add a task to a cpuset whose `cpuset.mems` is empty (ENOSPC) and guest memory should be
//! allowed where the kernel finds it.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The most CPUs (or nodes) a list may name: the kernel's `NR_CPUS` upper bound.
const MAX_CPU: u32 = 8191;

/// A set of CPU or memory node numbers, written in the kernel's list syntax (`0-3,5`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CpuList(BTreeSet<u32>);

impl CpuList {
    /// Parses `0-3,5` (whitespace around items allowed, a trailing newline as sysfs writes it).
    /// `None` for an empty list, a range whose end is below its start, or a number over 8191.
    pub fn parse(s: &str) -> Option<Self> {
        let mut set = BTreeSet::new();
        for item in s.trim().split(',') {
            let item = item.trim();
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (item, item),
            };
            let num = |t: &str| -> Option<u32> {
                (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| t.parse().ok())
                    .flatten()
                    .filter(|&n| n <= MAX_CPU)
            };
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return None;
            }
            set.extend(a..=b);
        }
        (!set.is_empty()).then_some(Self(set))
    }

    /// Whether every number in `self` is in `other`.
    pub fn is_subset(&self, other: &CpuList) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The numbers of `self` that `other` lacks.
    pub fn missing_from(&self, other: &CpuList) -> CpuList {
        Self(self.0.difference(&other.0).copied().collect())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a sysfs list file (`/sys/devices/system/cpu/online`); `None` if it is missing or
    /// unreadable as a list.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }
}

impl fmt::Display for CpuList {
    /// The canonical form: sorted, runs of two or more as ranges (`0-3,5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut it = self.0.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while it.peek() == Some(&(end + 1)) {
                end = it.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for CpuList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            format!("{s:?} is not a CPU list; write CPU numbers and ranges such as 0-3,5")
        })
    }
}

impl TryFrom<String> for CpuList {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<CpuList> for String {
    fn from(l: CpuList) -> String {
        l.to_string()
    }
}

/// The CPUs and memory nodes a VM is pinned to: `cpuset.cpus` and `cpuset.mems`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpuset {
    /// CPUs Firecracker's threads may run on.
    pub cpus: CpuList,
    /// Memory nodes; `None` until the plan fills in every online node.
    pub mems: Option<CpuList>,
}

/// The host's online CPUs and memory nodes, under a sysfs root (`/sys` on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Online {
    /// `devices/system/cpu/online`.
    pub cpus: CpuList,
    /// `devices/system/node/online`, or node 0 where the kernel has no NUMA support.
    pub mems: CpuList,
}

impl Online {
    /// Reads both lists under `sys`. `Err` names the file when the CPU list cannot be read.
    pub fn read(sys: &Path) -> Result<Self, std::path::PathBuf> {
        let cpu_file = sys.join("devices/system/cpu/online");
        let cpus = CpuList::read(&cpu_file).ok_or(cpu_file)?;
        let node_file = sys.join("devices/system/node/online");
        let mems = if node_file.exists() {
            CpuList::read(&node_file).unwrap_or_else(node_zero)
        } else {
            node_zero()
        };
        Ok(Self { cpus, mems })
    }
}

fn node_zero() -> CpuList {
    CpuList(BTreeSet::from([0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_list_syntax_and_prints_it_canonically() {
        for (text, canonical) in [
            ("0", "0"),
            ("0-3,5", "0-3,5"),
            ("5,0-3", "0-3,5"),
            (" 1 , 2 ,3\n", "1-3"),
            ("0,2,4", "0,2,4"),
            ("0-1,1-2", "0-2"),
            ("7-7", "7"),
        ] {
            assert_eq!(
                CpuList::parse(text).map(|l| l.to_string()).as_deref(),
                Some(canonical),
                "{text:?}"
            );
        }
        for bad in [
            "", ",", "a", "1-", "-1", "3-1", "1,,2", "0x1", "+1", "1 2", "8192", "1-99999",
        ] {
            assert_eq!(CpuList::parse(bad), None, "{bad:?}");
        }
        let err = "3-1".parse::<CpuList>().unwrap_err();
        assert!(err.contains("0-3,5"), "{err}");
    }

    #[test]
    fn subsets_and_what_is_missing() {
        let all = CpuList::parse("0-3").unwrap();
        assert!(CpuList::parse("1,3").unwrap().is_subset(&all));
        let over = CpuList::parse("2-5").unwrap();
        assert!(!over.is_subset(&all));
        assert_eq!(over.missing_from(&all).to_string(), "4-5");
    }

    #[test]
    fn online_lists_come_from_an_injected_sysfs_and_nodes_default_to_zero() {
        let sys = tempfile::tempdir().unwrap();
        assert_eq!(
            Online::read(sys.path()).unwrap_err(),
            sys.path().join("devices/system/cpu/online")
        );
        std::fs::create_dir_all(sys.path().join("devices/system/cpu")).unwrap();
        std::fs::write(sys.path().join("devices/system/cpu/online"), "0-1\n").unwrap();
        let online = Online::read(sys.path()).unwrap();
        assert_eq!(
            (online.cpus.to_string(), online.mems.to_string()),
            ("0-1".into(), "0".into())
        );
        std::fs::create_dir_all(sys.path().join("devices/system/node")).unwrap();
        std::fs::write(sys.path().join("devices/system/node/online"), "0-1\n").unwrap();
        assert_eq!(Online::read(sys.path()).unwrap().mems.to_string(), "0-1");
    }

    #[test]
    fn lists_serialize_as_their_text() {
        let l = CpuList::parse("3,0-1").unwrap();
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"0-1,3\"");
        assert_eq!(serde_json::from_str::<CpuList>("\"0-1,3\"").unwrap(), l);
        assert!(serde_json::from_str::<CpuList>("\"x\"").is_err());
    }
}
