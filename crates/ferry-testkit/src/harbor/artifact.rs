//! Harbor's `artifactinfo` middleware: what a `/v2` URL names (repository, project, tag or
//! digest, mount source), with its 400 for one-component names and 404 for bad references.

use super::errors::error;
use crate::proxy::{Incoming, Reply};

/// Which registry API a `/v2` path is (`src/lib/patterns.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Manifest,
    TagList,
    BlobUpload,
    Blob,
    Referrers,
}

/// `lib.ArtifactInfo`: what Harbor reads from a `/v2` URL.
#[derive(Debug, Clone)]
pub(super) struct Info {
    pub kind: Kind,
    pub repository: String,
    pub project: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// `from=` of a mount.
    pub mount_from: Option<String>,
}

/// `artifactinfo.parse` + `projectNameFromRepo`: `Ok(None)` for paths that are no artifact API.
pub(super) fn parse_info(path: &str, req: &Incoming<'_>) -> Result<Option<Info>, Reply> {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Ok(None);
    };
    let found = if let Some(i) = rest.rfind("/manifests/") {
        Some((Kind::Manifest, &rest[..i], Some(&rest[i + 11..])))
    } else if let Some(i) = rest.find("/tags/list") {
        Some((Kind::TagList, &rest[..i], None))
    } else if let Some(i) = rest.rfind("/blobs/uploads")
        && rest[i + 14..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.=".contains(c))
    {
        Some((Kind::BlobUpload, &rest[..i], None))
    } else if let Some(i) = rest.rfind("/blobs/")
        && is_digest(&rest[i + 7..])
    {
        Some((Kind::Blob, &rest[..i], Some(&rest[i + 7..])))
    } else {
        rest.rfind("/referrers/")
            .map(|i| (Kind::Referrers, &rest[..i], Some(&rest[i + 11..])))
    };
    let Some((kind, repository, reference)) = found else {
        return Ok(None);
    };
    if !valid_name(repository) {
        return Ok(None);
    }
    let mut info = Info {
        kind,
        repository: repository.to_string(),
        project: String::new(),
        tag: None,
        digest: None,
        mount_from: None,
    };
    if let Some(r) = reference.filter(|r| !r.is_empty()) {
        if is_digest(r) {
            info.digest = Some(r.to_string());
        } else if is_tag(r) {
            info.tag = Some(r.to_string());
        } else {
            return Err(error("NOT_FOUND", "invalid reference format"));
        }
    }
    info.project = project_of(repository)?;
    if kind == Kind::BlobUpload
        && let Some(from) = req.param("from").filter(|f| !f.is_empty())
    {
        project_of(from)?;
        info.mount_from = Some(from.to_string());
    }
    Ok(Some(info))
}

/// `projectNameFromRepo`: the first component, or 400 for one-component names.
fn project_of(repository: &str) -> Result<String, Reply> {
    match repository.split_once('/') {
        Some((project, _)) => Ok(project.to_string()),
        None => Err(error(
            "BAD_REQUEST",
            &format!("bad request: invalid repository name: {repository}"),
        )),
    }
}

/// Distribution's `NameRegexp` (path components only).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(valid_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `digest.DigestRegexp`: `algorithm:hex` with at least 32 hex digits.
fn is_digest(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    !alg.is_empty()
        && alg.starts_with(|c: char| c.is_ascii_alphabetic())
        && alg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c))
        && hex.len() >= 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// `reference.TagRegexp`: `[\w][\w.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    s.len() <= 128 && s.starts_with(word) && s.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// The repository without its project (`utils.ParseRepository`).
pub(super) fn without_project(repository: &str) -> &str {
    repository.split_once('/').map_or(repository, |(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_references() {
        assert!(valid_name("library/alpine"));
        assert!(valid_name("a/b__c/d-e/f.g"));
        assert!(valid_name("a/b---c"));
        assert!(!valid_name("a/B"));
        assert!(!valid_name("a//b"));
        assert!(!valid_name("a/b_-c"));
        assert!(!valid_name("a/-b"));
        assert!(is_tag("v1.0_rc-1"));
        assert!(!is_tag(".hidden"));
        assert!(is_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_digest("sha256:abc"));
        assert_eq!(without_project("p/a/b"), "a/b");
    }
}
