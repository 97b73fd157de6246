//! A VM's serial console and Firecracker's own output, kept bounded.
//!
//! A guest can write its console flat out for as long as it runs, so nothing here grows without
//! limit: captured console bytes keep only the newest `max`; a console file rotates into one
//! older generation (`<file>.1`) once it passes half of `max`; captured stderr keeps its last
//! 64 KiB; and an exit reads only the end of a log ([`read_tail`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Notify};

use super::exit::Exit;

/// How much of a log an exit reads: its end, never the whole file.
pub(crate) const TAIL_BYTES: u64 = 64 * 1024;

/// How much of Firecracker's stderr is kept in memory.
const STDERR_KEPT: usize = 64 * 1024;

/// Serial console bytes received so far (or the file they go to), the newest `max` of them.
#[derive(Debug, Default)]
pub(crate) struct SerialBuf {
    bytes: Mutex<Vec<u8>>,
    more: Notify,
    file: Option<PathBuf>,
    max: usize,
}

/// The file a serial log rotates into (one generation is kept).
pub(crate) fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Once `path` is larger than `half`, moves its content to [`rotated`] (replacing the older
/// generation) and truncates it; returns whether it did. Firecracker appends (`O_APPEND`), so
/// its next write lands at the new end.
fn rotate_if_over(path: &Path, half: u64) -> std::io::Result<bool> {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() > half) {
        return Ok(false);
    }
    std::fs::copy(path, rotated(path))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)?;
    Ok(true)
}

impl SerialBuf {
    /// Console output that goes to `file` (none: kept in memory), bounded to `max` on disk.
    pub(crate) fn new(file: Option<PathBuf>, max: usize) -> Self {
        Self {
            file,
            max,
            ..Default::default()
        }
    }

    /// Whether the console goes to a file (which then needs [`SerialBuf::keep_bounded`]).
    pub(crate) fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Adds console bytes, keeping only the newest `max`: a guest flooding its console cannot
    /// grow our memory.
    pub(crate) fn push(&self, chunk: &[u8]) {
        {
            let mut b = self.bytes.lock().unwrap();
            b.extend_from_slice(chunk);
            if b.len() > self.max {
                let cut = b.len() - self.max;
                b.drain(..cut);
            }
        }
        self.more.notify_waiters();
    }

    pub(crate) fn text(&self) -> String {
        if let Some(f) = &self.file {
            let mut all = std::fs::read(rotated(f)).unwrap_or_default();
            all.extend(std::fs::read(f).unwrap_or_default());
            return String::from_utf8_lossy(&all).into_owned();
        }
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Keeps the serial log file at most `max` bytes on disk in all: once it passes half of
    /// that, it rotates ([`rotate_if_over`]). Checked until the VM ends, every 200 ms once the
    /// file is within [`MAX_CONSOLE_RATE`] × 200 ms of half (a guest writing its console flat
    /// out, about 125 KB/s here, overshoots by a few tens of KiB at most), and less often while
    /// it is further away, so that no guest reaches half before the next check. A timer per VM
    /// every 200 ms was a steady cost of a daemon holding 1,000 idle VMs.
    pub(crate) async fn keep_bounded(self: Arc<Self>, mut exit: watch::Receiver<Option<Exit>>) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let half = (self.max / 2).max(4096) as u64;
        loop {
            if exit.borrow().is_some() {
                return;
            }
            // A stat is cheap; the copy is not, and runs off the async workers.
            let mut len = std::fs::metadata(&path).map_or(0, |m| m.len());
            if len > half {
                let p = path.clone();
                let _ = tokio::task::spawn_blocking(move || rotate_if_over(&p, half)).await;
                len = std::fs::metadata(&path).map_or(0, |m| m.len());
            }
            if tokio::time::timeout(next_check(half, len), exit.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return;
            }
        }
    }

    /// Waits until the output contains `needle`, up to `timeout`.
    pub(crate) async fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.more.notified();
            if self.text().contains(needle) {
                return true;
            }
            // A file has no notifications: poll it.
            let wait = if self.file.is_some() {
                tokio::time::Instant::now() + Duration::from_millis(5)
            } else {
                deadline
            };
            if tokio::time::timeout_at(wait.min(deadline), notified)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.text().contains(needle);
            }
        }
    }
}

/// The fastest a guest is taken to write its console, in bytes per second: 32 times the rate of
/// a guest writing flat out here.
const MAX_CONSOLE_RATE: u64 = 4 << 20;

/// When to look at a serial log of `len` bytes again, which rotates past `half`: before a guest
/// writing at [`MAX_CONSOLE_RATE`] could pass `half`, between 200 ms and 5 s from now.
fn next_check(half: u64, len: u64) -> Duration {
    let headroom = half.saturating_sub(len);
    Duration::from_millis(headroom.saturating_mul(1000) / MAX_CONSOLE_RATE)
        .clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// Reads Firecracker's stdout (the console) into `buf`, echoing it to our stdout when `echo`.
pub(crate) fn spawn_serial_reader(out: std::process::ChildStdout, buf: Arc<SerialBuf>, echo: bool) {
    let Ok(mut out) = tokio::process::ChildStdout::from_std(out) else {
        return;
    };
    tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        loop {
            match out.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo {
                        use std::io::Write;
                        let mut so = std::io::stdout().lock();
                        let _ = so.write_all(&chunk[..n]);
                        let _ = so.flush();
                    }
                    buf.push(&chunk[..n]);
                }
            }
        }
    });
}

