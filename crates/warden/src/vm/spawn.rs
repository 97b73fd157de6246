//! Starting the jailer without copying this process.
//!
//! A fork copies the page tables of a large, many-threaded owner (the daemon, a library user)
//! and write-protects every page it has, so that each page the owner writes afterwards takes a
//! fault, with a TLB shootdown on the other CPUs: profiles put that at a sixth of the daemon's
//! own CPU per VM. `posix_spawn` avoids it (the child shares the parent's memory and the
//! parent's thread waits until the exec), but it has no way to set the parent-death signal in
//! the child, which the jailer needs (see `process`), and std's `Command` falls back to a fork
//! for a `pre_exec` hook. So this module does what `posix_spawn` does, with that one step more:
//! `clone(CLONE_VM | CLONE_VFORK)` onto a stack of its own, and in the child, before `execve`,
//! only system calls on memory prepared beforehand: signal handlers back to their defaults (a
//! handler of the parent must never run in the child), the parent-death signal, a check that
//! the parent is still the one that asked, its own process group, the standard fds, an empty
//! signal mask.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// Where one of the child's standard fds goes.
pub(crate) enum Stdio {
    /// `/dev/null`.
    Null,
    /// A pipe whose reading end the caller gets.
    Pipe,
    /// This fd (a file opened for appending, for instance).
    Fd(OwnedFd),
}

/// A started child.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: u32,
    /// The reading ends of the pipes asked for.
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

/// The child's stack: it runs only until its exec.
const STACK: usize = 64 * 1024;

/// What the child needs, prepared by the parent (the child allocates nothing).
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The fds that become 0, 1 and 2.
    fds: [RawFd; 3],
    parent: libc::pid_t,
    /// The errno of the step that failed, or 0 (the child shares this memory).
    error: AtomicI32,
}

