//! Indexes a plain tar file in one pass over its headers (seeking past the contents): member names, types, offsets and sizes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::archive_tree::{Data, RawMember};
use super::member_path;
use super::members::MemberKind;
use crate::problem::Problem;

const BLOCK: u64 = 512;

/// Every member up to the end of the archive or the first damage, and the damage.
pub struct TarIndex {
    pub members: Vec<RawMember>,
    pub damage: Vec<Problem>,
}

/// Reads the headers of the tar file at `path`. Damage (a bad header, a member or header cut
/// short, no end-of-archive blocks) ends the index there and is reported with what came before.
pub fn index(path: &Path, file: &File) -> io::Result<TarIndex> {
    let file_len = file.metadata()?.len();
    let mut archive = tar::Archive::new(file);
    let mut members = Vec::new();
    let mut damage = Vec::new();
    // Where the next header starts: after the last member's contents, rounded up to a block.
    let mut next = 0u64;
    let mut last_name: Option<String> = None;
    let mut entries = archive.entries_with_seek()?;
    loop {
        let entry = match entries.next() {
            None => {
                if let Some(problem) = check_end(path, file, file_len, next, last_name.as_deref()) {
                    damage.push(problem);
                }
                break;
            }
            Some(Err(error)) => {
                damage.push(bad_header(
                    path,
                    file,
                    file_len,
                    next,
                    &error,
                    last_name.as_deref(),
                ));
                break;
            }
            Some(Ok(entry)) => entry,
        };
        let name = entry.path_bytes().into_owned();
        let offset = entry.raw_file_position();
        let len = entry.size();
        let link = entry.link_name_bytes();
        let kind = MemberKind::of(entry.header().entry_type(), link.as_deref());
        // A GNU sparse member's size is its logical one; it takes only its stored bytes here.
        let stored = entry.header().entry_size().unwrap_or(len);
        let end = offset.saturating_add(stored);
        let display = String::from_utf8_lossy(&name).into_owned();
        if end > file_len {
            damage.push(Problem::Archive {
                path: member_path(path, &display),
                error: format!(
                    "cut short: its {stored} bytes would end at byte {end} but the archive ends at byte {file_len}; the archive is truncated and what follows is lost"
                ),
            });
            break;
        }
        // Only regular files hold contents; hard links, folders and the rest hold none.
        let data_len = if kind == MemberKind::File { len } else { 0 };
        members.push(RawMember {
            name,
            kind,
            data: Data::InTar {
                offset,
                len: data_len,
            },
        });
        next = end.div_ceil(BLOCK) * BLOCK;
        last_name = Some(display);
    }
    Ok(TarIndex { members, damage })
}

/// After the last member a tar holds zero blocks; a file that simply stops there was cut short.
fn check_end(
    path: &Path,
    file: &File,
    file_len: u64,
    next: u64,
    last: Option<&str>,
) -> Option<Problem> {
    let mut block = [0u8; BLOCK as usize];
    let complete = next + BLOCK <= file_len
        && file.read_exact_at(&mut block, next).is_ok()
        && block.iter().all(|b| *b == 0);
    if complete || (next == 0 && file_len == 0) {
        return None;
    }
    Some(Problem::Archive {
        path: path.to_path_buf(),
        error: format!(
            "the archive stops at byte {file_len}{} without tar's end-of-archive blocks: it was cut short, and members that followed are lost",
            after(last)
        ),
    })
}

/// Names the damage at a header: a header cut short, or one whose checksum or fields are wrong
/// (with the name its damaged header still shows).
fn bad_header(
    path: &Path,
    file: &File,
    file_len: u64,
    at: u64,
    error: &io::Error,
    last: Option<&str>,
) -> Problem {
    if at + BLOCK > file_len {
        return Problem::Archive {
            path: path.to_path_buf(),
            error: format!(
                "the archive stops at byte {file_len}, inside the header at byte {at}{}: it was cut short, and members that followed are lost",
                after(last)
            ),
        };
    }
    let name = damaged_member_name(file, at);
    let member = if name.is_empty() {
        format!("the header at byte {at}")
    } else {
        format!("the header of member {name:?} at byte {at}")
    };
    Problem::Archive {
        path: path.to_path_buf(),
        error: format!(
            "{member}{} is damaged ({error}); members from there on cannot be read",
            after(last)
        ),
    }
}

/// The name of the member whose header starts at `at`: from a GNU long-name or PAX header
/// before it when there is one, else from the header's own name field.
fn damaged_member_name(file: &File, at: u64) -> String {
    let mut block = [0u8; BLOCK as usize];
    if file.read_exact_at(&mut block, at).is_err() {
        return String::new();
    }
    let size = std::str::from_utf8(&block[124..136])
        .ok()
        .and_then(|t| u64::from_str_radix(t.trim_matches(['\0', ' ']), 8).ok())
        .unwrap_or(0);
    if matches!(block[156], b'L' | b'x') && size > 0 && size <= 64 * 1024 {
        let mut data = vec![0u8; size as usize];
        if file.read_exact_at(&mut data, at + BLOCK).is_ok() {
            let name = if block[156] == b'L' {
                Some(data.split(|b| *b == 0).next().unwrap_or_default().to_vec())
            } else {
                pax_path(&data)
            };
            if let Some(name) = name {
                return printable(&name);
            }
        }
    }
    header_name(&block)
}

/// The `path` record of a PAX extended header (`<len> path=<name>\n` records).
fn pax_path(data: &[u8]) -> Option<Vec<u8>> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        let record = rest.get(space + 1..len)?;
        if let Some(path) = record.strip_prefix(b"path=") {
            return Some(path.strip_suffix(b"\n").unwrap_or(path).to_vec());
        }
        rest = rest.get(len..)?;
    }
    None
}

fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The name field of a raw header block, as far as it is printable.
pub fn header_name(block: &[u8]) -> String {
    let field = &block[..100];
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    printable(&field[..end])
}

fn after(last: Option<&str>) -> String {
    match last {
        Some(name) => format!(" (after member {name:?})"),
        None => String::new(),
    }
}
