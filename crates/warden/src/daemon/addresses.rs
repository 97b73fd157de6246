//! The bridge-mode address pool: the daemon's subnet (`address_pool`), its first address the
//! gateway on the bridge, every other usable address handed to one VM at its first boot and
//! held until DeleteVm.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::error::ManagerError;

/// Addresses of one subnet, each held by at most one VM.
pub(crate) struct AddressPool {
    net: Ipv4Addr,
    prefix: u8,
    /// Addresses in use (as integers), by any VM in the store.
    used: Mutex<BTreeSet<u32>>,
}

impl AddressPool {
    /// The pool of `net/prefix` with nothing taken.
    pub(crate) fn new((net, prefix): (Ipv4Addr, u8)) -> Self {
        Self {
            net,
            prefix,
            used: Mutex::default(),
        }
    }

    fn first(&self) -> u32 {
        u32::from(self.net) + 2
    }

    fn last(&self) -> u32 {
        let size = 1u64 << (32 - u32::from(self.prefix));
        // The broadcast address is never handed out.
        (u64::from(u32::from(self.net)) + size).saturating_sub(2) as u32
    }

    /// The lowest free address (after the gateway), recorded as taken by VM `id`.
    pub(crate) fn take(&self, id: &str) -> Result<Ipv4Addr, ManagerError> {
        let mut used = self.used.lock().unwrap();
        let free = (self.first()..=self.last())
            .find(|a| !used.contains(a))
            .ok_or_else(|| ManagerError::NoFreeAddress {
                id: id.to_owned(),
                net: self.net,
                prefix: self.prefix,
            })?;
        used.insert(free);
        Ok(free.into())
    }

    /// Marks an address a stored VM holds (at recovery).
    pub(crate) fn mark(&self, address: Ipv4Addr) {
        self.used.lock().unwrap().insert(address.into());
    }

    /// Frees an address (at DeleteVm).
    pub(crate) fn release(&self, address: Ipv4Addr) {
        self.used.lock().unwrap().remove(&u32::from(address));
    }

    /// The address a request is validated with before any is taken: the pool's first.
    pub(crate) fn sample(&self) -> Ipv4Addr {
        self.first().into()
    }

    /// `address` with the pool's gateway and prefix, as the guest is configured.
    pub(crate) fn guest(&self, address: Ipv4Addr) -> jail::net::GuestAddr {
        jail::net::GuestAddr {
            address,
            gateway: (u32::from(self.net) + 1).into(),
            prefix_len: self.prefix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_lowest_free_address_and_never_the_gateway_or_broadcast() {
        let pool = AddressPool::new((Ipv4Addr::new(10, 0, 0, 0), 30));
        // A /30 has one usable address besides the gateway.
        assert_eq!(pool.take("a").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        let e = pool.take("b").unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/30"), "{e}");
        pool.release(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(pool.take("b").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn marked_addresses_are_skipped() {
        let pool = AddressPool::new((Ipv4Addr::new(10, 1, 0, 0), 24));
        pool.mark(Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(pool.take("a").unwrap(), Ipv4Addr::new(10, 1, 0, 3));
        let g = pool.guest(Ipv4Addr::new(10, 1, 0, 3));
        assert_eq!(g.gateway, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(g.prefix_len, 24);
    }
}
