//! Reads a compressed tar (gzip, zstd, xz) in one streaming pass, handing each member to a visitor; names damage where it starts.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use super::archive_tree::{Data, RawMember};
use super::member_path;
use super::members::{MemberKind, blob_data, clean_name};
use super::tar_index::header_name;
use crate::problem::Problem;

/// How a tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

/// One member of a stream, as its header says.
#[derive(Debug)]
pub struct StreamMember {
    pub name: Vec<u8>,
    pub kind: MemberKind,
    /// Bytes of contents (0 for anything but a regular file).
    pub len: u64,
}

/// Why a visitor stopped.
#[derive(Debug)]
pub enum Stop {
    /// Reading the member failed: the stream is damaged there.
    Read(io::Error),
    /// Something that ends the whole run (a full disk, several trees without --subpath).
    Fatal(super::SourceError),
}

/// Does something with each member of a stream.
pub trait Visitor {
    /// `data` yields the member's contents; reading less than all of them is fine.
    fn member(&mut self, member: &StreamMember, data: &mut dyn Read) -> Result<(), Stop>;
}

/// Streams the archive at `path` through `visitor`. `on_read` is told about compressed bytes as
/// they are read. Returns the damage found (the members before it were all visited).
pub fn stream(
    path: &Path,
    compression: Compression,
    on_read: &(dyn Fn(u64) + Sync),
    visitor: &mut dyn Visitor,
) -> Result<Vec<Problem>, super::SourceError> {
    let file = File::open(path).map_err(|error| super::SourceError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    thread::scope(|scope| {
        // Decompression runs beside the tar reader and the writer: two cores, as `tar xzf` uses.
        let (chunks, returned) = decompress_in(scope, file, compression, on_read);
        let mut tracked = Tracked::new(ChannelReader::new(chunks, returned));
        let outcome = read_members(path, &mut tracked, visitor);
        // Dropping the reader ends the decompression thread early when the walk stopped early.
        drop(tracked);
        outcome
    })
}

fn read_members(
    path: &Path,
    tracked: &mut Tracked<ChannelReader>,
    visitor: &mut dyn Visitor,
) -> Result<Vec<Problem>, super::SourceError> {
    let mut last: Option<String> = None;
    let mut next = 0u64;
    let mut bad_header: Option<io::Error> = None;
    {
        let mut archive = tar::Archive::new(&mut *tracked as &mut dyn Read);
        let entries = archive.entries().map_err(|error| super::SourceError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                Err(error) => {
                    bad_header = Some(error);
                    break;
                }
            };
            let name = entry.path_bytes().into_owned();
            let display = String::from_utf8_lossy(&name).into_owned();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            let kind = MemberKind::of(entry.header().entry_type(), link.as_deref());
            let len = if kind == MemberKind::File {
                entry.size()
            } else {
                0
            };
            let member = StreamMember { name, kind, len };
            let mut counted = Counted {
                inner: &mut entry,
                read: 0,
            };
            match visitor.member(&member, &mut counted) {
                Ok(()) => {}
                Err(Stop::Read(error)) => return Ok(vec![member_damage(path, &display, &error)]),
                Err(Stop::Fatal(e)) => return Err(e),
            }
            // Read what the visitor left of a file, so a cut-short member is noticed here and not
            // later. Other members are skipped by the reader: a sparse one would expand to its
            // logical size (a few bytes in the archive can claim a terabyte of zeros).
            let seen = counted.read;
            let drained = if member.kind == MemberKind::File {
                io::copy(&mut entry, &mut io::sink())
            } else {
                Ok(0)
            };
            match drained {
                Ok(rest) if seen + rest == len || member.kind != MemberKind::File => {}
                Ok(rest) => {
                    let error = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("only {} of its {len} bytes are in the archive", seen + rest),
                    );
                    return Ok(vec![member_damage(path, &display, &error)]);
                }
                Err(error) => return Ok(vec![member_damage(path, &display, &error)]),
            }
            // A GNU sparse member's size is its logical one; the stream holds its stored bytes.
            let stored = entry.header().entry_size().unwrap_or(entry.size());
            next = entry.raw_file_position() + stored.div_ceil(512) * 512;
            last = Some(display);
        }
    }
    if let Some(error) = bad_header {
        let name = if tracked.last_block.len() == 512 && !tracked.eof {
            header_name(&tracked.last_block)
        } else {
            String::new()
        };
        let header = if name.is_empty() {
            format!("the header at byte {next}")
        } else {
            format!("the header of member {name:?} at byte {next}")
        };
        return Ok(vec![Problem::Archive {
            path: path.to_path_buf(),
            error: format!(
                "{header} of the uncompressed archive{} cannot be read ({error}): the archive is damaged or cut short here, and members that followed are lost",
                after(last.as_deref())
            ),
        }]);
    }
    // The end-of-archive blocks were read unless the stream simply stopped where a header was due.
    if tracked.eof && tracked.total <= next {
        return Ok(vec![Problem::Archive {
            path: path.to_path_buf(),
            error: format!(
                "the stream stops at byte {} of the uncompressed archive{} without tar's end-of-archive blocks: it was cut short, and members that followed are lost",
                tracked.total,
                after(last.as_deref())
            ),
        }]);
    }
    Ok(Vec::new())
}

fn member_damage(path: &Path, member: &str, error: &io::Error) -> Problem {
    Problem::Archive {
        path: member_path(path, member),
        error: format!(
            "cannot be read whole ({error}): the archive is damaged or cut short here, and members that followed are lost"
        ),
    }
}

fn after(last: Option<&str>) -> String {
    match last {
        Some(name) => format!(" (after member {name:?})"),
        None => String::new(),
    }
}

