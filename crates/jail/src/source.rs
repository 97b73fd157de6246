//! Opening the files a VM boots from, once, safely, at the moment of use.
//!
//! A path is resolved exactly once: the file is opened and everything after (the checks, the
//! hard-link or copy into the jail) works from that open file, so swapping the path for a
//! symlink, or a parent directory for a link to `/etc`, after the checks changes nothing.
//!
//! With asset directories (the daemon's `asset_dirs`), a path must lie lexically under one of
//! them and is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` relative to an `O_PATH` handle of that directory: no component may be
//! a symlink and nothing may resolve outside it. Without them (the library, `warden run`, whose
//! caller names its own files), the path is resolved once, when it is opened.
//!
//! Either way the file is first opened `O_PATH` (which never blocks and never opens a device or
//! FIFO), checked to be a regular file, and only then re-opened for reading. A file with more
//! than one hard link is refused unless linking it gave nobody anything: it must be root's,
//! readable by everyone and writable by nobody else (a link to `/etc/shadow` is refused).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::spec::SpecError;

/// An open source file and what it was when opened.
#[derive(Debug, Clone)]
pub struct Source {
    file: Arc<File>,
    /// Its metadata, from the open file.
    pub meta: SourceMeta,
}

/// What staging needs to know of a source, read from the open file (`fstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceMeta {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Hard links.
    pub nlink: u64,
    /// Length in bytes.
    pub len: u64,
    /// Space allocated, in bytes (less than `len` for a sparse file).
    pub allocated: u64,
}

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.meta == other.meta
    }
}

impl Eq for Source {}

impl Source {
    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Opens `path` for staging, resolving it (symlinks included) once, now: the caller names
    /// its own files (the library, `warden run`). Untrusted paths go through
    /// [`AssetDirs::open_file`].
    pub fn open(field: &str, path: &Path) -> Result<Self, SpecError> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            SpecError::new(field, format!("{} contains a NUL byte", path.display()))
        })?;
        // SAFETY: a valid C string; the result is a new fd or -1.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        let fd = own(fd).map_err(|e| open_error(field, path, &e))?;
        Self::from_path_fd(field, path, fd)
    }

    fn from_path_fd(field: &str, shown: &Path, fd: OwnedFd) -> Result<Self, SpecError> {
        let meta = File::from(fd.try_clone().map_err(|e| open_error(field, shown, &e))?)
            .metadata()
            .map_err(|e| open_error(field, shown, &e))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(SpecError::new(
                field,
                format!(
                    "{} is a symbolic link; give the path of the file itself",
                    shown.display()
                ),
            ));
        }
        if kind.is_dir() {
            return Err(SpecError::new(
                field,
                format!("{} is a directory; give an image file", shown.display()),
            ));
        }
        if !kind.is_file() {
            return Err(SpecError::new(
                field,
                format!(
                    "{} is not a regular file (a device, FIFO or socket); give an image file",
                    shown.display()
                ),
            ));
        }
        let meta = SourceMeta {
            dev: meta.dev(),
            ino: meta.ino(),
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
            nlink: meta.nlink(),
            len: meta.len(),
            allocated: meta.blocks() * 512,
        };
        if meta.nlink > 1 && !(meta.uid == 0 && meta.mode & 0o022 == 0 && meta.mode & 0o004 != 0) {
            return Err(SpecError::new(
                field,
                format!(
                    "{} has {} hard links and is not a root-owned, world-readable file that only \
                     root can write; give a file with a single link (copy it)",
                    shown.display(),
                    meta.nlink
                ),
            ));
        }
        // Re-open the checked inode for reading through its O_PATH handle (never the path).
        let proc_path = format!("/proc/self/fd/{}\0", fd.as_raw_fd());
        // SAFETY: a NUL-terminated path; the result is a new fd or -1.
        let rd = unsafe {
            libc::open(
                proc_path.as_ptr().cast(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        let rd = own(rd).map_err(|e| open_error(field, shown, &e))?;
        Ok(Self {
            file: Arc::new(File::from(rd)),
            meta,
        })
    }
}

fn own(fd: i32) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn open_error(field: &str, shown: &Path, e: &io::Error) -> SpecError {
    let why = match e.raw_os_error() {
        Some(libc::ENOENT) => "does not exist; give the path of an existing file".to_owned(),
        Some(libc::ELOOP) => {
            "goes through a symbolic link; give the real path (links are never followed)".into()
        }
        Some(libc::EXDEV) => "resolves outside its asset directory; give a file inside it".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "cannot be opened (permission denied); check its permissions".into()
        }
        _ => format!("cannot be opened ({e})"),
    };
    SpecError::new(field, format!("{} {why}", shown.display()))
}

/// The directories sources must come from, held open (`O_PATH`).
#[derive(Debug, Clone)]
pub struct AssetDirs {
    dirs: Vec<(PathBuf, Option<PathBuf>, Arc<OwnedFd>)>,
    shown: Vec<PathBuf>,
}

