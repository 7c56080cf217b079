//! Checks a Harbor destination before anything is sent: per project a run needs, whether it exists
//! (or is created), whether the account may push (or pull) there, and its quota against the
//! bytes the run would add. What cannot go on closes that project only.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, Write};

use indicatif::HumanBytes;
use serde::{Serialize, Serializer};

use crate::destination::{Mapping, project_of};
use crate::inventory::Image;
use crate::registry::harbor::{self, Account, ProjectStatus, Quota, Refusal};
use crate::registry::{Client, RegistryError};
use crate::sink::registry::Projects;

/// What a run learnt about the Harbor it talks to, for summaries and reports.
#[derive(Debug, Clone, Serialize)]
pub struct Harbor {
    /// `harbor_version` from systeminfo, when Harbor says.
    pub version: Option<String>,
    pub account: Account,
}

/// What a run needs from its projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Push; `create` missing projects (in a dry run: say it would).
    Push { create: bool, dry_run: bool },
    /// Read (validate).
    Pull,
}

/// One project as the preflight found it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectCheck {
    pub status: ProjectStatus,
    /// The repository whose token was asked for.
    pub asked_for: String,
    /// The actions the token service grants there (`None`: not asked, or its tokens do not say).
    pub granted: Option<Vec<String>>,
    /// `None` when the account may not read it (or the project is not there yet).
    pub quota: Option<Quota>,
    /// Images of the run that go there.
    pub images: usize,
    /// Bytes the run adds there at most: each blob once, and the manifests (what the project
    /// already holds is only known once the run asks).
    pub adds_up_to: u64,
    /// Why the run cannot use the project, when it cannot.
    #[serde(serialize_with = "as_text")]
    pub problem: Option<Refusal>,
}

fn as_text<S: Serializer>(r: &Option<Refusal>, s: S) -> Result<S::Ok, S::Error> {
    r.as_ref().map(ToString::to_string).serialize(s)
}

/// The projects of a run, by name.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Preflight {
    pub projects: BTreeMap<String, ProjectCheck>,
}

/// Failures that concern the whole destination (it went away, the run is stopping).
fn fatal(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::Gone(_)
            | RegistryError::Stopped
            | RegistryError::Certificate { .. }
            | RegistryError::PlainHttp { .. }
            | RegistryError::Auth(_)
    )
}

/// Checks every project the sound `images` go to under `mapping`; `Err` only when the
/// destination as a whole fails.
pub fn check(
    client: &Client,
    images: &[Image],
    mapping: &Mapping,
    need: Need,
) -> Result<Preflight, RegistryError> {
    let mut projects: BTreeMap<String, ProjectCheck> = BTreeMap::new();
    for (project, (repository, count, bytes)) in needs(images, mapping) {
        let check = check_project(client, &project, repository, need)?;
        projects.insert(
            project,
            ProjectCheck {
                images: count,
                adds_up_to: bytes,
                ..check
            },
        );
    }
    Ok(Preflight { projects })
}

/// Per project: its first repository, its images, and the bytes they hold (each blob once, and
/// each manifest once).
fn needs(images: &[Image], mapping: &Mapping) -> BTreeMap<String, (String, usize, u64)> {
    let mut out: BTreeMap<String, (String, usize, u64)> = BTreeMap::new();
    let mut seen: HashSet<(String, crate::digest::Digest)> = HashSet::new();
    for image in images.iter().filter(|i| i.is_ok()) {
        let destination = mapping.destination(&image.repository);
        if mapping.check(&destination, true).is_err() {
            continue;
        }
        let project = project_of(&destination).to_string();
        let entry = out
            .entry(project.clone())
            .or_insert_with(|| (destination.clone(), 0, 0));
        entry.1 += 1;
        if destination < entry.0 {
            entry.0 = destination.clone();
        }
        let blobs = image.blobs.iter().map(|b| (b.digest, b.size));
        let manifests = image.manifests.iter().map(|m| (m.digest(), m.len()));
        for (digest, size) in blobs.chain(manifests) {
            if seen.insert((project.clone(), digest)) {
                entry.2 += size;
            }
        }
    }
    out
}

