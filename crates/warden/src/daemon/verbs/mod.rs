//! The lifecycle verbs, one file each. Each public verb runs its work to completion in a task
//! of its own, which the request only waits on: a caller that goes away (a dropped connection,
//! a Connect deadline) never leaves an unsupervised Firecracker, or a VM stuck in Booting or
//! Stopping.

mod boot;
mod create;
mod delete;
mod pause;
mod reboot;
mod snapshot;
mod stop;

use super::error::ManagerError;

/// 16 random hex digits, for generated names (VM ids, warm jails).
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// Runs a request's work in a task of its own and waits for it: dropping the waiter (the
/// request went away) does not stop the work.
async fn to_completion<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, ManagerError>> + Send + 'static,
) -> Result<T, ManagerError> {
    tokio::spawn(work).await?
}
