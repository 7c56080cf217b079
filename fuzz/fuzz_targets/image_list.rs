//! Fuzzes `--images` lists and the lines ferry writes: never a panic, every line it writes reads back.
#![no_main]

use std::path::Path;

use ferry::filter::{ImageRef, parse_image_list};
use ferry::names::{from_list_line, list_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_image_list(text, Path::new("list.txt"));
    let line = list_line(text);
    assert!(!line.contains('\n') && !line.contains('\r'));
    assert_eq!(from_list_line(&line).unwrap(), text);
    // A name split anywhere, as a damaged tree may hold it, is written and read back as itself.
    if let Some((repository, tag)) = text.split_once('\u{1}')
        && !repository.is_empty()
        && !tag.is_empty()
        && !tag.contains('/')
    {
        let image = ImageRef::Tag {
            repository: repository.to_string(),
            tag: tag.to_string(),
        };
        let read = parse_image_list(&image.list_line(), Path::new("failed.txt")).unwrap();
        assert_eq!(read, vec![image]);
    }
    if let Ok(r) = ImageRef::parse(text) {
        assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
    }
});
