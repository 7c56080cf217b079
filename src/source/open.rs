//! Opens SOURCE as whatever it is, told by content: a storage tree folder, a plain or compressed tar of one, or a folder of layouts.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::archive_tree::ArchiveTree;
use super::layouts::LayoutTree;
use super::tar_stream::{self, Compression, KeepMetadata};
use super::{Source, SourceError, StorageTree, cache, extract};
use crate::progress::Progress;

/// What a command reads from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Repositories, tags, manifests, configs and blob sizes (`list`, `validate`): a compressed
    /// archive is read into memory and nothing is written.
    Metadata,
    /// Blob bytes too (`push`, `export`, `verify`): a compressed archive is extracted into a cache folder.
    Blobs,
}

/// How to open SOURCE.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions<'a> {
    /// Where the tree is inside SOURCE (a folder or an archive holding several).
    pub subpath: Option<&'a str>,
    pub needs: Needs,
    /// Base of the cache folders for compressed archives (default under the user cache folder).
    pub cache_dir: Option<&'a Path>,
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Tar,
    Compressed(Compression),
    Unsupported(&'static str),
    Unknown,
}

/// Tells a tar, gzip, zstd or xz file (and a few archives ferry cannot read) by its first bytes.
pub fn sniff(path: &Path) -> io::Result<FileKind> {
    let mut head = [0u8; 512];
    let mut file = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        FileKind::Compressed(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        FileKind::Compressed(Compression::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        FileKind::Compressed(Compression::Xz)
    } else if head.starts_with(b"BZh") {
        FileKind::Unsupported("bzip2")
    } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        FileKind::Unsupported("lz4")
    } else if head.starts_with(b"PK\x03\x04") {
        FileKind::Unsupported("zip")
    } else if head.len() == 512 && (&head[257..262] == b"ustar" || tar_checksum_ok(head)) {
        FileKind::Tar
    } else {
        FileKind::Unknown
    })
}

/// Old (v7) tar headers have no magic: a correct header checksum tells them.
fn tar_checksum_ok(block: &[u8]) -> bool {
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == stored && block.iter().any(|b| *b != 0)
}

/// Opens SOURCE for a command.
pub fn open(path: &Path, options: &OpenOptions) -> Result<Box<dyn Source>, SourceError> {
    let meta = fs::metadata(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => SourceError::NotFound {
            path: path.to_path_buf(),
        },
        _ => SourceError::Io {
            path: path.to_path_buf(),
            error,
        },
    })?;
    if meta.is_dir() {
        let dir: PathBuf = match options.subpath {
            Some(sub) => path.join(sub.trim_start_matches('/')),
            None => path.to_path_buf(),
        };
        if StorageTree::find_v2(&dir).is_some() {
            return Ok(Box::new(StorageTree::open(&dir)?));
        }
        if let Some(layouts) = LayoutTree::open(&dir)? {
            return Ok(Box::new(layouts));
        }
        return Err(SourceError::NotATree { path: dir });
    }
    // A FIFO, socket or device given as SOURCE is never opened: reading a FIFO would wait forever.
    if !meta.is_file() {
        return Err(SourceError::NotATree {
            path: path.to_path_buf(),
        });
    }
    // Blobs are later opened without following links; the archive itself may be reached through one.
    let canonical = fs::canonicalize(path).map_err(|error| SourceError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let path = canonical.as_path();
    let kind = sniff(path).map_err(|error| SourceError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    match kind {
        FileKind::Tar => {
            let file = File::open(path).map_err(|error| SourceError::Io {
                path: path.to_path_buf(),
                error,
            })?;
            let index = super::tar_index::index(path, &file).map_err(|error| SourceError::Io {
                path: path.to_path_buf(),
                error,
            })?;
            crate::debug!(
                "{}: {} members indexed in place",
                path.display(),
                index.members.len()
            );
            let tree = ArchiveTree::build(
                path,
                Some(file),
                index.members,
                index.damage,
                options.subpath,
            )?;
            Ok(Box::new(tree))
        }
        FileKind::Compressed(compression) => {
            let progress = Progress::reading("read", meta.len());
            let on_read = |n: u64| progress.add_bytes(n);
            match options.needs {
                Needs::Metadata => {
                    let mut keep = KeepMetadata::default();
                    let damage = tar_stream::stream(path, compression, &on_read, &mut keep)?;
                    progress.finish();
                    let tree =
                        ArchiveTree::build(path, None, keep.members, damage, options.subpath)?;
                    Ok(Box::new(tree))
                }
                Needs::Blobs => {
                    let base = cache::base(options.cache_dir)?;
                    let tree = extract::open(path, compression, options.subpath, &base, &on_read)?;
                    progress.finish();
                    Ok(Box::new(tree))
                }
            }
        }
        FileKind::Unsupported(kind) => Err(SourceError::Archive {
            path: path.to_path_buf(),
            kind,
        }),
        FileKind::Unknown => Err(SourceError::NotATree {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_told_by_content_not_name() {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = d.path().join(name);
            fs::write(&p, bytes).unwrap();
            p
        };
        let mut tar = Vec::new();
        {
            let mut b = tar::Builder::new(&mut tar);
            let mut h = tar::Header::new_old();
            h.set_size(1);
            h.set_cksum();
            b.append_data(&mut h, "x", &b"y"[..]).unwrap();
            b.finish().unwrap();
        }
        assert_eq!(sniff(&write("a.gz", &tar)).unwrap(), FileKind::Tar);
        assert_eq!(
            sniff(&write("a.tar", &[0x1f, 0x8b, 8, 0])).unwrap(),
            FileKind::Compressed(Compression::Gzip)
        );
        assert_eq!(
            sniff(&write("b", &[0x28, 0xb5, 0x2f, 0xfd, 0])).unwrap(),
            FileKind::Compressed(Compression::Zstd)
        );
        assert_eq!(
            sniff(&write("c", b"BZh91AY")).unwrap(),
            FileKind::Unsupported("bzip2")
        );
        assert_eq!(sniff(&write("d", b"hello")).unwrap(), FileKind::Unknown);
        assert_eq!(sniff(&write("e", &[0u8; 1024])).unwrap(), FileKind::Unknown);
    }
}
