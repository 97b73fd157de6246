//! Threads for work that no request ever waits on (the refresh of ListVms' cgroup readings).
//! They run at the lowest CPU priority (nice 19), so that on a busy host a request never waits
//! behind them. The price is that on a host whose CPUs are all busy, what they keep gets older
//! than its usual age; work that a request would do itself once it is too old (the uid pass)
//! does not belong here.

/// The nice value of background threads.
const NICE: libc::c_int = 19;

/// Runs `f` on a new thread named `name` at the lowest CPU priority. An error means no thread
/// could be made (`f` did not run).
pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_priority();
            f()
        })
        .map(drop)
}

/// Gives the calling thread (on Linux the nice value is a thread's own) the nice value
/// [`NICE`]. Lowering one's own priority needs no privilege; a failure leaves the thread at its
/// priority, which changes only how soon it runs.
fn lower_priority() {
    // SAFETY: plain system calls on the calling thread, no memory is passed.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE)
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a background thread's priority");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_background_thread_runs_at_the_lowest_priority_and_the_caller_keeps_its_own() {
        // SAFETY: getpriority reads the nice value of the calling thread.
        let own = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = own();
        let (tx, rx) = std::sync::mpsc::channel();
        super::spawn("warden-test", move || tx.send(own()).unwrap()).unwrap();
        assert_eq!(rx.recv().unwrap(), super::NICE);
        assert_eq!(own(), before, "the caller's priority is untouched");
    }
}
