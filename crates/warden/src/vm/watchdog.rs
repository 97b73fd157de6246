//! The owner's watchdog: a process that kills an owner's VMs when the owner dies, even by
//! SIGKILL (for `warden run` and library users whose VMs must end with them; see the
//! `process` module for why a parent-death signal cannot do it).
//!
//! One watchdog serves up to [`PER_WATCHDOG`] VMs of its owner. It is forked once, at the
//! first VM, and each VM after that is handed to it as a pidfd over a socket (`SCM_RIGHTS`).
//! A watchdog forked per VM made forking (with the jailer's fork) most of what a start cost its
//! owner in a profile: the fork copies a large, many-threaded process's page tables, and every
//! page the owner wrote afterwards was copied on write, for as long as that VM's watchdog lived.
//!
//! The watchdog holds a pidfd on the owner and one on each VM's Firecracker, in a session of
//! its own (no terminal signal or process-group kill aimed at the owner reaches it). When the
//! owner's pidfd turns readable it first reads every message already sent (so a VM detached
//! just before the owner died stays detached), then SIGKILLs every Firecracker it holds and
//! exits. A Firecracker that exits is dropped from its set; so is one its owner lets go of
//! ([`forget`]: a detached VM, or one that ended).
//!
//! The forked child makes only raw system calls and uses memory allocated before the fork
//! (async-signal-safe, as required after a fork in a threaded process).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::pidfd;
use crate::error::Error;

/// The most VMs one watchdog holds; a further VM gets a watchdog of its own.
const PER_WATCHDOG: usize = 1024;

/// A message: its kind and the VM's token (little-endian).
const MESSAGE_LEN: usize = 9;
/// "Watch this Firecracker": the message carries its pidfd.
const WATCH: u8 = b'W';
/// "Let this one go".
const FORGET: u8 = b'F';

/// One VM handed to a watchdog, for [`forget`].
#[derive(Debug)]
pub(crate) struct Watched {
    watchdog: libc::pid_t,
    token: u64,
}

/// The owner's end of one watchdog.
struct Watchdog {
    pid: libc::pid_t,
    socket: OwnedFd,
    /// VMs handed to it and not forgotten.
    watched: usize,
    /// The process that forked it (a fork of the owner has none of its own yet).
    owner: u32,
}

static WATCHDOGS: Mutex<Vec<Watchdog>> = Mutex::new(Vec::new());
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Hands the Firecracker behind `firecracker` to a watchdog of this process (forking the first
/// one, or another when all are full or gone).
pub(crate) fn watch(firecracker: &OwnedFd) -> Result<Watched, Error> {
    let me = std::process::id();
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    let mut all = WATCHDOGS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|w| w.owner == me);
    let mut i = 0;
    while i < all.len() {
        let w = &mut all[i];
        if w.watched < PER_WATCHDOG {
            match send(&w.socket, WATCH, token, Some(firecracker)) {
                Ok(()) => {
                    w.watched += 1;
                    return Ok(Watched {
                        watchdog: w.pid,
                        token,
                    });
                }
                // Busy (its socket is full): it keeps what it holds; try another.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                // Gone (killed by someone): reap it and try another.
                Err(_) => {
                    let gone = all.swap_remove(i);
                    reap(gone.pid);
                    continue;
                }
            }
        }
        i += 1;
    }
    let mut w = spawn(me)?;
    send(&w.socket, WATCH, token, Some(firecracker)).map_err(|source| Error::Os {
        what: "handing a VM to its new watchdog".into(),
        source,
    })?;
    w.watched = 1;
    let pid = w.pid;
    all.push(w);
    Ok(Watched {
        watchdog: pid,
        token,
    })
}

/// Takes the VM out of its watchdog's care: it no longer dies with this process.
pub(crate) fn forget(w: Watched) {
    let mut all = WATCHDOGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = all.iter_mut().find(|d| d.pid == w.watchdog) {
        // A watchdog that is gone holds nothing any more.
        let _ = send(&d.socket, FORGET, w.token, None);
        d.watched = d.watched.saturating_sub(1);
    }
}

