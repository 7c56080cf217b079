//! Judges tar members by name and type: safe relative names, hostile members, and where the storage tree sits.

use std::collections::BTreeSet;

/// What a tar member is, as far as ferry cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    File,
    Dir,
    /// A hard link to an earlier member (the name it links to, as written in the archive).
    HardLink(Vec<u8>),
    /// A symbolic link (its target, reported and never followed).
    Symlink(Vec<u8>),
    /// A device, FIFO, sparse file or other type ferry refuses to read.
    Refused(&'static str),
    /// A header type that holds nothing for ferry (a volume label, a global PAX header).
    Ignored,
}

impl MemberKind {
    /// The kind a tar header type stands for.
    pub fn of(entry_type: tar::EntryType, link: Option<&[u8]>) -> MemberKind {
        use tar::EntryType as T;
        match entry_type {
            T::Regular | T::Continuous => MemberKind::File,
            T::Directory => MemberKind::Dir,
            T::Link => MemberKind::HardLink(link.unwrap_or_default().to_vec()),
            T::Symlink => MemberKind::Symlink(link.unwrap_or_default().to_vec()),
            T::Char => MemberKind::Refused("a character device"),
            T::Block => MemberKind::Refused("a block device"),
            T::Fifo => MemberKind::Refused("a FIFO"),
            T::GNUSparse => MemberKind::Refused("a GNU sparse file"),
            T::XGlobalHeader => MemberKind::Ignored,
            other if other.as_byte() == b'V' => MemberKind::Ignored,
            _ => MemberKind::Refused("of an unknown tar type"),
        }
    }
}

/// A member's name made relative and plain (`./` and repeated slashes dropped), or why it is refused:
/// an absolute name, a `..` component, a name that is not UTF-8.
pub fn clean_name(raw: &[u8]) -> Result<String, String> {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err("its name is not UTF-8".to_string());
    };
    if text.contains('\0') {
        return Err("its name holds a NUL byte".to_string());
    }
    if text.starts_with('/') {
        return Err(
            "it has an absolute path (an archive member must not name a place outside the archive)"
                .to_string(),
        );
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err("its path climbs out with '..'".to_string());
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// `P/blobs/sha256/<2 hex>/<64 hex>/data`: the prefix P and the digest's hex.
pub fn blob_data(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_suffix("/data")?;
    let (rest, hex) = rest.rsplit_once('/')?;
    let (rest, two) = rest.rsplit_once('/').unwrap_or(("", rest));
    let prefix = if rest == "blobs/sha256" {
        ""
    } else {
        rest.strip_suffix("/blobs/sha256")?
    };
    let is_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex.len() == 64 && is_hex(hex) && two.len() == 2 && hex.starts_with(two))
        .then_some((prefix, hex))
}

/// Whether a prefix can be a storage tree's `v2` folder: the archive's top, or a folder named `v2`.
fn can_be_root(prefix: &str) -> bool {
    prefix.is_empty() || prefix == "v2" || prefix.ends_with("/v2")
}

/// The tree root a member names, if any: the prefix before `blobs/…/data`, or, for a member under
/// `repositories/` with a `_manifests`, `_layers` or `_uploads` folder, the shortest prefix before it.
pub fn root_of(name: &str) -> Option<&str> {
    if let Some((prefix, _)) = blob_data(name) {
        return can_be_root(prefix).then_some(prefix);
    }
    let parts: Vec<&str> = name.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if *part != "repositories" {
            continue;
        }
        let has_repository_folder = parts[i + 1..]
            .iter()
            .any(|p| matches!(*p, "_manifests" | "_layers" | "_uploads"));
        let prefix_len = parts[..i].iter().map(|p| p.len() + 1).sum::<usize>();
        let prefix = &name[..prefix_len.saturating_sub(1)];
        if has_repository_folder && can_be_root(prefix) {
            return Some(prefix);
        }
    }
    None
}

/// The tree roots an archive holds. Roots found from blobs come first: a tree without any blob
/// is only believed when no tree has one.
#[derive(Debug, Default)]
pub struct Roots {
    from_blobs: BTreeSet<String>,
    from_repositories: BTreeSet<String>,
}

/// Why no single tree root could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootChoice {
    Found(String),
    None,
    Several(Vec<String>),
    /// `--subpath` names none of the roots found.
    NotAtSubpath(Vec<String>),
}

impl Roots {
    pub fn see(&mut self, name: &str) {
        if let Some((prefix, _)) = blob_data(name) {
            if can_be_root(prefix) && !self.from_blobs.contains(prefix) {
                self.from_blobs.insert(prefix.to_string());
            }
        } else if let Some(prefix) = root_of(name)
            && !self.from_repositories.contains(prefix)
        {
            self.from_repositories.insert(prefix.to_string());
        }
    }

