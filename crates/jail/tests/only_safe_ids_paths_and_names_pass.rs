//! Property tests of the validators that stand between untrusted input and host paths:
//!
//! - `JailId::new` accepts exactly 1-64 ASCII letters, digits and '-', and an accepted id is a
//!   single, safe path component;
//! - `AssetDirs::open_file` opens a path (any bytes: `..`, `.`, `//`, NUL, not UTF-8, symlinks,
//!   hard links, FIFOs, directories, outside the asset directories) only when it is a regular file
//!   lexically under an asset directory with no symlink on the way, and otherwise answers with an
//!   error naming the field and the path;
//! - `JailSpec::plan` stages a file only under a single-component name of its own, inside the
//!   chroot, and otherwise names the file's field.
//!
//! No panics anywhere.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use jail::cgroup::{CgroupLimits, CgroupVersion, Hierarchy};
use jail::source::AssetDirs;
use jail::spec::{ResourceLimits, StageRequest};
use jail::{JailId, JailSpec};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{FileFailurePersistence, TestRunner};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        source_file: Some(file!()),
        // Failures are kept beside this file, as `<name>.proptest-regressions`.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })
}

/// Runs `test` on `cases` inputs, panicking with the minimal failing input.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner(cases).run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Jail ids.

fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9-]{0,70}",
        2 => "[A-Za-z0-9-]{60,68}",
        2 => ("[A-Za-z0-9-]{0,40}", any::<char>(), "[A-Za-z0-9-]{0,40}")
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        2 => any::<String>(),
        1 => "\\PC{0,70}",
        1 => select(vec![
            ".", "..", "-", "--", "-rf", "/", "a/b", "\0", "a\0", "é", "٣", "Ⅻ", "ａ", "a\u{301}",
            "ß", "İ", " ", "a ", "\t", "\n", "_", "a.b", "~", "%2e%2e",
        ])
        .prop_map(str::to_owned),
    ]
}