/// Runs `program` with `args` (and this process's environment) in its own process group, with
/// SIGKILL as its parent-death signal, stdin from `/dev/null`. Returns once the child has
/// exec'd; an error from any step before the exec is returned as the error (and the child is
/// reaped).
pub(crate) fn spawn(
    program: &Path,
    args: &[String],
    stdout: Stdio,
    stderr: Stdio,
) -> std::io::Result<Child> {
    let c = |s: &OsStr| {
        CString::new(s.as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte"))
    };
    let program_c = c(program.as_os_str())?;
    let mut argv_c = vec![program_c.clone()];
    for a in args {
        argv_c.push(c(OsStr::new(a))?);
    }
    let envp_c: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let argv: Vec<*const libc::c_char> = argv_c
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = envp_c
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();

    let null: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into();
    // (the child's end, the caller's end)
    let end = |s: Stdio| -> std::io::Result<(OwnedFd, Option<OwnedFd>)> {
        Ok(match s {
            Stdio::Null => (null.try_clone()?, None),
            Stdio::Fd(fd) => (fd, None),
            Stdio::Pipe => {
                let (read, write) = pipe()?;
                (write, Some(read))
            }
        })
    };
    let (out_child, out_ours) = end(stdout)?;
    let (err_child, err_ours) = end(stderr)?;
    // Each of the child's fds above 2, so that putting one in place never overwrites another.
    let (null, out_child, err_child) = (
        above_stdio(null)?,
        above_stdio(out_child)?,
        above_stdio(err_child)?,
    );

    let args = ChildArgs {
        program: program_c.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        fds: [
            null.as_raw_fd(),
            out_child.as_raw_fd(),
            err_child.as_raw_fd(),
        ],
        parent: std::process::id() as libc::pid_t,
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK];
    // The stack grows down; keep its top 16-byte aligned.
    let top = ((stack.as_mut_ptr() as usize + STACK) & !15) as *mut libc::c_void;

    // No signal may reach a handler of ours while the child shares our memory: block them all
    // on this thread (the child inherits the mask and empties it just before its exec).
    // SAFETY: an all-zero sigset_t is a valid value of this plain C type.
    let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: sigfillset and pthread_sigmask write only the sets they are given.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: the child runs `child_main` on its own stack (`stack`, alive until clone returns:
    // with CLONE_VFORK the call returns only once the child has exec'd or exited) and reads
    // `args`, which outlives the call too.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    };
    let clone_error = std::io::Error::last_os_error();
    // SAFETY: restores this thread's signal mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    let failed = args.error.load(Ordering::SeqCst);
    if failed != 0 {
        let mut status = 0;
        // SAFETY: reaps our own child, which has exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(std::io::Error::from_raw_os_error(failed));
    }
    Ok(Child {
        pid: pid as u32,
        stdout: out_ours,
        stderr: err_ours,
    })
}

/// `fd`, or a copy of it numbered 3 or more (close-on-exec) when it is 0, 1 or 2.
fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC makes a new fd of ours from an open one.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The child, from the clone to its exec. It shares the parent's memory, whose thread waits:
/// only system calls, on memory the parent prepared.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive while the parent waits for this exec.
    let a = unsafe { &*(arg as *const ChildArgs) };
    let fail = |errno: i32| -> libc::c_int {
        a.error.store(errno.max(1), Ordering::SeqCst);
        // SAFETY: ends the child without running anything of the parent's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: each call is a plain system call on valid arguments (local structs, fds the
    // parent opened, the parent's NUL-terminated strings and arrays).
    unsafe {
        // A handler of the parent must not run here: back to the default, as posix_spawn does.
        // Ignored signals stay ignored, but SIGPIPE (Rust ignores it) is reset, as std does.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let ignored = old.sa_sigaction == libc::SIG_IGN && sig != libc::SIGPIPE;
            if old.sa_sigaction != libc::SIG_DFL && !ignored {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return fail(*libc::__errno_location());
        }
        // The parent died before the signal was set: it would never come.
        if libc::getppid() != a.parent {
            return fail(libc::ESRCH);
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(*libc::__errno_location());
        }
        // Every fd is above 2 (see `above_stdio`); the copies lose close-on-exec.
        for (target, &fd) in a.fds.iter().enumerate() {
            if libc::dup2(fd, target as RawFd) < 0 {
                return fail(*libc::__errno_location());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(a.program, a.argv, a.envp);
        fail(*libc::__errno_location())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn wait(pid: u32) -> i32 {
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        status
    }

    #[test]
    fn a_child_gets_its_arguments_environment_and_pipes_and_its_exit_status_is_ours_to_read() {
        let child = spawn(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "echo \"out $1 $PATH\"; echo err >&2; read x; exit 3".into(),
                "sh".into(),
                "arg".into(),
            ],
            Stdio::Pipe,
            Stdio::Pipe,
        )
        .unwrap();
        let mut out = String::new();
        std::fs::File::from(child.stdout.unwrap())
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        std::fs::File::from(child.stderr.unwrap())
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(out, format!("out arg {}\n", std::env::var("PATH").unwrap()));
        assert_eq!(err, "err\n");
        let status = wait(child.pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
    }

    #[test]
    fn a_child_has_its_own_process_group_and_a_missing_program_is_an_error() {
        let child = spawn(
            Path::new("/bin/sleep"),
            &["5".into()],
            Stdio::Null,
            Stdio::Null,
        )
        .unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.pid)).unwrap();
        let pgrp = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(2);
        assert_eq!(pgrp, Some(child.pid.to_string().as_str()));
        // SAFETY: kills our own child.
        unsafe { libc::kill(child.pid as libc::pid_t, libc::SIGKILL) };
        wait(child.pid);

        let e = spawn(Path::new("/no/such/program"), &[], Stdio::Null, Stdio::Null).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        // The parent-death signal fires when the thread that started the child ends, which is
        // the one place a test can watch it happen.
        let pid = std::thread::spawn(|| {
            spawn(
                Path::new("/bin/sleep"),
                &["30".into()],
                Stdio::Null,
                Stdio::Null,
            )
            .unwrap()
            .pid
        })
        .join()
        .unwrap();
        let status = wait(pid);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "status {status}"
        );
    }
}
