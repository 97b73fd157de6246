//! The jailer and Firecracker binaries: found, executable, their `--version`, statically linked
//! (read from the ELF program headers: no `PT_INTERP`, no `DT_NEEDED`), and the same release.
//!
//! Static linking matters because the jailer copies Firecracker into an empty chroot: a
//! dynamically linked Firecracker finds no loader or libc there and dies before its first line.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{os_reason, Check};

/// How long `<binary> --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// The release `scripts/setup-assets.sh` pins; named in the fixes.
const PINNED: &str = "v1.12.1";

/// How an executable is linked, as its ELF headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter and no needed libraries (including static-pie).
    Static,
    /// Needs a dynamic loader and/or shared libraries.
    Dynamic {
        /// The `PT_INTERP` loader, e.g. `/lib64/ld-linux-x86-64.so.2`.
        interpreter: Option<String>,
        /// The `DT_NEEDED` libraries, e.g. `libc.so.6`.
        needed: Vec<String>,
    },
    /// Not a 64-bit ELF file (a script, a 32-bit binary, garbage); says what it is instead.
    NotElf(String),
}

struct Binary<'a> {
    /// Check name, `jailer` or `firecracker`.
    name: &'static str,
    /// What `--version` prints first, `Jailer` or `Firecracker`.
    product: &'static str,
    path: &'a Path,
    /// Where the fixes tell the user to put it.
    install: &'static str,
    /// The CLI flag and environment variable that point at it.
    flag: &'static str,
    env: &'static str,
}

pub(super) fn check(jailer: &Path, firecracker: &Path) -> Vec<Check> {
    let bins = [
        Binary {
            name: "jailer",
            product: "Jailer",
            path: jailer,
            install: "/usr/local/bin/jailer",
            flag: "--jailer-binary",
            env: "WARDEN_JAILER_BINARY",
        },
        Binary {
            name: "firecracker",
            product: "Firecracker",
            path: firecracker,
            install: "/usr/local/bin/firecracker",
            flag: "--firecracker-binary",
            env: "WARDEN_FIRECRACKER_BINARY",
        },
    ];
    let mut checks = Vec::new();
    let mut versions = Vec::new();
    for bin in &bins {
        let (check, version) = found_and_version(bin);
        checks.push(check);
        if version.is_some() || bin.path.is_file() {
            checks.push(linkage(bin));
        }
        versions.push(version);
    }
    if let [Some(j), Some(f)] = &versions[..] {
        let (jp, fp) = (jailer.display(), firecracker.display());
        checks.push(if j == f {
            Check::pass("versions", format!("jailer and firecracker are both {j}"))
        } else {
            Check::fail(
                "versions",
                format!("version mismatch: jailer {jp} is {j} but firecracker {fp} is {f}; use the two binaries of one release"),
                format!(
                    "install jailer and firecracker from the same release (scripts/setup-assets.sh fetches {PINNED}): \
                     cp release-{PINNED}-$(uname -m)/jailer-{PINNED}-$(uname -m) {jp} && \
                     cp release-{PINNED}-$(uname -m)/firecracker-{PINNED}-$(uname -m) {fp}"
                ),
            )
        });
    }
    checks
}

fn install_fix(bin: &Binary<'_>) -> String {
    format!(
        "run scripts/setup-assets.sh, or install {} {PINNED} from its release archive: \
         install -m 755 -o root -g root release-{PINNED}-$(uname -m)/{}-{PINNED}-$(uname -m) {}; \
         then pass {} {} (or set {})",
        bin.product, bin.name, bin.install, bin.flag, bin.install, bin.env
    )
}