/// Decompressed chunks travel in buffers of this size, at most `CHUNKS_IN_FLIGHT` at once.
const CHUNK: usize = 1 << 20;
const CHUNKS_IN_FLIGHT: usize = 8;

type Chunk = io::Result<Vec<u8>>;

/// Starts the decompressor on its own thread; its chunks come through the first channel and empty
/// buffers go back through the second.
fn decompress_in<'s>(
    scope: &'s thread::Scope<'s, '_>,
    file: File,
    compression: Compression,
    on_read: &'s (dyn Fn(u64) + Sync),
) -> (mpsc::Receiver<Chunk>, mpsc::Sender<Vec<u8>>) {
    let (send, chunks) = mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
    let (give_back, spare) = mpsc::channel::<Vec<u8>>();
    scope.spawn(move || {
        let compressed = BufReader::with_capacity(
            CHUNK,
            Progressed {
                inner: file,
                on_read,
            },
        );
        let mut decoder: Box<dyn Read> = match compression {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(compressed)),
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(compressed) {
                Ok(d) => Box::new(d),
                Err(e) => {
                    let _ = send.send(Err(e));
                    return;
                }
            },
            Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(compressed)),
        };
        loop {
            let mut buf = spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            let mut failed = None;
            while filled < CHUNK {
                match decoder.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            buf.truncate(filled);
            let end = filled < CHUNK;
            if filled > 0 && send.send(Ok(buf)).is_err() {
                return;
            }
            if let Some(e) = failed {
                let _ = send.send(Err(e));
                return;
            }
            if end {
                return;
            }
        }
    });
    (chunks, give_back)
}

/// Reads the chunks a decompression thread sends, in order.
struct ChannelReader {
    chunks: mpsc::Receiver<Chunk>,
    give_back: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    failed: Option<io::Error>,
}

impl ChannelReader {
    fn new(chunks: mpsc::Receiver<Chunk>, give_back: mpsc::Sender<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            chunks,
            give_back,
            current: Vec::new(),
            at: 0,
            failed: None,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if let Some(e) = &self.failed {
                return Err(io::Error::new(e.kind(), e.to_string()));
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    let _ = self.give_back.send(used);
                    self.at = 0;
                }
                Ok(Err(e)) => self.failed = Some(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Counts the decompressed bytes the tar reader took, notices the end, and keeps the last
/// block read (a damaged header, to name it).
struct Tracked<R> {
    inner: R,
    total: u64,
    eof: bool,
    last_block: Vec<u8>,
}

impl<R: Read> Tracked<R> {
    fn new(inner: R) -> Tracked<R> {
        Tracked {
            inner,
            total: 0,
            eof: false,
            last_block: Vec::with_capacity(1024),
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        self.total += n as u64;
        if n <= 512 {
            self.last_block.extend_from_slice(&buf[..n]);
            let excess = self.last_block.len().saturating_sub(512);
            self.last_block.drain(..excess);
        } else {
            self.last_block.clear();
            self.last_block.extend_from_slice(&buf[n - 512..n]);
        }
        Ok(n)
    }
}

/// Tells `on_read` about compressed bytes read.
struct Progressed<'a> {
    inner: File,
    on_read: &'a (dyn Fn(u64) + Sync),
}

impl Read for Progressed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(n as u64);
        Ok(n)
    }
}

/// Counts what a visitor reads of a member.
struct Counted<'a, R> {
    inner: &'a mut R,
    read: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Keeps what `list` and `validate` need from a stream, in memory: link files, and every blob
/// that may be a manifest or a config (JSON, up to the manifest limit); other blobs only by size.
#[derive(Default)]
pub struct KeepMetadata {
    pub members: Vec<RawMember>,
}

/// Files under `repositories/` other than link files (upload hash states) are not kept.
const MAX_SMALL_FILE: u64 = 4096;

impl Visitor for KeepMetadata {
    fn member(&mut self, member: &StreamMember, data: &mut dyn Read) -> Result<(), Stop> {
        let keep_whole = |data: &mut dyn Read, len: u64| -> Result<Data, Stop> {
            let mut bytes = Vec::with_capacity(len as usize);
            data.take(len).read_to_end(&mut bytes).map_err(Stop::Read)?;
            Ok(Data::Memory(bytes.into()))
        };
        let data = match &member.kind {
            MemberKind::File => {
                let name = clean_name(&member.name).unwrap_or_default();
                let is_blob = blob_data(&name).is_some();
                if is_blob && member.len <= super::archive_tree::MAX_MANIFEST {
                    // Manifests and configs are JSON objects; layers are compressed and never start so.
                    let mut head = Vec::with_capacity(64);
                    (&mut *data)
                        .take(64)
                        .read_to_end(&mut head)
                        .map_err(Stop::Read)?;
                    let json = head
                        .iter()
                        .find(|b| !b.is_ascii_whitespace())
                        .is_some_and(|b| *b == b'{');
                    if json {
                        let mut bytes = head;
                        bytes.reserve(member.len as usize);
                        data.take(member.len)
                            .read_to_end(&mut bytes)
                            .map_err(Stop::Read)?;
                        Data::Memory(bytes.into())
                    } else {
                        Data::Unread { len: member.len }
                    }
                } else if !is_blob && name.ends_with("/link") && member.len <= MAX_SMALL_FILE {
                    keep_whole(data, member.len)?
                } else {
                    Data::Unread { len: member.len }
                }
            }
            _ => Data::Unread { len: 0 },
        };
        self.members.push(RawMember {
            name: member.name.clone(),
            kind: member.kind.clone(),
            data,
        });
        Ok(())
    }
}
