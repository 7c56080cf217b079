//! Opens files inside a storage tree for reading without following any symbolic link on the way.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// Set once openat2 turned out to be unavailable (kernel before 5.6, or a seccomp filter).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `path` read-only; fails with `ELOOP` when any component of it is a symbolic link.
/// Without openat2 only the last component is checked (`O_NOFOLLOW`).
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

/// Whether an open failed because of a symbolic link.
pub fn is_symlink_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ELOOP)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_links_anywhere_on_the_way() {
        let tmp = tempfile::tempdir().unwrap();
        let top = std::fs::canonicalize(tmp.path()).unwrap();
        let real = top.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("data"), b"x").unwrap();
        std::os::unix::fs::symlink(&real, top.join("via")).unwrap();
        std::os::unix::fs::symlink(real.join("data"), real.join("alias")).unwrap();

        assert!(open_no_symlinks(&real.join("data")).is_ok());
        let last = open_no_symlinks(&real.join("alias")).unwrap_err();
        assert!(is_symlink_error(&last), "{last}");
        assert_eq!(
            symlink_on_the_way(&real.join("alias"), &top),
            real.join("alias")
        );
        let dir_link = top.join("via/data");
        match open_no_symlinks(&dir_link) {
            Err(e) => {
                assert!(is_symlink_error(&e), "{e}");
                assert_eq!(symlink_on_the_way(&dir_link, &top), top.join("via"));
            }
            // Only without openat2 does a folder link on the way go unnoticed.
            Ok(_) => assert!(NO_OPENAT2.load(Ordering::Relaxed)),
        }
    }
}
