//! Repository and tag name grammar (Distribution's reference grammar), checked before names are
//! used, and how names from a damaged tree are written so they never break a line.

use std::borrow::Cow;

/// Checks a repository name: `/`-separated components of `[a-z0-9]+` joined by `.`, `_`, `__` or `-+`.
pub fn check_repository(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 255 {
        return Err(format!("{} characters, at most 255 allowed", name.len()));
    }
    for component in name.split('/') {
        check_component(component)?;
    }
    Ok(())
}

fn check_component(c: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "component {c:?} is not [a-z0-9] joined by '.', '_', '__' or '-'"
        ))
    };
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, so it is also a safe file name.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if b.is_empty() || b.len() > 128 {
        return Err(format!("{} characters, 1 to 128 allowed", b.len()));
    }
    if !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err("not [A-Za-z0-9_][A-Za-z0-9_.-]*".into());
    }
    Ok(())
}

/// A reference (`repo:tag`) as a line of an image list, a failed list or a message: as is when it
/// is plain printable text, else a JSON string (`"repo:ta\\ng"`), so a name with a newline, a tab
/// or a quote never breaks a line and `--images` reads back exactly what was written.
pub fn list_line(reference: &str) -> Cow<'_, str> {
    // A line starting with `#` or `{` would read back as a comment or an object.
    let plain = !reference.is_empty()
        && !reference.starts_with(['#', '{'])
        && reference
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != '"' && c != '\\');
    if plain {
        Cow::Borrowed(reference)
    } else {
        Cow::Owned(serde_json::to_string(reference).expect("a string serialises"))
    }
}

/// Reads back a line written by [`list_line`].
pub fn from_list_line(line: &str) -> Result<Cow<'_, str>, String> {
    if line.starts_with('"') {
        serde_json::from_str::<String>(line)
            .map(Cow::Owned)
            .map_err(|e| format!("not a valid quoted reference: {e}"))
    } else {
        Ok(Cow::Borrowed(line))
    }
}

/// Text for a message with control characters escaped (`\\n`, `\\t`, `\\u{1b}`), the rest as is:
/// a name read from a damaged tree cannot break a line of output.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// A path for a message, escaped like [`escape_controls`] (and lossy where it is not UTF-8).
pub fn shown(path: &std::path::Path) -> String {
    escape_controls(&path.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_are_quoted_and_read_back() {
        for plain in ["alpine:3.19", "org/team/app@sha256:abc"] {
            assert_eq!(list_line(plain), plain);
        }
        for odd in [
            "ns/app:bad\ntag",
            "a:b\tc",
            "a:\"q\"",
            "a:b\\c",
            "a: b",
            "a:\u{7f}",
        ] {
            let line = list_line(odd);
            assert!(line.starts_with('"'), "{line}");
            assert!(!line.contains('\n') && !line.contains('\t'), "{line}");
            assert_eq!(from_list_line(&line).unwrap(), odd);
        }
        assert_eq!(escape_controls("a\nb\tc\u{1b}"), "a\\nb\\tc\\u{1b}");
        assert_eq!(escape_controls("plain/name"), "plain/name");
        assert!(from_list_line("\"unterminated").is_err());
    }

    #[test]
    fn repository_grammar() {
        for ok in [
            "alpine",
            "org/team/sub/app",
            "a.b_c__d---e/f0",
            "ns/sub",
            "x9",
        ] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "Alpine", "a//b", "/a", "a/", "a/../b", "..", "a/.", "-a", "a_", "a___b", "a._b",
            "a b",
        ] {
            assert!(check_repository(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tag_grammar() {
        for ok in ["latest", "v1.2.3-rc_1", "sha256-abc.sig", "_x", "A"] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", ".hidden", "-x", "..", "a/b", "a:b", long.as_str()] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
    }
}
