//! Opens files and folders inside one folder without following a symbolic link at any level
//! (openat2 with RESOLVE_NO_SYMLINKS, or one component at a time where the kernel lacks it).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::Mode;

/// Set once openat2 is found missing (old kernel) or filtered (seccomp): walk components instead.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What a folder entry is, read without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// A FIFO, socket or device: never opened.
    Other,
}

/// A folder that paths are resolved beneath.
#[derive(Debug, Clone)]
pub struct Beneath {
    dir: Arc<OwnedFd>,
}

impl Beneath {
    /// Opens `path` (which may itself be reached through links: it is the user's choice).
    pub fn open(path: &Path) -> io::Result<Beneath> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath { dir: Arc::new(fd) })
    }

    /// Opens `rel` with `flags`; a symbolic link at any level fails with ELOOP, a way out with EXDEV.
    fn resolve(&self, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH);
            match openat2(self.dir.as_fd(), rel, how) {
                Err(Errno::ENOSYS | Errno::EPERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
                other => return other.map_err(io::Error::from),
            }
        }
        self.walk(rel, flags)
    }

    /// The component-by-component way: each folder opened with O_NOFOLLOW.
    fn walk(&self, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        let parts: Vec<&std::ffi::OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(p) => Ok(p),
                _ => Err(io::Error::from(Errno::EXDEV)),
            })
            .collect::<io::Result<_>>()?;
        let Some((last, folders)) = parts.split_last() else {
            return Err(io::Error::from(Errno::ENOENT));
        };
        let mut dir: Option<OwnedFd> = None;
        for part in folders {
            let at = dir.as_ref().map_or(self.dir.as_fd(), |d| d.as_fd());
            let next = openat(
                at,
                *part,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                // O_NOFOLLOW|O_DIRECTORY on a link says ENOTDIR: say it is a link.
                Errno::ENOTDIR => is_link(at, part).unwrap_or(e),
                e => e,
            })?;
            dir = Some(next);
        }
        let at = dir.as_ref().map_or(self.dir.as_fd(), |d| d.as_fd());
        Ok(openat(at, *last, flags, Mode::empty())?)
    }

    /// Opens a regular file for reading; anything else (a link at any level, a FIFO) is refused
    /// without blocking.
    pub fn file(&self, rel: &Path) -> io::Result<File> {
        let fd = self.resolve(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// The size of a regular file, read without opening it for reading.
    pub fn file_len(&self, rel: &Path) -> io::Result<u64> {
        let fd = self.resolve(rel, OFlag::O_PATH)?;
        let meta = File::from(fd).metadata()?;
        // O_PATH|O_NOFOLLOW opens a final link itself: refuse it like any other link.
        if meta.file_type().is_symlink() {
            return Err(io::Error::from(Errno::ELOOP));
        }
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(meta.len())
    }

    /// The entries of a folder (`rel` empty: the top), sorted by name, each with its kind.
    pub fn entries(&self, rel: &Path) -> io::Result<Vec<(OsString, Kind)>> {
        let fd = if rel.as_os_str().is_empty() {
            nix::fcntl::openat(
                self.dir.as_fd(),
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?
        } else {
            match self.resolve(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                Ok(fd) => fd,
                // O_NOFOLLOW|O_DIRECTORY on a final link says ENOTDIR: say it is a link.
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::ENOTDIR)
                        && self.kind(rel).ok() == Some(Kind::Symlink) =>
                {
                    return Err(io::Error::from(Errno::ELOOP));
                }
                Err(e) => return Err(e),
            }
        };
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsString::from(std::ffi::OsStr::from_bytes(name));
            let kind = match entry.file_type() {
                Some(t) => kind_of(t),
                None => self.kind(&rel.join(&name))?,
            };
            out.push((name, kind));
        }
        out.sort();
        Ok(out)
    }

    /// What `rel` is, without following it.
    fn kind(&self, rel: &Path) -> io::Result<Kind> {
        match self.resolve(rel, OFlag::O_PATH) {
            Ok(fd) => {
                let t = File::from(fd).metadata()?.file_type();
                Ok(if t.is_symlink() {
                    Kind::Symlink
                } else if t.is_dir() {
                    Kind::Dir
                } else if t.is_file() {
                    Kind::File
                } else {
                    Kind::Other
                })
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => Ok(Kind::Symlink),
            Err(e) => Err(e),
        }
    }
}

fn kind_of(t: nix::dir::Type) -> Kind {
    use nix::dir::Type;
    match t {
        Type::Directory => Kind::Dir,
        Type::File => Kind::File,
        Type::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// ELOOP when `name` in `dir` is a symbolic link.
fn is_link(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> Option<Errno> {
    let st = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    (st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK).then_some(Errno::ELOOP)
}

/// Opens the absolute `path` read-only, for a reader that has a path, not a folder; fails with
/// `ELOOP` when any component of it is a symbolic link. Without openat2 only the last component
/// is checked (`O_NOFOLLOW`).
pub fn open_no_symlinks(path: &Path) -> io::Result<File> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        match openat2(nix::fcntl::AT_FDCWD, path, how) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG) => {
                NO_OPENAT2.store(true, Ordering::Relaxed)
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NOCTTY)
        .open(path)
}

/// The symbolic link a refused `path` runs into: itself or the nearest folder on the way, below `top`.
pub fn symlink_on_the_way(path: &Path, top: &Path) -> PathBuf {
    path.ancestors()
        .take_while(|p| p.starts_with(top) && *p != top)
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()))
        .last()
        .unwrap_or(path)
        .to_path_buf()
}