impl AssetDirs {
    /// Opens every directory that exists (a missing one holds nothing).
    pub fn open(dirs: &[PathBuf]) -> Self {
        let mut out = Vec::new();
        for d in dirs {
            let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: a valid C string; the result is a new fd or -1.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if let Ok(fd) = own(fd) {
                let canonical = std::fs::canonicalize(d).ok().filter(|c| c != d);
                out.push((d.clone(), canonical, Arc::new(fd)));
            }
        }
        Self {
            dirs: out,
            shown: dirs.to_vec(),
        }
    }

    /// Opens `path`, which must lie under one of the directories, beneath it.
    pub fn open_file(&self, field: &str, path: &Path) -> Result<Source, SpecError> {
        let list = || {
            if self.shown.is_empty() {
                "none configured".to_owned()
            } else {
                self.shown
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
        {
            return Err(SpecError::new(
                field,
                format!(
                    "{} is not a plain absolute path; give /dir/file under an asset directory ({})",
                    path.display(),
                    list()
                ),
            ));
        }
        let found = self.dirs.iter().find_map(|(d, canonical, fd)| {
            let rel = path
                .strip_prefix(d)
                .ok()
                .or_else(|| canonical.as_deref().and_then(|c| path.strip_prefix(c).ok()))?;
            (!rel.as_os_str().is_empty()).then(|| (rel.to_owned(), fd.clone()))
        });
        let Some((rel, dir)) = found else {
            return Err(SpecError::new(
                field,
                format!(
                    "{} is outside the asset directories ({}); put the file there or add its directory to asset_dirs",
                    path.display(),
                    list()
                ),
            ));
        };
        let c = std::ffi::CString::new(rel.as_os_str().as_encoded_bytes()).map_err(|_| {
            SpecError::new(field, format!("{} contains a NUL byte", path.display()))
        })?;
        let mut how: libc::open_how = unsafe {
            // SAFETY: open_how is plain old data; zero is a valid value for every field.
            std::mem::zeroed()
        };
        how.flags = (libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: openat2 reads `how` (of the size given) and the C string during the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        } as i32;
        let fd = own(fd).map_err(|e| open_error(field, path, &e))?;
        Source::from_path_fd(field, path, fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, AssetDirs) {
        let tmp = tempfile::tempdir().unwrap();
        let assets = tmp.path().join("assets");
        std::fs::create_dir_all(assets.join("sub")).unwrap();
        std::fs::write(assets.join("sub/disk.img"), b"disk").unwrap();
        std::fs::write(tmp.path().join("secret"), b"secret").unwrap();
        let dirs = AssetDirs::open(&[assets]);
        (tmp, dirs)
    }

    #[test]
    fn a_file_under_an_asset_directory_opens() {
        let (tmp, dirs) = setup();
        let s = dirs
            .open_file("drive", &tmp.path().join("assets/sub/disk.img"))
            .unwrap();
        assert_eq!(s.meta.len, 4);
        let mut buf = String::new();
        use std::io::Read;
        (&*s.file).read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "disk");
    }

    #[test]
    fn symlinks_escapes_and_dots_are_refused_naming_the_field() {
        let (tmp, dirs) = setup();
        let a = tmp.path().join("assets");
        symlink(tmp.path().join("secret"), a.join("link.img")).unwrap();
        symlink(tmp.path(), a.join("up")).unwrap();
        for (path, want) in [
            (a.join("link.img"), "symbolic link"),
            (a.join("up/secret"), "symbolic link"),
            (a.join("sub/../../secret"), "not a plain absolute path"),
            (tmp.path().join("secret"), "outside the asset directories"),
            (a.join("missing"), "does not exist"),
            (a.join("sub"), "is a directory"),
        ] {
            let e = dirs.open_file("config.rootfs_path", &path).unwrap_err();
            assert_eq!(e.field, "config.rootfs_path");
            assert!(e.to_string().contains(want), "{path:?}: {e}");
            assert!(!e.to_string().contains("/secret\"") || want != "symbolic link");
        }
    }

    #[test]
    fn a_parent_swapped_for_a_symlink_after_the_check_is_refused() {
        let (tmp, dirs) = setup();
        let a = tmp.path().join("assets");
        dirs.open_file("f", &a.join("sub/disk.img")).unwrap();
        std::fs::rename(a.join("sub"), a.join("old")).unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        std::fs::write(tmp.path().join("etc/disk.img"), b"shadow").unwrap();
        symlink(tmp.path().join("etc"), a.join("sub")).unwrap();
        let e = dirs.open_file("f", &a.join("sub/disk.img")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn fifos_never_block_and_extra_hard_links_to_private_files_are_refused() {
        let (tmp, dirs) = setup();
        let a = tmp.path().join("assets");
        nix::unistd::mkfifo(
            &a.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = dirs.open_file("f", &a.join("fifo")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let private = tmp.path().join("private");
        std::fs::write(&private, b"p").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::hard_link(&private, a.join("linked.img")).unwrap();
        let e = dirs.open_file("f", &a.join("linked.img")).unwrap_err();
        assert!(e.to_string().contains("2 hard links"), "{e}");
        // A root-owned, world-readable file that only root writes may be shared by links.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        dirs.open_file("f", &a.join("linked.img")).unwrap();
    }
}
