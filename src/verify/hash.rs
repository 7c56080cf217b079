//! Hashes blob files at the speed of the machine: each file once, largest first, on N threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::digest::{Digest, Hasher};
use crate::problem::Problem;
use crate::progress::Progress;
use crate::source::BlobFile;
use crate::source::beneath::{is_symlink_error, open_no_symlinks, symlink_on_the_way};

/// Progress is told about hashed bytes in steps of this size.
const PROGRESS_STEP: usize = 8 << 20;

/// How file bytes reach the hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStrategy {
    /// `read(2)` into a buffer of this many bytes, after a sequential-access hint.
    Read { buffer: usize },
    /// Map the whole file and hash the mapping.
    Mmap,
}

impl Default for ReadStrategy {
    /// Reads into a buffer that stays in a core's L2 cache. `scripts/bench-verify.sh` measured
    /// mmap at 5–10% less CPU, but under a mapping a bad sector or a truncated file is a SIGBUS
    /// that ends the run, where a read fails one blob; buffers of 256 KiB to 4 MiB measured alike.
    fn default() -> Self {
        ReadStrategy::Read { buffer: 256 << 10 }
    }
}

impl FromStr for ReadStrategy {
    type Err = String;

    /// `read`, `read:<KiB>` or `mmap`.
    fn from_str(s: &str) -> Result<ReadStrategy, String> {
        match s.split_once(':') {
            None if s == "read" => Ok(ReadStrategy::default()),
            None if s == "mmap" => Ok(ReadStrategy::Mmap),
            Some(("read", kib)) => match kib.parse::<usize>() {
                Ok(k) if (4..=65536).contains(&k) => Ok(ReadStrategy::Read { buffer: k << 10 }),
                _ => Err(format!("read:{kib}: expected a buffer of 4 to 65536 KiB")),
            },
            _ => Err(format!("{s:?}: expected read, read:<KiB> or mmap")),
        }
    }
}

impl std::fmt::Display for ReadStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadStrategy::Read { buffer } => write!(f, "read:{}", buffer >> 10),
            ReadStrategy::Mmap => write!(f, "mmap"),
        }
    }
}

/// The digest and length of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    pub digest: Digest,
    pub len: u64,
}

/// Hashes every file once, `jobs` at a time, largest first (so the longest file starts first
/// and the threads finish together); `top` is the tree's folder, for naming symbolic links.
pub fn hash_all(
    files: &[(Digest, BlobFile)],
    top: &Path,
    jobs: usize,
    strategy: ReadStrategy,
    progress: &Progress,
) -> HashMap<Digest, Result<Hashed, Problem>> {
    let mut files: Vec<&(Digest, BlobFile)> = files.iter().collect();
    files.sort_by(|a, b| b.1.len.cmp(&a.1.len).then(a.0.cmp(&b.0)));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(HashMap::with_capacity(files.len()));
    let work = || {
        let mut buffer = match strategy {
            ReadStrategy::Read { buffer } => vec![0u8; buffer],
            ReadStrategy::Mmap => Vec::new(),
        };
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((digest, file)) = files.get(i).copied() else {
                return;
            };
            let outcome = hash_file(file, strategy, &mut buffer, &|n| progress.add_bytes(n))
                .map_err(|e| problem(*digest, file, top, &e));
            results.lock().unwrap().insert(*digest, outcome);
        }
    };
    std::thread::scope(|s| {
        for i in 1..jobs.clamp(1, files.len().max(1)) {
            // A thread that cannot start only lowers the parallelism; this one works anyway.
            let _ = std::thread::Builder::new()
                .name(format!("ferry-hash-{i}"))
                .spawn_scoped(s, work);
        }
        work();
    });
    results.into_inner().unwrap()
}