/// Appends `chunk` to `v`, keeping its last `max` bytes.
fn keep_last(v: &mut Vec<u8>, chunk: &[u8], max: usize) {
    v.extend_from_slice(chunk);
    let len = v.len();
    if len > max {
        v.drain(..len - max);
    }
}

/// Reads Firecracker's (or the jailer's) stderr into `into`, its last 64 KiB.
pub(crate) fn spawn_stderr_reader(
    err: std::process::ChildStderr,
    into: Arc<Mutex<Vec<u8>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut err) = tokio::process::ChildStderr::from_std(err) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        while let Ok(n) = err.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            keep_last(&mut into.lock().unwrap(), &chunk[..n], STDERR_KEPT);
        }
    })
}

/// The last `max` bytes of a file (lossily as text), or nothing.
pub(crate) fn read_tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last lines of a process's output, for error messages.
pub(crate) fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_log_far_from_its_bound_is_looked_at_less_often_but_never_too_late() {
        let half = 8 << 20;
        // An idle VM's small log under the default bound: every 2 s, not every 200 ms.
        assert_eq!(next_check(half, 4096), Duration::from_millis(1999));
        // Near the bound, or past it, or with a small bound: every 200 ms, as before.
        assert_eq!(next_check(half, half - 1000), Duration::from_millis(200));
        assert_eq!(next_check(half, half + 1), Duration::from_millis(200));
        assert_eq!(next_check(32 << 10, 0), Duration::from_millis(200));
        // Never longer than 5 s, whatever the bound.
        assert_eq!(next_check(1 << 40, 0), Duration::from_secs(5));
        // And never so long that a guest writing at the fastest rate reaches half first.
        for len in (0..half).step_by(1 << 16) {
            let wait = next_check(half, len);
            let written = MAX_CONSOLE_RATE as f64 * wait.as_secs_f64();
            assert!(
                len as f64 + written <= half as f64 || wait == Duration::from_millis(200),
                "{len}"
            );
        }
    }

    #[test]
    fn captured_console_keeps_the_newest_bytes() {
        let b = SerialBuf::new(None, 8);
        b.push(b"hello ");
        assert_eq!(b.text(), "hello ");
        b.push(b"world!");
        assert_eq!(b.text(), "o world!");
        b.push(b"0123456789");
        assert_eq!(b.text(), "23456789");
    }

    #[test]
    fn a_console_file_rotates_into_one_older_generation_past_half_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "a".repeat(100)).unwrap();
        assert!(!rotate_if_over(&log, 100).unwrap(), "not over yet");
        std::fs::write(&log, "b".repeat(101)).unwrap();
        assert!(rotate_if_over(&log, 100).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(
            std::fs::read_to_string(rotated(&log)).unwrap(),
            "b".repeat(101)
        );
        std::fs::write(&log, "c".repeat(150)).unwrap();
        assert!(rotate_if_over(&log, 100).unwrap());
        assert_eq!(
            std::fs::read_to_string(rotated(&log)).unwrap(),
            "c".repeat(150),
            "only one older generation is kept"
        );
        std::fs::write(&log, "tail").unwrap();
        let b = SerialBuf::new(Some(log.clone()), 200);
        assert_eq!(b.text(), "c".repeat(150) + "tail", "older generation first");
        assert!(!rotate_if_over(&dir.path().join("missing"), 1).unwrap());
    }

    #[test]
    fn stderr_keeps_its_last_bytes_and_logs_are_read_from_their_end() {
        let mut v = Vec::new();
        keep_last(&mut v, b"abcdef", 4);
        assert_eq!(v, b"cdef");
        keep_last(&mut v, b"gh", 4);
        assert_eq!(v, b"efgh");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("firecracker.log");
        std::fs::write(&f, "first\nsecond\nthird\n").unwrap();
        assert_eq!(read_tail(&f, 6), "third\n");
        assert_eq!(read_tail(&f, 1000), "first\nsecond\nthird\n");
        assert_eq!(read_tail(&dir.path().join("none"), 10), "");
        let many: String = (1..=10).map(|i| format!("line {i}\n\n")).collect();
        assert_eq!(tail(&many).lines().next(), Some("line 3"));
        assert_eq!(tail(&many).lines().count(), 8);
    }

    #[tokio::test]
    async fn waiting_for_console_output_sees_bytes_pushed_later() {
        let b = Arc::new(SerialBuf::new(None, 1024));
        let b2 = b.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            b2.push(b"WARDEN_MARKER ok\n");
        });
        assert!(b.wait_for("MARKER ok", Duration::from_secs(5)).await);
        assert!(!b.wait_for("never", Duration::from_millis(20)).await);
    }
}
