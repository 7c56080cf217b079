//! Fuzzes the tar reader: indexing any bytes, judging members, building and reading the tree.
//! Never a panic, never a member outside the file, never a name that climbs out.
#![no_main]

use std::io::{Seek, Write};
use std::path::Path;

use ferry::source::archive_tree::{ArchiveTree, Data};
use ferry::source::{ScanOptions, Source, tar_index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::tempfile().expect("a temp file");
    file.write_all(data).expect("written");
    file.rewind().expect("rewound");
    let path = Path::new("fuzz.tar");
    let Ok(index) = tar_index::index(path, &file) else {
        return;
    };
    for m in &index.members {
        if let Data::InTar { offset, len } = m.data {
            assert!(offset.saturating_add(len) <= data.len() as u64);
        }
    }
    let Ok(tree) = ArchiveTree::build(path, Some(file), index.members, index.damage, None) else {
        return;
    };
    let Ok(scan) = tree.repositories(ScanOptions { revisions: true }, &|_| true) else {
        return;
    };
    for repo in &scan.repositories {
        assert!(!repo.name.split('/').any(|c| c == ".." || c.is_empty()));
        for tag in &repo.tags {
            if let Ok(d) = &tag.target {
                let _ = tree.manifest(d);
                let _ = tree.blob(d);
            }
        }
    }
});