/// What a failed read of a blob file means.
fn problem(digest: Digest, file: &BlobFile, top: &Path, e: &io::Error) -> Problem {
    let path = &file.name();
    if e.kind() == io::ErrorKind::NotFound {
        Problem::MissingBlob {
            role: String::new(),
            digest,
            path: path.to_path_buf(),
        }
    } else if is_symlink_error(e) && file.is_own_file() {
        Problem::Symlink {
            path: symlink_on_the_way(path, top),
        }
    } else {
        Problem::io(path, e)
    }
}

/// Hashes one blob: its own file (opened without following symbolic links), or its byte range
/// of an archive (read, never mapped); `progress` hears of hashed bytes.
pub fn hash_file(
    blob: &BlobFile,
    strategy: ReadStrategy,
    buffer: &mut Vec<u8>,
    progress: &dyn Fn(u64),
) -> io::Result<Hashed> {
    let size = match strategy {
        ReadStrategy::Read { buffer } => buffer,
        ReadStrategy::Mmap => 256 << 10,
    };
    if !blob.is_own_file() {
        buffer.resize(size.max(4096), 0);
        return read_and_hash(blob.open()?, buffer, progress);
    }
    let file = open_no_symlinks(&blob.path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    match strategy {
        ReadStrategy::Read { .. } => {
            buffer.resize(size.max(4096), 0);
            read_and_hash(file.take(u64::MAX), buffer, progress)
        }
        ReadStrategy::Mmap => map_and_hash(&file, meta.len(), progress),
    }
}

fn read_and_hash(
    mut file: io::Take<File>,
    buffer: &mut [u8],
    progress: &dyn Fn(u64),
) -> io::Result<Hashed> {
    // Doubles the kernel's readahead for this file; only a hint, so a refusal is ignored.
    let _ = nix::fcntl::posix_fadvise(
        file.get_ref().as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
    let mut hasher = Hasher::new();
    let mut unreported = 0;
    loop {
        let n = match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        unreported += n;
        if unreported >= PROGRESS_STEP {
            progress(unreported as u64);
            unreported = 0;
        }
    }
    progress(unreported as u64);
    let (digest, len) = hasher.finish();
    Ok(Hashed { digest, len })
}

fn map_and_hash(file: &File, len: u64, progress: &dyn Fn(u64)) -> io::Result<Hashed> {
    let mut hasher = Hasher::new();
    if len > 0 {
        // SAFETY: the tree is never written by ferry; a file truncated under us by someone
        // else raises SIGBUS, which is why this strategy is not the default.
        let map = unsafe { memmap2::Mmap::map(file)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        for chunk in map.chunks(PROGRESS_STEP) {
            hasher.update(chunk);
            progress(chunk.len() as u64);
        }
    }
    let (digest, len) = hasher.finish();
    Ok(Hashed { digest, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_agree_with_a_plain_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap().join("data");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let want = Hashed {
            digest: Digest::of(&bytes),
            len: bytes.len() as u64,
        };
        let blob = BlobFile::own(path.clone(), bytes.len() as u64);
        for s in ["read", "read:4", "read:1024", "mmap"] {
            let strategy: ReadStrategy = s.parse().unwrap();
            let seen = std::sync::atomic::AtomicU64::new(0);
            let got = hash_file(&blob, strategy, &mut Vec::new(), &|n| {
                seen.fetch_add(n, Ordering::Relaxed);
            })
            .unwrap();
            assert_eq!(got, want, "{s}");
            assert_eq!(
                seen.into_inner(),
                want.len,
                "{s}: progress hears every byte"
            );
        }
        let empty = path.with_file_name("empty");
        std::fs::write(&empty, b"").unwrap();
        let empty = BlobFile::own(empty, 0);
        let got = hash_file(&empty, ReadStrategy::Mmap, &mut Vec::new(), &|_| {}).unwrap();
        assert_eq!(got.digest, Digest::of(b""));
        assert!("read:1".parse::<ReadStrategy>().is_err());
        assert!("fast".parse::<ReadStrategy>().is_err());
    }
}
