//! Networking for one VM: its own network namespace, a TAP device inside it owned by the jail
//! user, and, in bridge mode, a veth pair that joins the namespace to a host bridge.
//!
//! ```text
//!  host                                  | namespace fc-vm-<id>
//!  warden0 (bridge, gateway address) ----+---- wp<hash> ---- br0 ---- tap0 ---- Firecracker
//!     `-- wv<hash> (host end of the veth) |     (peer end)               (owned by the jail uid)
//! ```
//!
//! In `none` mode the namespace holds only `tap0`: the guest can reach nothing but the TAP.
//! The jailer only joins a namespace (`--netns`); creating the namespace, the TAP and the links
//! is ours, done through netlink ([`link`]) and the TUN ioctls ([`tap`]). Interface names
//! respect the kernel's 15-byte limit for any VM id: inside the VM's namespace names are fixed
//! (`tap0`, `br0`), and host-side names are derived from a hash of the id.

pub mod link;
pub mod netns;
pub mod tap;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The TAP device inside every VM's namespace.
pub const TAP_NAME: &str = "tap0";
/// The bridge inside a bridged VM's namespace.
pub const NS_BRIDGE: &str = "br0";
/// Prefix of the host end of a VM's veth pair (orphan clean-up only touches these).
pub const HOST_VETH_PREFIX: &str = "wv";
/// Prefix of the namespace end of a VM's veth pair.
pub const PEER_VETH_PREFIX: &str = "wp";

/// How a VM's namespace reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// The TAP is reachable only inside the namespace.
    None,
    /// A veth pair joins the namespace to a host bridge.
    Bridge,
}

impl std::str::FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "bridge" => Ok(Self::Bridge),
            other => Err(format!(
                "unknown network mode {other:?}; use none or bridge"
            )),
        }
    }
}

/// An IPv4 subnet written `A.B.C.D/PREFIX`, with a prefix of 8 to 30: smaller than a /30 leaves
/// no room for a gateway and a guest. The one parser of subnets and guest addresses in warden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address as written (a host address or the network's).
    pub address: Ipv4Addr,
    /// Prefix length, 8 to 30.
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// The netmask.
    pub fn mask(self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix_len))
    }

    /// The network address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & mask_bits(self.prefix_len))
    }

    /// The subnet's first host address: warden's gateway by convention.
    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }
}

fn mask_bits(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no /PREFIX; use A.B.C.D/PREFIX"))?;
        let address = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address; use A.B.C.D/PREFIX"))?;
        let prefix_len = p
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix {p:?} is not 8 to 30"))?;
        Ok(Self {
            address,
            prefix_len,
        })
    }
}

/// Whether `name` can be a host interface name warden makes or joins (a bridge): 1 to 15 bytes
/// (the kernel's `IFNAMSIZ` less its NUL) of ASCII letters, digits, '-' and '_'.
pub fn valid_ifname(name: &str) -> bool {
    (1..libc::IFNAMSIZ).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The guest's IPv4 configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestAddr {
    /// The guest's address.
    pub address: Ipv4Addr,
    /// Its gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
}

/// Everything about one VM's network, before it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPlan {
    /// Host connectivity.
    pub mode: NetMode,
    /// Namespace name (`fc-vm-<id>`).
    pub netns: String,
    /// Namespace file the jailer joins.
    pub netns_path: PathBuf,
    /// TAP name inside the namespace.
    pub tap: String,
    /// The guest's MAC, derived from the VM id.
    pub mac: String,
    /// Owner of the TAP.
    pub uid: u32,
    /// Group of the TAP.
    pub gid: u32,
    /// Host end of the veth pair (bridge mode).
    pub host_veth: Option<String>,
    /// Namespace end of the veth pair (bridge mode).
    pub peer_veth: Option<String>,
    /// Host bridge (bridge mode).
    pub bridge: Option<String>,
    /// Guest address (bridge mode, or when given).
    pub guest: Option<GuestAddr>,
}

impl NetPlan {
    /// Plans the network of VM `vm_id`, whose namespace file is `netns_path` (from
    /// [`crate::Layout::netns_path`]).
    pub fn new(
        vm_id: &str,
        netns_path: &std::path::Path,
        mode: NetMode,
        uid: u32,
        gid: u32,
        bridge: Option<(String, GuestAddr)>,
    ) -> Self {
        let netns = netns_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| netns::name_for(vm_id));
        let (bridge, guest) = match (mode, bridge) {
            (NetMode::Bridge, Some((b, g))) => (Some(b), Some(g)),
            (_, other) => (None, other.map(|(_, g)| g)),
        };
        Self {
            mode,
            netns_path: netns_path.to_owned(),
            netns,
            tap: TAP_NAME.into(),
            mac: format_mac(&mac_for(vm_id)),
            uid,
            gid,
            host_veth: (mode == NetMode::Bridge).then(|| link_name(HOST_VETH_PREFIX, vm_id)),
            peer_veth: (mode == NetMode::Bridge).then(|| link_name(PEER_VETH_PREFIX, vm_id)),
            bridge,
            guest,
        }
    }

    /// The Linux `ip=` kernel argument that configures the guest's `eth0`, if it has an address.
    pub fn boot_arg(&self) -> Option<String> {
        let g = self.guest?;
        let mask = Ipv4Addr::from(mask_bits(g.prefix_len));
        Some(format!(
            "ip={}::{}:{}::eth0:off",
            g.address, g.gateway, mask
        ))
    }
}

