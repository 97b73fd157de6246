//! Where warden finds Firecracker, the jailer and the test guest when no path is configured.
//!
//! `scripts/setup-assets.sh` puts the pinned binaries and the test guest in one folder,
//! `target/assets/` of the source tree. Lookup order for each file: its own environment variable
//! (`WARDEN_JAILER_BINARY`, `WARDEN_FIRECRACKER_BINARY`), then `$WARDEN_ASSETS_DIR`, then an
//! `assets/` folder next to or above the running executable (which finds `target/assets/` from
//! `target/debug/warden` and from test binaries in `target/debug/deps/`), then the system paths
//! the seeds use (`/usr/local/bin`, `/usr/bin`).

use std::path::{Path, PathBuf};

/// The jailer binary.
pub fn jailer() -> PathBuf {
    locate("WARDEN_JAILER_BINARY", "jailer")
}

/// The Firecracker binary.
pub fn firecracker() -> PathBuf {
    locate("WARDEN_FIRECRACKER_BINARY", "firecracker")
}

/// The test guest kernel built from `testguest/`.
pub fn testguest() -> PathBuf {
    locate("WARDEN_TESTGUEST", "testguest")
}

/// The asset folder in use, if one is found.
pub fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WARDEN_ASSETS_DIR") {
        return Some(PathBuf::from(d));
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(4)
        .map(|d| d.join("assets"))
        .find(|d| d.is_dir())
}

fn locate(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    if let Some(p) = dir().map(|d| d.join(name)).filter(|p| p.is_file()) {
        return p;
    }
    for sys in ["/usr/local/bin", "/usr/bin"] {
        let p = Path::new(sys).join(name);
        if p.is_file() {
            return p;
        }
    }
    // Not found anywhere: the seed's default, so the error message names a familiar path.
    Path::new("/usr/local/bin").join(name)
}