/// Found, executable, and what `--version` says.
fn found_and_version(bin: &Binary<'_>) -> (Check, Option<String>) {
    let p = bin.path.display();
    let fail = |detail: String, fix: String| (Check::fail(bin.name, detail, fix), None);
    let meta = match std::fs::metadata(bin.path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return fail(
                format!("{} binary not found: {p} does not exist", bin.product),
                install_fix(bin),
            )
        }
        Err(e) => {
            return fail(
                format!("cannot stat {p}: {}", os_reason(&e)),
                install_fix(bin),
            )
        }
    };
    if !meta.is_file() {
        return fail(format!("{p} is not a regular file"), install_fix(bin));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return fail(
            format!(
                "{p} is not executable (mode {:o})",
                meta.permissions().mode() & 0o7777
            ),
            format!("chmod 755 {p}"),
        );
    }
    if bin.name == "firecracker" {
        let file_name = bin
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !file_name.contains("firecracker") {
            return fail(
                format!("{p}: the jailer refuses an --exec-file whose name does not contain \"firecracker\""),
                format!("cp {p} /usr/local/bin/firecracker and pass --firecracker-binary /usr/local/bin/firecracker"),
            );
        }
    }
    let output = match version_output(bin.path) {
        Ok(o) => o,
        Err(why) => {
            return fail(
                format!("`{p} --version` {why}"),
                format!(
                    "check that {p} is the {} binary for this architecture ({}); {}",
                    bin.product,
                    std::env::consts::ARCH,
                    install_fix(bin)
                ),
            )
        }
    };
    let first = output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_owned();
    let mut words = first.split_whitespace();
    match (words.next(), words.next()) {
        (Some(product), Some(v)) if product == bin.product && v.starts_with('v') => {
            let v = v.to_owned();
            (Check::pass(bin.name, format!("{p}: {first}")), Some(v))
        }
        _ => fail(
            format!(
                "`{p} --version` printed {first:?}, not \"{} vX.Y.Z\": this is not the {}",
                bin.product, bin.name
            ),
            install_fix(bin),
        ),
    }
}

/// Runs `<bin> --version` with a timeout; its stdout, or why it failed.
fn version_output(bin: &Path) -> Result<String, String> {
    let mut attempts = 0;
    let mut child = loop {
        match Command::new(bin)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => break c,
            // A file just written may briefly be open for writing in a child forked meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("cannot be executed: {}", os_reason(&e))),
        }
    };
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.by_ref().take(64 * 1024).read_to_end(&mut buf);
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
            });
        }
        rx
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not exit within {} s",
                    VERSION_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("could not be waited for: {}", os_reason(&e))),
        }
    };
    let grace = Duration::from_secs(1);
    let out = stdout.recv_timeout(grace).unwrap_or_default();
    if !status.success() {
        let err = stderr.recv_timeout(grace).unwrap_or_default();
        let said = err
            .lines()
            .chain(out.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        return Err(format!("failed ({status}): {said}"));
    }
    Ok(out)
}

/// The ELF linkage check.
fn linkage(bin: &Binary<'_>) -> Check {
    let name = match bin.name {
        "jailer" => "jailer-static",
        _ => "firecracker-static",
    };
    let p = bin.path.display();
    match elf_linkage(bin.path) {
        Ok(Linkage::Static) => Check::pass(name, format!("{p} is statically linked")),
        Ok(Linkage::Dynamic {
            interpreter,
            needed,
        }) => {
            let mut what = Vec::new();
            if let Some(i) = interpreter {
                what.push(format!("interpreter {i}"));
            }
            if !needed.is_empty() {
                what.push(format!("needs {}", needed.join(", ")));
            }
            Check::fail(
                name,
                format!(
                    "{p} is dynamically linked ({}): it cannot run inside the empty chroot",
                    what.join("; ")
                ),
                format!(
                    "use the static (musl) release binary instead: {}",
                    install_fix(bin)
                ),
            )
        }
        Ok(Linkage::NotElf(what)) => Check::fail(
            name,
            format!("{p} is not a statically linked ELF executable: {what}"),
            format!(
                "use the static (musl) release binary instead: {}",
                install_fix(bin)
            ),
        ),
        Err(e) => Check::fail(
            name,
            format!("cannot read {p}: {}", os_reason(&e)),
            format!("ls -l {p}"),
        ),
    }
}

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_LOAD: u32 = 1;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