fn check_project(
    client: &Client,
    project: &str,
    repository: String,
    need: Need,
) -> Result<ProjectCheck, RegistryError> {
    let exists = match harbor::project_exists(client, project) {
        Ok(v) => v,
        Err(e) if fatal(&e) => return Err(e),
        Err(e) => {
            crate::warn!("cannot tell whether Harbor project {project} exists ({e})");
            None
        }
    };
    let (status, mut problem) = match (exists, need) {
        (Some(true), _) => (ProjectStatus::Exists, None),
        (
            Some(false),
            Need::Push {
                create: true,
                dry_run: true,
            },
        ) => (ProjectStatus::WouldCreate, None),
        (Some(false), Need::Push { create: true, .. }) => {
            match harbor::create_project(client, project) {
                Ok(status) => (status, None),
                Err(Ok(refusal)) => (ProjectStatus::NotCreated, Some(refusal)),
                Err(Err(e)) if fatal(&e) => return Err(e),
                Err(Err(e)) => (
                    ProjectStatus::NotCreated,
                    Some(Refusal::CreateRefused {
                        project: project.to_string(),
                        who: client.who(),
                        status: e.status().unwrap_or(0),
                        message: e.to_string(),
                    }),
                ),
            }
        }
        (Some(false), _) => (
            ProjectStatus::Missing,
            Some(Refusal::ProjectMissing {
                project: project.to_string(),
            }),
        ),
        (None, _) => (ProjectStatus::Unknown, None),
    };
    let usable = problem.is_none()
        && matches!(
            status,
            ProjectStatus::Exists | ProjectStatus::Created | ProjectStatus::Unknown
        );
    let granted = if usable {
        match client.granted(&repository) {
            Ok(g) => g,
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => {
                crate::warn!("cannot learn the rights in Harbor project {project} ({e})");
                None
            }
        }
    } else {
        None
    };
    if let Some(g) = &granted {
        let allows = |action: &str| g.iter().any(|a| a == action || a == "*");
        let action = match need {
            Need::Push { .. } if !allows("push") => Some("push"),
            Need::Pull if !allows("pull") => Some("pull"),
            _ => None,
        };
        if let Some(action) = action {
            let what = if g.is_empty() {
                "nothing".to_string()
            } else {
                g.join(", ")
            };
            problem = Some(Refusal::NoRight {
                project: project.to_string(),
                action: action.to_string(),
                who: client.who(),
                detail: format!("its token for repository:{repository} grants {what}"),
                reads: action == "push" && allows("pull"),
            });
        }
    }
    let quota = match need {
        Need::Push { .. } if usable && status != ProjectStatus::Unknown => {
            match harbor::quota(client, project) {
                Ok(q) => q,
                Err(e) if fatal(&e) => return Err(e),
                Err(e) => {
                    crate::debug!("quota of Harbor project {project}: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    Ok(ProjectCheck {
        status,
        asked_for: repository,
        granted,
        quota,
        images: 0,
        adds_up_to: 0,
        problem,
    })
}

impl Preflight {
    /// What the sink needs: projects closed to the run, and those a dry run would create.
    pub fn projects(&self) -> Projects {
        Projects {
            closed: self
                .projects
                .iter()
                .filter_map(|(p, c)| Some((p.clone(), c.problem.clone()?)))
                .collect(),
            absent: self
                .projects
                .iter()
                .filter(|(_, c)| c.status == ProjectStatus::WouldCreate)
                .map(|(p, _)| p.clone())
                .collect(),
        }
    }

    /// Says what was found, once per project: created, to create, refused, short of quota.
    pub fn tell(&self) {
        for (p, c) in &self.projects {
            match c.status {
                ProjectStatus::Created => crate::note!("created Harbor project {p}"),
                ProjectStatus::WouldCreate => crate::note!("would create Harbor project {p}"),
                _ => {}
            }
            if let Some(problem) = &c.problem {
                let already = match problem {
                    Refusal::NoRight { reads: true, .. } => "; those already there are skipped",
                    _ => "",
                };
                crate::error!(
                    "{problem} ({} of this run's images go there{already})",
                    c.images
                );
                continue;
            }
            if let Some(left) = c.quota.and_then(|q| q.left())
                && c.adds_up_to > left
            {
                crate::warn!(
                    "Harbor project {p}: this run adds up to {} but only {} of its quota ({}) is left; images past the limit will fail",
                    HumanBytes(c.adds_up_to),
                    HumanBytes(left),
                    HumanBytes(c.quota.map_or(0, |q| q.limit.max(0) as u64))
                );
            }
        }
    }

    /// Projects with a problem.
    pub fn refused(&self) -> BTreeSet<&str> {
        self.projects
            .iter()
            .filter(|(_, c)| c.problem.is_some())
            .map(|(p, _)| p.as_str())
            .collect()
    }

    /// The per-project table of a dry run: state, push right, quota, and what the run adds
    /// (`adds`: bytes per project from the plan; the preflight's upper bound otherwise).
    pub fn write_table(&self, out: &mut dyn Write, adds: &BTreeMap<String, u64>) -> io::Result<()> {
        let mut rows: Vec<[String; 7]> = vec![[
            "PROJECT".into(),
            "STATUS".into(),
            "PUSH".into(),
            "USED".into(),
            "LIMIT".into(),
            "RUN ADDS".into(),
            "AFTER RUN".into(),
        ]];
        for (p, c) in &self.projects {
            let status = match c.status {
                ProjectStatus::Exists => "exists",
                ProjectStatus::Created => "created",
                ProjectStatus::WouldCreate => "would create",
                ProjectStatus::Missing => "missing",
                ProjectStatus::NotCreated => "not created",
                ProjectStatus::Unknown => "unknown",
            };
            let push = match (&c.problem, &c.granted) {
                (Some(Refusal::NoRight { .. }), _) => "no",
                (Some(_), _) => "-",
                (None, Some(_)) => "yes",
                (None, None) => "?",
            };
            let adds = adds.get(p).copied().unwrap_or(c.adds_up_to);
            let (used, limit, after) = match c.quota {
                Some(q) => {
                    let used = q.used.max(0) as u64;
                    let after = match q.left() {
                        None => "unlimited".to_string(),
                        Some(left) if adds > left => {
                            format!("over by {}", HumanBytes(adds - left))
                        }
                        Some(left) => format!("{} left", HumanBytes(left - adds)),
                    };
                    let limit = if q.limit < 0 {
                        "unlimited".to_string()
                    } else {
                        HumanBytes(q.limit as u64).to_string()
                    };
                    (HumanBytes(used).to_string(), limit, after)
                }
                None => ("?".into(), "?".into(), "?".into()),
            };
            rows.push([
                p.clone(),
                status.into(),
                push.into(),
                used,
                limit,
                HumanBytes(adds).to_string(),
                after,
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            writeln!(out, "{}", cells.join("  ").trim_end())?;
        }
        Ok(())
    }
}
