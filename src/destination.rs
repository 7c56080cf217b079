//! Destination mapping: source repository → destination repository (default project, `--project`),
//! Harbor's project-name rules, and `--shard K/N` selection.

use crate::digest::Digest;

/// How source repository names become destination names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Where single-component names go (`alpine` → `library/alpine`).
    pub default_project: String,
    /// When set, everything goes under it: `NAME/<full source path>`.
    pub project: Option<String>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            default_project: "library".to_string(),
            project: None,
        }
    }
}

impl Mapping {
    /// The destination repository for a source repository.
    pub fn destination(&self, source: &str) -> String {
        match &self.project {
            Some(p) => format!("{p}/{source}"),
            None if !source.contains('/') => format!("{}/{source}", self.default_project),
            None => source.to_string(),
        }
    }

    /// Checks the destination name against the registry grammar and, for Harbor, its project rules.
    pub fn check(&self, destination: &str, harbor: bool) -> Result<(), String> {
        crate::names::check_repository(destination)
            .map_err(|e| format!("destination repository {destination:?} is not valid: {e}"))?;
        if harbor {
            let project = project_of(destination);
            check_harbor_project(project).map_err(|e| {
                format!("Harbor would refuse project {project:?} (of {destination}): {e}")
            })?;
        }
        Ok(())
    }
}

/// The Harbor project of a destination repository: its first path component.
pub fn project_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// Harbor's project names: 1–255 of `[a-z0-9]`, single `.`, `_` or `-` between them.
pub fn check_harbor_project(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("{} characters, 1 to 255 allowed", name.len()));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("uppercase letters are not allowed".into());
    }
    let b = name.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("must start and end with a letter or digit".into());
    }
    for w in b.windows(2) {
        if !alnum(w[0]) && !alnum(w[1]) {
            return Err(format!(
                "{:?} is not allowed: one '.', '_' or '-' at a time",
                String::from_utf8_lossy(w)
            ));
        }
    }
    if !b
        .iter()
        .all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
    {
        return Err("only [a-z0-9._-] are allowed".into());
    }
    Ok(())
}

/// `--shard K/N`: this machine takes the repositories whose name hashes to K (0-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s:?}: expected K/N, for example 0/4"))?;
        let index: u64 = k
            .parse()
            .map_err(|_| format!("--shard {s:?}: K is not a number"))?;
        let count: u64 = n
            .parse()
            .map_err(|_| format!("--shard {s:?}: N is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("--shard {s:?}: need 0 <= K < N"));
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Stable across machines and versions: the first 8 bytes of sha256(name), modulo N.
    pub fn takes(&self, repository: &str) -> bool {
        let d = Digest::of(repository.as_bytes()).hex();
        let h = u64::from_str_radix(&d[..16], 16).expect("hex");
        h % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names() {
        let m = Mapping::default();
        assert_eq!(m.destination("alpine"), "library/alpine");
        assert_eq!(m.destination("org/team/sub/app"), "org/team/sub/app");
        let m = Mapping {
            default_project: "base".into(),
            project: Some("mirror".into()),
        };
        assert_eq!(m.destination("alpine"), "mirror/alpine");
        assert_eq!(m.destination("ns/sub/img"), "mirror/ns/sub/img");
    }

    #[test]
    fn harbor_project_rules() {
        for ok in ["library", "a", "my-team.v2", "x_y"] {
            assert!(check_harbor_project(ok).is_ok(), "{ok}");
        }
        for bad in ["a__b", "a--b", "Team", "-a", "a.", "", "a._b"] {
            assert!(check_harbor_project(bad).is_err(), "{bad:?}");
        }
        let m = Mapping::default();
        assert!(m.check("a__b/app", true).is_err());
        assert!(m.check("a__b/app", false).is_ok());
    }

    #[test]
    fn shards_split_everything_once() {
        let shards: Vec<Shard> = (0..3).map(|k| format!("{k}/3").parse().unwrap()).collect();
        for name in ["a", "b/c", "org/team/app", "alpine", "x9"] {
            assert_eq!(shards.iter().filter(|s| s.takes(name)).count(), 1);
        }
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1".parse::<Shard>().is_err());
    }
}
