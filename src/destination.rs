//! Destination mapping: source repository → destination repository (default project, `--project`),
//! and Harbor's project-name rules.

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
}