/// Reads the ELF64 program headers of `path` and says how it is linked.
pub fn elf_linkage(path: &Path) -> io::Result<Linkage> {
    let file = File::open(path)?;
    let mut ident = [0u8; 64];
    let n = read_at_most(&file, &mut ident, 0)?;
    if n < 64 || &ident[..4] != b"\x7fELF" {
        let head = &ident[..n.min(16)];
        let what = if head.starts_with(b"#!") {
            let line = String::from_utf8_lossy(&ident[..n]);
            format!("a script ({})", line.lines().next().unwrap_or("#!"))
        } else {
            format!(
                "no ELF header (starts with {:?})",
                String::from_utf8_lossy(head)
            )
        };
        return Ok(Linkage::NotElf(what));
    }
    if ident[4] != 2 {
        return Ok(Linkage::NotElf(
            "a 32-bit ELF file; use the 64-bit release".into(),
        ));
    }
    let le = match ident[5] {
        1 => true,
        2 => false,
        other => {
            return Ok(Linkage::NotElf(format!(
                "an ELF file of unknown byte order {other}"
            )))
        }
    };
    let r = Reader { le };
    let phoff = r.u64(&ident, 32);
    let phentsize = usize::from(r.u16(&ident, 54));
    let phnum = usize::from(r.u16(&ident, 56));
    if phentsize < 56 || phnum > 4096 {
        return Ok(Linkage::NotElf(
            "an ELF file with malformed program headers".into(),
        ));
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    file.read_exact_at(&mut phdrs, phoff)?;
    let mut interpreter = None;
    let mut dynamic = None;
    let mut loads = Vec::new();
    for ph in phdrs.chunks_exact(phentsize) {
        let (kind, offset, vaddr, filesz) =
            (r.u32(ph, 0), r.u64(ph, 8), r.u64(ph, 16), r.u64(ph, 32));
        match kind {
            PT_INTERP => {
                let mut buf = vec![0u8; filesz.min(4096) as usize];
                file.read_exact_at(&mut buf, offset)?;
                interpreter = Some(c_str(&buf));
            }
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            PT_LOAD => loads.push((vaddr, offset, filesz)),
            _ => {}
        }
    }
    let mut needed = Vec::new();
    if let Some((offset, size)) = dynamic {
        let mut buf = vec![0u8; size.min(1 << 20) as usize];
        file.read_exact_at(&mut buf, offset)?;
        let mut needed_offsets = Vec::new();
        let mut strtab = None;
        for entry in buf.chunks_exact(16) {
            match r.u64(entry, 0) {
                DT_NULL => break,
                DT_NEEDED => needed_offsets.push(r.u64(entry, 8)),
                DT_STRTAB => strtab = Some(r.u64(entry, 8)),
                _ => {}
            }
        }
        // DT_STRTAB is a virtual address: find the file offset through the PT_LOAD segments.
        let strtab_offset = strtab.and_then(|addr| {
            loads
                .iter()
                .find(|(va, _, sz)| addr >= *va && addr < va + sz)
                .map(|(va, off, _)| addr - va + off)
        });
        for name_offset in needed_offsets {
            let name = strtab_offset
                .and_then(|base| {
                    let mut buf = [0u8; 256];
                    let n = read_at_most(&file, &mut buf, base + name_offset).ok()?;
                    Some(c_str(&buf[..n]))
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "a shared library".to_owned());
            needed.push(name);
        }
    }
    Ok(if interpreter.is_none() && needed.is_empty() {
        Linkage::Static
    } else {
        Linkage::Dynamic {
            interpreter,
            needed,
        }
    })
}

/// Reads into `buf` from `offset` until it is full or the file ends; the bytes read.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn c_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

struct Reader {
    le: bool,
}

impl Reader {
    fn bytes<const N: usize>(&self, buf: &[u8], at: usize) -> [u8; N] {
        buf[at..at + N].try_into().expect("in bounds")
    }
    fn u16(&self, buf: &[u8], at: usize) -> u16 {
        let b = self.bytes(buf, at);
        if self.le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    }
    fn u32(&self, buf: &[u8], at: usize) -> u32 {
        let b = self.bytes(buf, at);
        if self.le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    }
    fn u64(&self, buf: &[u8], at: usize) -> u64 {
        let b = self.bytes(buf, at);
        if self.le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        }
    }
}
