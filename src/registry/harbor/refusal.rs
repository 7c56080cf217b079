//! Harbor's refusals as types: a missing project, an account without the right, a quota that
//! would be passed, an immutable tag, a project it would not create; read from its error bodies.

use std::fmt;

use crate::registry::RegistryError;

/// Why Harbor will not take (or show) something. Project-level refusals stop a run from sending
/// into that project; the rest of the run goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401 "project P not found": Harbor never creates a project on push.
    ProjectMissing { project: String },
    /// `POST /api/v2.0/projects` refused (403 for project robots, or admin-only creation).
    CreateRefused {
        project: String,
        who: String,
        status: u16,
        message: String,
    },
    /// 401 "unauthorized to access repository: R, action: A", or a token without the action.
    NoRight {
        project: String,
        action: String,
        who: String,
        /// Harbor's words, or what the token service granted.
        detail: String,
        /// Whether the account may still read the project (skip what is already there).
        reads: bool,
    },
    /// 403 DENIED: the push would pass the project's storage quota.
    QuotaExceeded { project: String, message: String },
    /// 412 PRECONDITION: an existing tag an immutability rule protects.
    Immutable { message: String },
}

/// What a refusal keeps a run from doing in its project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocks {
    /// Nothing more may be written; what is already there may still be read (and skipped).
    Writes,
    /// Nothing may be read or written.
    Everything,
}

impl Refusal {
    /// Harbor's answer to a `/v2` request as a refusal, when it is one; `who` names the account
    /// for messages.
    pub fn recognise(e: &RegistryError, who: &str) -> Option<Refusal> {
        let RegistryError::Status {
            method,
            url,
            status,
            errors,
            ..
        } = e
        else {
            return None;
        };
        let project_of = |r: &str| crate::destination::project_of(r).to_string();
        let repository = repository_in(url)?;
        // A HEAD carries no body, so no reason: a refused read of that repository.
        if *status == 401 && errors.is_empty() && method == "HEAD" {
            return Some(Refusal::NoRight {
                project: project_of(repository),
                action: "pull".to_string(),
                who: who.to_string(),
                detail: format!("HEAD {url} answered 401 (Harbor gives no reason to a HEAD)"),
                reads: false,
            });
        }
        let first = errors.first()?;
        let message = undoubled(&first.message);
        match (*status, first.code.as_str()) {
            (401, "UNAUTHORIZED") => {
                if let Some(project) = message
                    .strip_prefix("project ")
                    .and_then(|m| m.strip_suffix(" not found"))
                    .filter(|p| !p.contains(' '))
                {
                    return Some(Refusal::ProjectMissing {
                        project: project.to_string(),
                    });
                }
                let rest = message.strip_prefix("unauthorized to access repository: ")?;
                let (refused, action) = rest.split_once(", action: ")?;
                Some(Refusal::NoRight {
                    project: project_of(refused),
                    action: action.to_string(),
                    who: who.to_string(),
                    detail: message.to_string(),
                    reads: action != "pull",
                })
            }
            (403, "DENIED") if message.contains("exceed the configured upper limit") => {
                Some(Refusal::QuotaExceeded {
                    project: project_of(repository),
                    message: message.to_string(),
                })
            }
            (412, "PRECONDITION") if message.contains("configured as immutable") => {
                Some(Refusal::Immutable {
                    message: message.to_string(),
                })
            }
            _ => None,
        }
    }

    /// The project a refusal closes, and how far; `None` for one image's refusal (immutable tag).
    pub fn blocks(&self) -> Option<(&str, Blocks)> {
        match self {
            Refusal::ProjectMissing { project } | Refusal::CreateRefused { project, .. } => {
                Some((project, Blocks::Everything))
            }
            Refusal::NoRight { project, reads, .. } => Some((
                project,
                if *reads {
                    Blocks::Writes
                } else {
                    Blocks::Everything
                },
            )),
            Refusal::QuotaExceeded { project, .. } => Some((project, Blocks::Writes)),
            Refusal::Immutable { .. } => None,
        }
    }