/// A MAC for a VM id: locally administered, unicast, stable across restarts (a hash of the id).
pub fn mac_for(vm_id: &str) -> [u8; 6] {
    let h = Sha256::digest(vm_id.as_bytes());
    // 0x06: locally administered (bit 1 set), unicast (bit 0 clear).
    [0x06, h[0], h[1], h[2], h[3], h[4]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A host interface name for a VM: `<prefix>` and 13 hex digits of a hash of the id, 15 bytes,
/// the kernel's limit. Ids that share any prefix get different names.
pub fn link_name(prefix: &str, vm_id: &str) -> String {
    let h = Sha256::digest(vm_id.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{}", &hex[..15 - prefix.len()])
}

/// A network setup step failed; names the device or namespace.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {what}")]
pub struct NetError {
    /// What was being done.
    pub action: String,
    /// The device, bridge or namespace.
    pub what: String,
    /// The cause.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl NetError {
    pub(crate) fn new(
        action: impl Into<String>,
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            action: action.into(),
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Creates the namespace, the TAP (owned by the jail user) and, in bridge mode, the veth pair,
/// the bridges and the gateway address. On error, whatever was made is removed.
pub fn setup(plan: &NetPlan) -> Result<(), NetError> {
    let dir = plan
        .netns_path
        .parent()
        .expect("namespace file has a directory");
    netns::create(dir, &plan.netns).map_err(|e| NetError::new("create", plan.netns.clone(), e))?;
    let made = (|| {
        if let (Some(host), Some(peer), Some(bridge), Some(g)) =
            (&plan.host_veth, &plan.peer_veth, &plan.bridge, &plan.guest)
        {
            link::host_side(host, peer, bridge, g, &plan.netns_path)?;
        }
        let inside = plan.clone();
        netns::run_in(&plan.netns_path, move || -> Result<(), NetError> {
            tap::create(&inside.tap, inside.uid, inside.gid)?;
            link::namespace_side(&inside.tap, inside.peer_veth.as_deref())
        })
        .map_err(|e| NetError::new("enter", plan.netns.clone(), e))?
    })();
    if let Err(e) = made {
        let _ = teardown(plan);
        return Err(e);
    }
    Ok(())
}

/// Removes what [`setup`] made (the host bridge stays: it is shared). Safe to repeat.
pub fn teardown(plan: &NetPlan) -> Result<(), NetError> {
    if let Some(host) = &plan.host_veth {
        link::delete(host)?;
    }
    netns::remove(&plan.netns_path).map_err(|e| NetError::new("remove", plan.netns.clone(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_a_subnet_and_finds_its_network_and_first_host() {
        let c: Ipv4Cidr = "10.1.2.77/24".parse().unwrap();
        assert_eq!(c.address, Ipv4Addr::new(10, 1, 2, 77));
        assert_eq!(c.network(), Ipv4Addr::new(10, 1, 2, 0));
        assert_eq!(c.first_host(), Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(c.mask(), Ipv4Addr::new(255, 255, 255, 0));
        for bad in [
            "10.1.2.0",
            "10.1.2.0/7",
            "10.1.2.0/31",
            "10.1.2/24",
            "x/24",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        assert!(valid_ifname("warden0") && valid_ifname("a-b_c") && valid_ifname(&"b".repeat(15)));
        assert!(!valid_ifname("") && !valid_ifname(&"b".repeat(16)) && !valid_ifname("br 0"));
    }

    #[test]
    fn macs_are_stable_local_unicast_and_distinct() {
        let a = mac_for("vm-1");
        assert_eq!(a, mac_for("vm-1"));
        assert_ne!(a, mac_for("vm-2"));
        assert_eq!(a[0] & 0b11, 0b10, "locally administered, unicast");
        assert_eq!(format_mac(&[6, 0xab, 0, 1, 2, 0xff]), "06:ab:00:01:02:ff");
    }

    #[test]
    fn names_fit_15_bytes_and_differ_for_ids_sharing_a_prefix() {
        let a = link_name(HOST_VETH_PREFIX, &format!("{}-a", "x".repeat(60)));
        let b = link_name(HOST_VETH_PREFIX, &format!("{}-b", "x".repeat(60)));
        assert_eq!(a.len(), 15);
        assert_ne!(a, b);
        assert!(a.starts_with("wv"));
    }

    #[test]
    fn boot_arg_is_the_linux_ip_form() {
        let g = GuestAddr {
            address: "172.31.0.5".parse().unwrap(),
            gateway: "172.31.0.1".parse().unwrap(),
            prefix_len: 16,
        };
        let ns = std::path::Path::new("/var/run/netns/fc-vm-vm");
        let p = NetPlan::new("vm", ns, NetMode::Bridge, 1, 1, Some(("warden0".into(), g)));
        assert_eq!(
            p.boot_arg().unwrap(),
            "ip=172.31.0.5::172.31.0.1:255.255.0.0::eth0:off"
        );
        assert_eq!(p.netns, "fc-vm-vm");
        assert!(NetPlan::new("vm", ns, NetMode::None, 1, 1, None)
            .boot_arg()
            .is_none());
    }
}
