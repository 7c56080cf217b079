//! Image selection: `--repo`, `--exclude`, `--tag` globs and `--images` lists.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::digest::Digest;
use crate::shard::Shard;

/// One line of an image list: `repo:tag` or `repo@sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageRef {
    Tag { repository: String, tag: String },
    Digest { repository: String, digest: Digest },
}

impl ImageRef {
    /// Parses `repo:tag` or `repo@sha256:<hex>`; the tag separator is the last `:` after the last `/`.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if let Some((repo, digest)) = s.split_once('@') {
            let digest = Digest::parse(digest).map_err(|e| e.to_string())?;
            return Ok(ImageRef::Digest {
                repository: check_repo(repo)?,
                digest,
            });
        }
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        match s[slash..].rfind(':') {
            Some(i) => {
                let (repo, tag) = (&s[..slash + i], &s[slash + i + 1..]);
                crate::names::check_tag(tag).map_err(|e| format!("tag {tag:?}: {e}"))?;
                Ok(ImageRef::Tag {
                    repository: check_repo(repo)?,
                    tag: tag.to_string(),
                })
            }
            None => Err("expected repo:tag or repo@sha256:<hex>".to_string()),
        }
    }

    /// Splits `repo:tag` or `repo@digest` without checking the names (a quoted failed-list line:
    /// the name is the damaged one the tree holds, and must select that image again).
    pub fn split(s: &str) -> Result<ImageRef, String> {
        if let Some((repo, digest)) = s.split_once('@') {
            let digest = Digest::parse(digest).map_err(|e| e.to_string())?;
            return Ok(ImageRef::Digest {
                repository: repo.to_string(),
                digest,
            });
        }
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        match s[slash..].rfind(':') {
            Some(i) => Ok(ImageRef::Tag {
                repository: s[..slash + i].to_string(),
                tag: s[slash + i + 1..].to_string(),
            }),
            None => Err("expected repo:tag or repo@sha256:<hex>".to_string()),
        }
    }

    /// The failed-list line of an image known by its repository, tag and digest: `repo:tag`,
    /// else `repo@digest` (an untagged manifest), else the repository alone; each as
    /// [`ImageRef::list_line`] writes it.
    pub fn line_of(repository: &str, tag: Option<&str>, digest: Option<Digest>) -> String {
        let repository = repository.to_string();
        match (tag, digest) {
            (Some(tag), _) => ImageRef::Tag {
                repository,
                tag: tag.to_string(),
            }
            .list_line(),
            (None, Some(digest)) => ImageRef::Digest { repository, digest }.list_line(),
            (None, None) => crate::names::list_line(&repository).into_owned(),
        }
    }

    /// This image as a line of a failed list or `--images` file, read back as exactly this image
    /// by [`read_image_list`]: `repo:tag` when the names are valid; a JSON string
    /// (`"alpine:3.19\nx"`) for names from a damaged tree; a JSON object
    /// (`{"repository":"a:b","tag":"c"}`) when a name holds a `:` or `@` that would split it elsewhere.
    pub fn list_line(&self) -> String {
        let text = self.to_string();
        if ImageRef::parse(&text).as_ref() == Ok(self)
            && matches!(
                crate::names::list_line(&text),
                std::borrow::Cow::Borrowed(_)
            )
        {
            return text;
        }
        if ImageRef::split(&text).as_ref() == Ok(self) {
            return serde_json::to_string(&text).expect("a string serialises");
        }
        let (tag, digest) = match self {
            ImageRef::Tag { tag, .. } => (Some(tag.clone()), None),
            ImageRef::Digest { digest, .. } => (None, Some(*digest)),
        };
        let line = ListObject {
            repository: self.repository().to_string(),
            tag,
            digest,
        };
        serde_json::to_string(&line).expect("names serialise")
    }

    /// Reads a `{"repository":…,"tag":…}` (or `"digest"`) line written by [`ImageRef::list_line`].
    fn from_object(line: &str) -> Result<ImageRef, String> {
        let o: ListObject = serde_json::from_str(line)
            .map_err(|e| format!("not a valid {{\"repository\":…,\"tag\":…}} line: {e}"))?;
        match (o.tag, o.digest) {
            (Some(tag), None) => Ok(ImageRef::Tag {
                repository: o.repository,
                tag,
            }),
            (None, Some(digest)) => Ok(ImageRef::Digest {
                repository: o.repository,
                digest,
            }),
            _ => Err("expected exactly one of \"tag\" and \"digest\"".to_string()),
        }
    }

    pub fn repository(&self) -> &str {
        match self {
            ImageRef::Tag { repository, .. } | ImageRef::Digest { repository, .. } => repository,
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Tag { repository, tag } => write!(f, "{repository}:{tag}"),
            ImageRef::Digest { repository, digest } => write!(f, "{repository}@{digest}"),
        }
    }
}

fn check_repo(repo: &str) -> Result<String, String> {
    crate::names::check_repository(repo).map_err(|e| format!("repository {repo:?}: {e}"))?;
    Ok(repo.to_string())
}

/// The object form of a list line, for names holding a separator.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListObject {
    repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<Digest>,
}

/// Reads an image list: one `repo:tag` (or `repo@digest`) per line; blank lines and `#` comments skipped.
pub fn read_image_list(path: &Path) -> anyhow::Result<Vec<ImageRef>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read image list {}", path.display()))?;
    parse_image_list(&text, path)
}