#[test]
fn jail_ids_are_exactly_1_to_64_ascii_letters_digits_and_dashes() {
    check(20_000, id_like(), |s| {
        let valid = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !s.starts_with('-');
        match JailId::new(&s) {
            Ok(id) => {
                prop_assert!(valid, "accepted {:?}", s);
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert_eq!(id.to_string(), s.clone());
                // A single, normal path component: it cannot climb out of or into anything.
                let comps: Vec<Component> = Path::new(&s).components().collect();
                prop_assert_eq!(comps, vec![Component::Normal(OsStr::new(&s))]);
                let joined = Path::new("/srv/jailer/firecracker").join(id.as_str());
                prop_assert_eq!(joined.parent(), Some(Path::new("/srv/jailer/firecracker")));
                prop_assert_eq!(
                    serde_json::to_string(&id).unwrap(),
                    serde_json::to_string(&s).unwrap()
                );
            }
            Err(e) => {
                prop_assert!(!valid, "refused {:?}: {}", s, e);
                prop_assert!(!e.to_string().trim().is_empty());
                let bad = s
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'));
                let want = if s.is_empty() {
                    jail::id::IdError::Empty
                } else if let Some(ch) = bad {
                    jail::id::IdError::BadChar { ch }
                } else if s.chars().count() > 64 {
                    jail::id::IdError::TooLong {
                        len: s.chars().count(),
                    }
                } else {
                    jail::id::IdError::LeadingDash
                };
                prop_assert_eq!(e, want);
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Asset paths.

/// A tree with files, directories, symlinks, hard links and a FIFO, inside and outside an asset
/// directory, and the asset directory configurations to try.
struct Tree {
    tmp: tempfile::TempDir,
    /// (the directories as configured, the handle).
    configs: Vec<(Vec<PathBuf>, AssetDirs)>,
}

fn tree() -> Tree {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = t.join("assets");
    std::fs::create_dir_all(a.join("sub/deep")).unwrap();
    std::fs::create_dir_all(a.join("empty")).unwrap();
    std::fs::create_dir_all(t.join("other")).unwrap();
    for (path, mode) in [
        (a.join("a.img"), 0o644),
        (a.join("sub/b.img"), 0o644),
        (a.join("sub/deep/c.img"), 0o600),
        (a.join("sp ace.img"), 0o644),
        (a.join("ünï.img"), 0o644),
        (a.join("..."), 0o644),
        (a.join("a..b"), 0o644),
        (t.join("secret"), 0o600),
        (t.join("private"), 0o600),
        (t.join("shared"), 0o644),
        (t.join("other/x.img"), 0o644),
    ] {
        std::fs::write(&path, b"data").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(a.join(OsStr::from_bytes(b"\xff.img")), b"data").unwrap();
    symlink("../secret", a.join("link.img")).unwrap();
    symlink(t.join("secret"), a.join("abs-link")).unwrap();
    symlink("sub", a.join("linkdir")).unwrap();
    symlink("nowhere", a.join("dangling")).unwrap();
    symlink(&a, t.join("alias")).unwrap();
    symlink("../other", a.join("sub/out")).unwrap();
    std::fs::hard_link(t.join("private"), a.join("private-link.img")).unwrap();
    std::fs::hard_link(t.join("shared"), a.join("shared-link.img")).unwrap();
    nix::unistd::mkfifo(
        &a.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let configs = [
        vec![a.clone()],
        vec![t.join("alias")],
        vec![t.join("missing"), a.join("sub")],
        vec![t.join("other"), a.clone()],
        vec![],
    ]
    .into_iter()
    .map(|dirs| {
        let handle = AssetDirs::open(&dirs);
        (dirs, handle)
    })
    .collect();
    Tree { tmp, configs }
}

/// Path bytes: a base (inside, beside or outside the asset directory, or relative) and
/// components that exercise every rule.
fn path_bytes(root: PathBuf) -> impl Strategy<Value = Vec<u8>> {
    let root = root.into_os_string().into_vec();
    let base = select(vec![
        "/assets",
        "/alias",
        "/assets/",
        "/assets/.",
        "/assets/sub",
        "/",
        "/other",
        "",
        "/missing",
    ]);
    let component = select(vec![
        &b"a.img"[..],
        b"sub",
        b"b.img",
        b"deep",
        b"c.img",
        b"empty",
        b"link.img",
        b"abs-link",
        b"linkdir",
        b"dangling",
        b"out",
        b"x.img",
        b"fifo",
        b"private-link.img",
        b"shared-link.img",
        b"sp ace.img",
        "ünï.img".as_bytes(),
        b"\xff.img",
        b"...",
        b"a..b",
        b"..",
        b".",
        b"",
        b"secret",
        b"assets",
        b"alias",
        b"x\0y",
        b"\0",
        b"missing",
    ]);
    (
        base,
        any::<bool>(),
        vec(component, 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(base, rooted, comps, trailing, absolute)| {
            let mut p = Vec::new();
            if !base.is_empty() && rooted {
                p.extend_from_slice(&root);
            }
            p.extend_from_slice(base.as_bytes());
            for c in comps {
                p.push(b'/');
                p.extend_from_slice(c);
            }
            if trailing {
                p.push(b'/');
            }
            if !absolute && p.first() == Some(&b'/') {
                p.remove(0);
            }
            p
        })
}

/// What `open_file` must do with `path`, from the rules alone: `Some(inode)` when it must open
/// that file, `None` when it must refuse.
fn expected_open(dirs: &[PathBuf], path: &Path) -> Option<u64> {
    if path.as_os_str().as_bytes().contains(&0) || !path.is_absolute() {
        return None;
    }
    if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return None;
    }
    // The first existing directory the path lies under, lexically, by either spelling.
    let (dir, rel) = dirs.iter().filter(|d| d.is_dir()).find_map(|d| {
        let canonical = std::fs::canonicalize(d).ok();
        let rel = path
            .strip_prefix(d)
            .ok()
            .or_else(|| canonical.as_deref().and_then(|c| path.strip_prefix(c).ok()))?;
        (!rel.as_os_str().is_empty()).then(|| (d.clone(), rel.to_owned()))
    })?;
    // No symlink on the way, a regular file at the end.
    let comps: Vec<_> = rel.components().collect();
    let mut cur = dir;
    for (i, c) in comps.iter().enumerate() {
        cur.push(c.as_os_str());
        let meta = std::fs::symlink_metadata(&cur).ok()?;
        let last = i + 1 == comps.len();
        if meta.file_type().is_symlink() || (!last && !meta.is_dir()) {
            return None;
        }
        if last {
            let shareable = meta.uid() == 0 && meta.mode() & 0o022 == 0 && meta.mode() & 0o004 != 0;
            return (meta.is_file() && (meta.nlink() == 1 || shareable)).then(|| meta.ino());
        }
    }
    None
}

#[test]
fn asset_paths_open_only_regular_files_under_an_asset_dir_without_symlinks() {
    let t = tree();
    let root = t.tmp.path().to_owned();
    let field = select(vec!["kernel_path", "config.rootfs_path", "drives[2].path"]);
    check(
        10_000,
        (0..t.configs.len(), path_bytes(root), field),
        |(config, bytes, field)| {
            let (dirs, assets) = &t.configs[config];
            let path = PathBuf::from(OsString::from_vec(bytes));
            let want = expected_open(dirs, &path);
            match assets.open_file(field, &path) {
                Ok(source) => {
                    prop_assert_eq!(Some(source.meta.ino), want, "opened {:?}", path);
                    prop_assert_eq!(source.meta.len, 4);
                }
                Err(e) => {
                    prop_assert_eq!(want, None, "refused {:?} with {}", path, e);
                    prop_assert_eq!(e.field.as_str(), field);
                    let shown = e.to_string();
                    prop_assert!(
                        shown.starts_with(&format!("invalid {field}: ")),
                        "{}",
                        shown
                    );
                    prop_assert!(
                        e.problem.contains(&path.display().to_string()),
                        "{} does not show the path {:?}",
                        shown,
                        path
                    );
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Staging names.

fn staged_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9._-]{1,12}",
        2 => select(vec![
            "kernel", "rootfs", "drive1", ".", "..", "", "/", "a/b", "/a", "a/", "a\0b", "\0",
            "...", ".hidden", " ", "é", "..a", "a..",
        ])
        .prop_map(str::to_owned),
        1 => "[./a]{1,4}",
        1 => "\\PC{0,8}",
        1 => any::<String>(),
        1 => "[a-z]{250,260}",
    ]
}

fn spec(files: Vec<StageRequest>, jailed: bool) -> JailSpec {
    JailSpec {
        id: JailId::new("vm-props").unwrap(),
        jailed,
        jailer_binary: "/usr/local/bin/jailer".into(),
        exec_file: "/usr/local/bin/firecracker".into(),
        uid: 10000,
        gid: 10000,
        chroot_base_dir: "/srv/jailer".into(),
        cgroup_version: CgroupVersion::V2,
        parent_cgroup: "warden".into(),
        limits: CgroupLimits {
            memory_bytes: Some(256 << 20),
            cpu_quota_pct: Some(100),
            pids_max: Some(64),
            ..Default::default()
        },
        explicit_limits: vec![],
        strict_cgroups: false,
        resource_limits: ResourceLimits::default(),
        fsize_headroom: None,
        new_pid_ns: true,
        netns: None,
        make_netns: false,
        net: None,
        files,
        sys_root: jail::spec::SYS.into(),
    }
}

/// Whether `name` can be one file directly in a directory on Linux.
fn single_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= 255
}

#[test]
fn staged_files_get_single_component_names_of_their_own_inside_the_chroot() {
    let tmp = tempfile::tempdir().unwrap();
    let cgroup = tmp.path().join("cgroup");
    std::fs::create_dir(&cgroup).unwrap();
    std::fs::write(cgroup.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    let hierarchy =
        Hierarchy::parse(&format!("cgroup2 {} cgroup2 rw 0 0\n", cgroup.display())).unwrap();
    let source = tmp.path().join("kernel");
    std::fs::write(&source, b"kernel").unwrap();
    let opened = jail::source::Source::open("kernel_path", &source).unwrap();
    let names = vec(
        (staged_name(), any::<bool>(), 0usize..3, any::<bool>()),
        1..5,
    );
    check(4000, (names, any::<bool>()), |(names, jailed)| {
        // Sometimes the same name again.
        let files: Vec<StageRequest> = names
            .iter()
            .enumerate()
            .map(|(i, (name, writable, again, preopened))| StageRequest {
                source: source.clone(),
                name: if *again == 0 && i > 0 {
                    names[i - 1].0.clone()
                } else {
                    name.clone()
                },
                writable: *writable,
                field: format!("files[{i}]"),
                opened: preopened.then(|| opened.clone()),
            })
            .collect();
        let first_bad = files.iter().enumerate().find(|(i, f)| {
            !single_file_name(&f.name) || files[..*i].iter().any(|g| g.name == f.name)
        });
        match spec(files.clone(), jailed).plan(&hierarchy) {
            Ok(plan) => {
                prop_assert!(first_bad.is_none(), "planned {:?}", first_bad);
                prop_assert_eq!(plan.staged.len(), files.len());
                for (f, s) in files.iter().zip(&plan.staged) {
                    prop_assert_eq!(s.dest.parent(), Some(plan.root_dir.as_path()));
                    prop_assert_eq!(s.dest.file_name(), Some(OsStr::new(&f.name)));
                    let comps: Vec<Component> = Path::new(&f.name).components().collect();
                    prop_assert_eq!(comps, vec![Component::Normal(OsStr::new(&f.name))]);
                    if jailed {
                        prop_assert_eq!(&s.path_in_jail, &Path::new("/").join(&f.name));
                    } else {
                        prop_assert_eq!(&s.path_in_jail, &s.dest);
                    }
                    prop_assert_eq!(plan.path_in_jail(&f.name), Some(s.path_in_jail.as_path()));
                }
            }
            Err(e) => {
                let Some((i, f)) = first_bad else {
                    return Err(TestCaseError::fail(format!("refused good names: {e}")));
                };
                prop_assert_eq!(&e.field, &format!("files[{i}]"));
                prop_assert!(
                    e.problem.contains(&format!("{:?}", f.name)),
                    "{} does not name {:?}",
                    e,
                    f.name
                );
            }
        }
        Ok(())
    });
}