/// Whether an error means a symbolic link was met on the way.
pub fn is_symlink_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ELOOP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"hello").unwrap();
        std::fs::create_dir_all(d.path().join("elsewhere")).unwrap();
        std::fs::write(d.path().join("elsewhere/f"), b"secret").unwrap();
        symlink(d.path().join("elsewhere"), d.path().join("a/link")).unwrap();
        symlink("b", d.path().join("a/rel")).unwrap();
        nix::unistd::mkfifo(&d.path().join("a/fifo"), Mode::S_IRWXU).unwrap();
        d
    }

    fn check(b: &Beneath) {
        let mut s = String::new();
        b.file(Path::new("a/b/f"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        assert_eq!(b.file_len(Path::new("a/b/f")).unwrap(), 5);
        for through_link in ["a/link/f", "a/rel/f"] {
            let e = b.file(Path::new(through_link)).unwrap_err();
            assert!(is_symlink_error(&e), "{through_link}: {e}");
        }
        assert!(
            b.file(Path::new("a/fifo")).is_err(),
            "a FIFO is refused at once"
        );
        assert!(b.file(Path::new("../x")).is_err());
        let kinds: Vec<(String, Kind)> = b
            .entries(Path::new("a"))
            .unwrap()
            .into_iter()
            .map(|(n, k)| (n.to_string_lossy().into_owned(), k))
            .collect();
        assert_eq!(
            kinds,
            [
                ("b".to_string(), Kind::Dir),
                ("fifo".to_string(), Kind::Other),
                ("link".to_string(), Kind::Symlink),
                ("rel".to_string(), Kind::Symlink),
            ]
        );
        assert!(is_symlink_error(
            &b.entries(Path::new("a/link")).unwrap_err()
        ));
    }

    #[test]
    fn links_at_any_level_are_refused_with_openat2_and_without() {
        let d = tree();
        let b = Beneath::open(d.path().join("a").parent().unwrap()).unwrap();
        check(&b);
        // The fallback, as on a kernel without openat2.
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        assert!(b.walk(Path::new("a/b/f"), flags).is_ok());
        let e = b.walk(Path::new("a/link/f"), flags).unwrap_err();
        assert!(is_symlink_error(&e), "{e}");
        assert!(b.walk(Path::new("a/../a/b/f"), flags).is_err());
    }
}