    /// The kind counted in summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::ProjectMissing { .. } => "harbor project missing",
            Refusal::CreateRefused { .. } => "harbor project not created",
            Refusal::NoRight { .. } => "harbor right missing",
            Refusal::QuotaExceeded { .. } => "harbor quota exceeded",
            Refusal::Immutable { .. } => "harbor immutable tag",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ProjectMissing { project } => write!(f, "Harbor project {project} not found"),
            Refusal::CreateRefused {
                project,
                who,
                status,
                message,
            } => write!(
                f,
                "Harbor refused to create project {project} for {who} ({status}: {message}): create it in Harbor, or use an account allowed to create projects"
            ),
            Refusal::NoRight {
                project,
                action,
                who,
                detail,
                ..
            } => write!(
                f,
                "{who} may not {action} in Harbor project {project}: {detail}"
            ),
            Refusal::QuotaExceeded { project, message } => {
                write!(f, "quota exceeded in project {project}: {message}")
            }
            Refusal::Immutable { message } => write!(
                f,
                "immutable in Harbor: {message} (Harbor refuses every push to an existing immutable tag)"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// The repository a `/v2/<repository>/(blobs|manifests|tags)/…` URL names.
fn repository_in(url: &str) -> Option<&str> {
    let rest = &url[url.find("/v2/")? + 4..];
    ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .map(|i| &rest[..i])
}

/// Harbor wraps errors as `msg: cause`, and many of its `/v2` answers repeat one text twice that way.
fn undoubled(message: &str) -> &str {
    let n = message.len();
    if n >= 2 && n.is_multiple_of(2) {
        let half = (n - 2) / 2;
        if message.is_char_boundary(half)
            && &message[half..half + 2] == ": "
            && message[..half] == message[half + 2..]
        {
            return &message[..half];
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::ApiError;

    fn answer(status: u16, code: &str, message: &str) -> RegistryError {
        at("http://h/v2/q/one/blobs/uploads/x", status, code, message)
    }

    fn at(url: &str, status: u16, code: &str, message: &str) -> RegistryError {
        RegistryError::Status {
            method: "PUT".into(),
            url: url.into(),
            status,
            errors: vec![ApiError {
                code: code.into(),
                message: message.into(),
                storage_full: None,
            }],
            retry_after: None,
        }
    }

    #[test]
    fn harbor_answers_become_refusals() {
        let who = "user robot$team+ci (from --username/--password-stdin)";
        let missing = answer(
            401,
            "UNAUTHORIZED",
            "project nope not found: project nope not found",
        );
        assert_eq!(
            Refusal::recognise(&missing, who),
            Some(Refusal::ProjectMissing {
                project: "nope".into()
            })
        );
        let push = "unauthorized to access repository: other/app, action: push";
        let r = Refusal::recognise(
            &answer(401, "UNAUTHORIZED", &format!("{push}: {push}")),
            who,
        )
        .unwrap();
        assert_eq!(r.blocks(), Some(("other", Blocks::Writes)));
        assert_eq!(
            r.to_string(),
            format!("{who} may not push in Harbor project other: {push}")
        );
        let quota = "adding 4.9 KiB of storage resource, which when updated to current usage of 5.9 KiB will exceed the configured upper limit of 10.0 KiB.";
        let r = Refusal::recognise(&answer(403, "DENIED", quota), who).unwrap();
        assert_eq!(
            r.to_string(),
            format!("quota exceeded in project q: {quota}")
        );
        assert_eq!(r.blocks(), Some(("q", Blocks::Writes)));
        let immutable = "Failed to process request due to 'team/app:v1' configured as immutable.";
        let r = Refusal::recognise(&answer(412, "PRECONDITION", immutable), who);
        assert!(r.unwrap().to_string().starts_with("immutable in Harbor: "));
        // Plain registries' refusals are not Harbor's.
        assert_eq!(
            Refusal::recognise(&answer(401, "UNAUTHORIZED", "authentication required"), who),
            None
        );
        assert_eq!(
            Refusal::recognise(
                &answer(403, "DENIED", "requested access to the resource is denied"),
                who
            ),
            None
        );
        // A HEAD has no body: a refused read of the repository in its URL.
        let head = RegistryError::Status {
            method: "HEAD".into(),
            url: "http://h/v2/org/team/app/manifests/1.0".into(),
            status: 401,
            errors: Vec::new(),
            retry_after: None,
        };
        let r = Refusal::recognise(&head, who).unwrap();
        assert_eq!(r.blocks(), Some(("org", Blocks::Everything)));
        assert_eq!(repository_in("http://h/v2/a/b/c/tags/list"), Some("a/b/c"));
        assert_eq!(repository_in("http://h/api/v2.0/projects"), None);
        assert_eq!(undoubled("a: b"), "a: b");
        assert_eq!(undoubled("x: x"), "x");
    }
}