/// Parses the text of an image list read from `path` (named in errors, with the line number).
pub fn parse_image_list(text: &str, path: &Path) -> anyhow::Result<Vec<ImageRef>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // A quoted line is a name ferry found in a damaged tree: read it back as it was.
        let parsed = if line.starts_with('{') {
            ImageRef::from_object(line)
        } else {
            match crate::names::from_list_line(line) {
                Ok(std::borrow::Cow::Owned(raw)) => ImageRef::split(&raw),
                Ok(std::borrow::Cow::Borrowed(plain)) => ImageRef::parse(plain),
                Err(e) => Err(e),
            }
        };
        match parsed {
            Ok(r) => out.push(r),
            Err(e) => bail!("{}:{}: {line:?}: {e}", path.display(), n + 1),
        }
    }
    Ok(out)
}

/// Which images a run works on. Every given filter must agree.
#[derive(Debug, Default)]
pub struct Filters {
    repos: Option<GlobSet>,
    exclude_repos: Option<GlobSet>,
    exclude_refs: Option<GlobSet>,
    tags: Option<GlobSet>,
    images: Option<(Vec<ImageRef>, HashSet<ImageRef>)>,
    shard: Option<Shard>,
}

impl Filters {
    /// Builds the filters. `*` does not cross `/`, `**` does; an `--exclude` with `:` matches `repo:tag`.
    pub fn new(
        repos: &[String],
        exclude: &[String],
        tags: &[String],
        images: Option<Vec<ImageRef>>,
    ) -> anyhow::Result<Filters> {
        let (exclude_refs, exclude_repos): (Vec<String>, Vec<String>) =
            exclude.iter().cloned().partition(|p| p.contains(':'));
        Ok(Filters {
            repos: glob_set("--repo", repos)?,
            exclude_repos: glob_set("--exclude", &exclude_repos)?,
            exclude_refs: glob_set("--exclude", &exclude_refs)?,
            tags: glob_set("--tag", tags)?,
            images: images.map(|list| {
                let set = list.iter().cloned().collect();
                (list, set)
            }),
            shard: None,
        })
    }

    /// Keeps only the repositories of one shard (`--shard K/N`).
    pub fn with_shard(mut self, shard: Option<Shard>) -> Filters {
        self.shard = shard;
        self
    }

    /// Whether any image of `repository` can be selected (so the repository is worth reading).
    pub fn wants_repository(&self, repository: &str) -> bool {
        if self.shard.is_some_and(|s| !s.takes(repository)) {
            return false;
        }
        if self.repos.as_ref().is_some_and(|g| !g.is_match(repository))
            || self
                .exclude_repos
                .as_ref()
                .is_some_and(|g| g.is_match(repository))
        {
            return false;
        }
        match &self.images {
            Some((list, _)) => list.iter().any(|r| r.repository() == repository),
            None => true,
        }
    }

    pub fn selects_tag(&self, repository: &str, tag: &str) -> bool {
        if !self.wants_repository(repository)
            || self.tags.as_ref().is_some_and(|g| !g.is_match(tag))
        {
            return false;
        }
        if self
            .exclude_refs
            .as_ref()
            .is_some_and(|g| g.is_match(format!("{repository}:{tag}")))
        {
            return false;
        }
        match &self.images {
            Some((_, set)) => set.contains(&ImageRef::Tag {
                repository: repository.to_string(),
                tag: tag.to_string(),
            }),
            None => true,
        }
    }

    /// Untagged manifests: never when `--tag` is given; with `--images`, only when listed by digest.
    pub fn selects_untagged(&self, repository: &str, digest: &Digest) -> bool {
        if !self.wants_repository(repository) || self.tags.is_some() {
            return false;
        }
        match &self.images {
            Some((_, set)) => set.contains(&ImageRef::Digest {
                repository: repository.to_string(),
                digest: *digest,
            }),
            None => true,
        }
    }

    /// The `--images` list, in file order, when one was given.
    pub fn image_list(&self) -> Option<&[ImageRef]> {
        self.images.as_ref().map(|(list, _)| list.as_slice())
    }
}

fn glob_set(flag: &str, patterns: &[String]) -> anyhow::Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .with_context(|| format!("{flag} {p:?} is not a valid glob"))?;
        set.add(glob);
    }
    Ok(Some(set.build()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn star_stays_in_one_component_double_star_crosses() {
        let f = Filters::new(&s(&["org/*"]), &[], &[], None).unwrap();
        assert!(f.wants_repository("org/app"));
        assert!(!f.wants_repository("org/team/app"));
        let f = Filters::new(&s(&["org/**"]), &[], &[], None).unwrap();
        assert!(f.wants_repository("org/team/sub/app"));
        assert!(!f.wants_repository("other/app"));
    }

    #[test]
    fn exclude_and_tags() {
        let f = Filters::new(&[], &s(&["ns/sub", "alpine:3.*"]), &s(&["v*", "3.*"]), None).unwrap();
        assert!(!f.wants_repository("ns/sub"));
        assert!(f.wants_repository("ns/sub/img"));
        assert!(f.selects_tag("ns/sub/img", "v1"));
        assert!(!f.selects_tag("ns/sub/img", "latest"));
        assert!(!f.selects_tag("alpine", "3.19"));
        assert!(!f.selects_untagged("ns/sub/img", &Digest::of(b"x")));
    }

    #[test]
    fn image_lists() {
        let d = Digest::of(b"x");
        let list = vec![
            ImageRef::parse("org/team/app:v1").unwrap(),
            ImageRef::parse(&format!("alpine@{d}")).unwrap(),
        ];
        assert!(ImageRef::parse("alpine").is_err());
        assert!(ImageRef::parse("Bad/Name:v1").is_err());
        assert!(ImageRef::parse("a:b/c").is_err());
        let f = Filters::new(&[], &[], &[], Some(list)).unwrap();
        assert!(f.selects_tag("org/team/app", "v1"));
        assert!(!f.selects_tag("org/team/app", "v2"));
        assert!(f.selects_untagged("alpine", &d));
        assert!(!f.wants_repository("org/team"));
    }
}
