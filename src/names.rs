//! Repository and tag name grammar (Distribution's reference grammar), checked before names are used.

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

#[cfg(test)]
mod tests {
    use super::*;

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