    /// Every root found, blobs' roots first.
    pub fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = self.from_blobs.iter().cloned().collect();
        all.extend(
            self.from_repositories
                .iter()
                .filter(|r| !self.from_blobs.contains(*r))
                .cloned(),
        );
        all
    }

    /// The one root to read: the only one found, or the one `subpath` names.
    pub fn choose(&self, subpath: Option<&str>) -> RootChoice {
        let found = if self.from_blobs.is_empty() {
            self.from_repositories.iter().cloned().collect::<Vec<_>>()
        } else {
            // A repositories folder nested inside a tree with blobs is that tree's, not another tree.
            let mut found: Vec<String> = self.from_blobs.iter().cloned().collect();
            found.extend(
                self.from_repositories
                    .iter()
                    .filter(|r| !self.from_blobs.contains(*r))
                    .filter(|r| !self.from_blobs.iter().any(|b| inside(r, b)))
                    .cloned(),
            );
            found
        };
        if let Some(subpath) = subpath {
            return match found.iter().find(|r| subpath_names(subpath, r)) {
                Some(r) => RootChoice::Found(r.clone()),
                None => RootChoice::NotAtSubpath(self.all()),
            };
        }
        match found.len() {
            0 => RootChoice::None,
            1 => RootChoice::Found(found[0].clone()),
            _ => RootChoice::Several(found),
        }
    }
}

/// Whether `inner` lies inside `outer`'s `repositories/` folder.
fn inside(inner: &str, outer: &str) -> bool {
    let repos = if outer.is_empty() {
        "repositories/".to_string()
    } else {
        format!("{outer}/repositories/")
    };
    inner.starts_with(&repos)
}

/// Whether `--subpath` names `root`: the root itself, or the folder holding its `docker/registry/v2`
/// or `registry/v2`, as for a folder SOURCE.
pub fn subpath_names(subpath: &str, root: &str) -> bool {
    let subpath = clean_name(subpath.as_bytes()).unwrap_or_default();
    let join = |tail: &str| {
        if subpath.is_empty() {
            tail.to_string()
        } else {
            format!("{subpath}/{tail}")
        }
    };
    root == subpath || root == join("docker/registry/v2") || root == join("registry/v2")
}

/// `name` relative to `root`, when it is inside it.
pub fn under<'a>(root: &str, name: &'a str) -> Option<&'a str> {
    if root.is_empty() {
        return Some(name);
    }
    name.strip_prefix(root)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names_are_made_plain_and_hostile_ones_refused() {
        assert_eq!(
            clean_name(b"./docker//registry/./v2/").unwrap(),
            "docker/registry/v2"
        );
        assert_eq!(clean_name(b".").unwrap(), "");
        for bad in [
            &b"../etc/passwd"[..],
            b"a/../../b",
            b"/etc/passwd",
            b"a\xffb",
            b"a\0b",
        ] {
            assert!(clean_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roots_are_found_at_any_leading_path() {
        let data = |p: &str| format!("{p}blobs/sha256/01/{HEX}/data");
        assert_eq!(blob_data(&data("")), Some(("", HEX)));
        assert_eq!(
            blob_data(&data("var/lib/registry/docker/registry/v2/")),
            Some(("var/lib/registry/docker/registry/v2", HEX))
        );
        assert_eq!(blob_data(&format!("blobs/sha256/02/{HEX}/data")), None);
        assert_eq!(blob_data("blobs/sha256/01/0123/data"), None);
        assert_eq!(
            root_of(
                "docker/registry/v2/repositories/a/v2/repositories/b/_manifests/tags/x/current/link"
            ),
            Some("docker/registry/v2")
        );
        assert_eq!(root_of("srv/repositories/x/_manifests"), None);
        assert_eq!(root_of("repositories/alpine/_layers"), Some(""));
    }

    #[test]
    fn several_trees_need_a_subpath() {
        let mut roots = Roots::default();
        roots.see(&format!("a/docker/registry/v2/blobs/sha256/01/{HEX}/data"));
        roots.see(&format!("b/registry/v2/blobs/sha256/01/{HEX}/data"));
        roots.see("a/docker/registry/v2/repositories/x/_manifests/tags/t/current/link");
        assert_eq!(
            roots.choose(None),
            RootChoice::Several(vec![
                "a/docker/registry/v2".to_string(),
                "b/registry/v2".to_string()
            ])
        );
        assert_eq!(
            roots.choose(Some("./b/")),
            RootChoice::Found("b/registry/v2".to_string())
        );
        assert_eq!(
            roots.choose(Some("a/docker/registry/v2")),
            RootChoice::Found("a/docker/registry/v2".to_string())
        );
        assert!(matches!(
            roots.choose(Some("c")),
            RootChoice::NotAtSubpath(_)
        ));
        assert_eq!(
            under("a/docker/registry/v2", "a/docker/registry/v2/blobs"),
            Some("blobs")
        );
        assert_eq!(under("a/docker/registry/v2", "a/docker/registry/v22"), None);
    }
}
