//! `--profile FILE`: a CPU profile of the bench's daemon, recorded with `perf record` (Debian's
//! `linux-perf` package) for as long as the daemon's series run, then summed up with `perf
//! report` into the report's "profile" section: the share of samples by command (the daemon's
//! threads, and the jailer and Firecracker it starts), and the hottest symbols of the daemon's
//! own threads. `perf report -i FILE` shows the whole profile afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// A `perf record` of one process and the children it starts.
pub(crate) struct Profile {
    child: Child,
    out: PathBuf,
}

impl Profile {
    /// Starts sampling `pid` (and the threads and children it creates from now on) at 999 Hz,
    /// with call graphs, into `out`.
    pub(crate) fn start(pid: u32, out: &Path) -> anyhow::Result<Self> {
        let child = Command::new("perf")
            .args(["record", "-F", "999", "-g", "--inherit", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf record (install Debian's linux-perf package)")?;
        // perf attaches within a few ms; give it time before the measured work starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self {
            child,
            out: out.to_owned(),
        })
    }

    /// [`Self::start`] when `--profile` gave a file (`out`), for the bench's daemon `pid`.
    pub(crate) fn start_if(out: Option<&Path>, pid: Option<u32>) -> anyhow::Result<Option<Self>> {
        match out {
            Some(out) => Ok(Some(Self::start(pid.context("the daemon runs")?, out)?)),
            None => Ok(None),
        }
    }

    /// Stops the recording and puts its summary into `report` (or a warning saying why not).
    pub(crate) fn finish_into(self, report: &mut super::Report) {
        match self.finish() {
            Ok(lines) => report.profile = lines,
            Err(e) => report.warnings.push(format!("no profile: {e:#}")),
        }
    }

    /// Stops the recording and returns the summary lines.
    fn finish(self) -> anyhow::Result<Vec<String>> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        let out = self.child.wait_with_output()?;
        anyhow::ensure!(
            self.out.is_file(),
            "perf record wrote no {}: {}",
            self.out.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = vec![format!(
            "CPU profile in {} (perf report -i {0}); by command:",
            self.out.display()
        )];
        lines.extend(report(&self.out, &["--sort", "comm"], 12)?);
        lines.push("hottest symbols of the daemon's own threads (self time):".into());
        lines.extend(report(
            &self.out,
            &["--sort", "symbol", "--comms", &daemon_comms(&self.out)?],
            30,
        )?);
        Ok(lines)
    }
}

/// The first `max` entries of a flat `perf report` with `args`.
fn report(data: &Path, args: &[&str], max: usize) -> anyhow::Result<Vec<String>> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "-g", "none", "-i"])
        .arg(data)
        .args(args)
        .output()
        .context("running perf report")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .take(max)
        .map(|l| format!("  {}", l.trim_end()))
        .collect())
}

/// The commands of the profile that are the daemon's threads: all but the jailer, Firecracker
/// and its threads (`fc_api`, `fc_vcpu N`), and perf itself.
fn daemon_comms(data: &Path) -> anyhow::Result<String> {
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "-g",
            "none",
            "--sort",
            "comm",
            "-i",
        ])
        .arg(data)
        .output()?;
    let comms: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .filter(|c| {
            !(c.starts_with("jailer")
                || c.starts_with("firecracker")
                || c.starts_with("fc_")
                || c == "perf")
        })
        .collect();
    anyhow::ensure!(
        !comms.is_empty(),
        "no sample of the daemon in {}",
        data.display()
    );
    Ok(comms.join(","))
}