/// Sends one message (never blocking, never raising SIGPIPE).
fn send(socket: &OwnedFd, kind: u8, token: u64, fd: Option<&OwnedFd>) -> std::io::Result<()> {
    let mut data = [0u8; MESSAGE_LEN];
    data[0] = kind;
    data[1..].copy_from_slice(&token.to_le_bytes());
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one fd's control message, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is a valid value; every pointer set below points at a local
    // that outlives the call, and the control message is written within `control` (one fd
    // needs CMSG_SPACE(4) = 24 bytes of the 32).
    let rc = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            let fd_len = std::mem::size_of::<libc::c_int>() as u32;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(fd_len) as usize;
            let cm = libc::CMSG_FIRSTHDR(&msg);
            (*cm).cmsg_level = libc::SOL_SOCKET;
            (*cm).cmsg_type = libc::SCM_RIGHTS;
            (*cm).cmsg_len = libc::CMSG_LEN(fd_len) as usize;
            libc::CMSG_DATA(cm)
                .cast::<libc::c_int>()
                .write_unaligned(fd.as_raw_fd());
        }
        libc::sendmsg(
            socket.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Forks a watchdog of process `owner` (this one) and returns the owner's end of it.
fn spawn(owner: u32) -> Result<Watchdog, Error> {
    let owner_fd = pidfd::open(owner)?;
    let mut ends = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two fds into the array it is given.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            ends.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(Error::Os {
            what: "socketpair (the watchdog's socket)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: socketpair returned two new fds that nothing else owns.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // Everything the child uses is allocated here, before the fork.
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(PER_WATCHDOG + 2);
    for fd in [owner_fd.as_raw_fd(), theirs.as_raw_fd()] {
        fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
    }
    let mut tokens: Vec<u64> = Vec::with_capacity(PER_WATCHDOG);
    let devnull = c"/dev/null";
    // SAFETY: fork has no memory-safety preconditions; the child runs only `run`, which is
    // async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Os {
            what: "fork (the watchdog)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: in the forked child; the first two entries are the open owner pidfd and
        // socket, and both vectors have the capacity `run` relies on.
        unsafe { run(&mut fds, &mut tokens, devnull.as_ptr()) }
    }
    Ok(Watchdog {
        pid,
        socket: ours,
        watched: 0,
        owner,
    })
}

/// Reaps a watchdog that is gone.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child, with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// The watchdog's body (see the module docs).
///
/// # Safety
/// Call only in a freshly forked child: `fds[0]` the owner's pidfd, `fds[1]` the socket,
/// `fds` with room for [`PER_WATCHDOG`] more entries and `tokens` for as many.
unsafe fn run(
    fds: &mut Vec<libc::pollfd>,
    tokens: &mut Vec<u64>,
    devnull: *const libc::c_char,
) -> ! {
    // SAFETY: each call below is an async-signal-safe system call on valid arguments, and the
    // vectors never grow past the capacity they were given before the fork (no allocation).
    unsafe {
        libc::setsid();
        for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let null = libc::open(devnull, libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        close_all_but(fds[0].fd, fds[1].fd);
        loop {
            if libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) < 0 {
                continue; // EINTR
            }
            // Messages first: what the owner sent before it died still counts.
            if fds[1].revents != 0 {
                fds[1].revents = 0;
                if !read_messages(fds, tokens) {
                    fds[1].fd = -1; // closed: poll skips a negative fd
                }
            }
            if fds[0].revents != 0 {
                for p in &fds[2..] {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        p.fd,
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    );
                }
                libc::_exit(0);
            }
            let mut i = 2;
            while i < fds.len() {
                if fds[i].revents != 0 {
                    libc::close(fds[i].fd);
                    fds.swap_remove(i);
                    tokens.swap_remove(i - 2);
                } else {
                    i += 1;
                }
            }
        }
    }
}

/// Reads every message waiting on the socket `fds[1]`; false once the owner's end is closed.
///
/// # Safety
/// As for [`run`].
unsafe fn read_messages(fds: &mut Vec<libc::pollfd>, tokens: &mut Vec<u64>) -> bool {
    let socket = fds[1].fd;
    loop {
        let mut data = [0u8; MESSAGE_LEN];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut control = [0u64; 4];
        // SAFETY: as in `send`; recvmsg writes within `data` and `control`.
        let (n, fd) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            let n = libc::recvmsg(
                socket,
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            );
            let cm = libc::CMSG_FIRSTHDR(&msg);
            let fd = if n > 0
                && !cm.is_null()
                && (*cm).cmsg_level == libc::SOL_SOCKET
                && (*cm).cmsg_type == libc::SCM_RIGHTS
            {
                libc::CMSG_DATA(cm).cast::<libc::c_int>().read_unaligned()
            } else {
                -1
            };
            (n, fd)
        };
        if n == 0 {
            return false;
        }
        if n < 0 {
            // SAFETY: reads this thread's errno.
            let errno = unsafe { *libc::__errno_location() };
            // Nothing more for now; any other error ends the socket's use (never a busy loop).
            return errno == libc::EAGAIN || errno == libc::EINTR;
        }
        let token = u64::from_le_bytes(data[1..].try_into().unwrap_or([0; 8]));
        match data[0] {
            WATCH if fd >= 0 && tokens.len() < tokens.capacity() => {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                tokens.push(token);
            }
            FORGET => {
                if let Some(i) = tokens.iter().position(|&t| t == token) {
                    // SAFETY: the fd is the watchdog's own copy of that VM's pidfd.
                    unsafe { libc::close(fds[i + 2].fd) };
                    fds.swap_remove(i + 2);
                    tokens.swap_remove(i);
                }
            }
            _ if fd >= 0 => {
                // SAFETY: an fd received with a message this watchdog does not keep.
                unsafe { libc::close(fd) };
            }
            _ => {}
        }
    }
}

/// Closes every fd of the calling process but `a` and `b` (and 0-2).
///
/// # Safety
/// Only for the freshly forked watchdog, whose other fds are copies it must not hold.
unsafe fn close_all_but(a: RawFd, b: RawFd) {
    let (lo, hi) = (a.min(b) as u32, a.max(b) as u32);
    for (first, last) in [
        (3, lo.wrapping_sub(1)),
        (lo + 1, hi - 1),
        (hi + 1, u32::MAX),
    ] {
        if first <= last {
            // SAFETY: close_range on fds this process owns; none is used after.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        }
    }
}
