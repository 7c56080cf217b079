//! The double's stand-in for Harbor's database: projects and quotas, blobs each project holds,
//! repositories, artifacts and tags, sessions, and what tests read back.

use std::collections::{BTreeMap, BTreeSet};

use super::errors::quota_exceeded;
use super::{HarborDouble, ProjectSpec, Role};

/// A project created through the double's `POST /api/v2.0/projects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedProject {
    pub name: String,
    /// `metadata.public` as sent.
    pub public: Option<String>,
    /// The account that created it.
    pub by: String,
    /// The storage limit it got (-1 unlimited).
    pub storage_limit: i64,
}

/// One answer of the token service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The account the credentials named, `None` for anonymous (or wrong credentials).
    pub account: Option<String>,
    /// The `scope` parameters as sent.
    pub scopes: Vec<String>,
    pub status: u16,
    /// What the token grants: (type, name, actions).
    pub access: Vec<(String, String, Vec<String>)>,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: i64,
    pub public: bool,
    pub storage_limit: i64,
    pub used: i64,
    /// Blobs associated with the project (Harbor's `project_blob`), with their sizes.
    pub blobs: BTreeMap<String, i64>,
}

#[derive(Debug, Default)]
pub struct Store {
    projects: BTreeMap<String, Project>,
    next_project_id: i64,
    /// Members added by Harbor itself: (project, account) → role (a project's creator).
    members: BTreeMap<(String, String), Role>,
    pub created: Vec<CreatedProject>,
    pub api_calls: Vec<(String, String, u16)>,
    pub tokens: Vec<TokenGrant>,
    repositories: BTreeSet<String>,
    /// Artifacts as (repository, digest).
    artifacts: BTreeSet<(String, String)>,
    /// (repository, tag) → digest.
    tags: BTreeMap<(String, String), String>,
    /// Every blob Harbor knows, with its size.
    blobs: BTreeMap<String, i64>,
    /// Bytes accepted so far by each upload session (from PATCH answers).
    sessions: BTreeMap<String, i64>,
    /// Session cookies handed out (`sid`).
    pub sids: BTreeSet<String>,
    /// CSRF tokens handed out in `X-Harbor-CSRF-Token`.
    pub csrf_tokens: BTreeSet<String>,
}

impl Store {
    pub fn new(config: &HarborDouble) -> Store {
        let mut s = Store::default();
        for p in &config.projects {
            s.add_project(p);
        }
        s
    }

    pub fn add_project(&mut self, spec: &ProjectSpec) -> i64 {
        self.next_project_id += 1;
        let id = self.next_project_id;
        self.projects.insert(
            spec.name.clone(),
            Project {
                id,
                public: spec.public,
                storage_limit: spec.storage_limit,
                used: 0,
                blobs: BTreeMap::new(),
            },
        );
        id
    }

    /// Makes `account` a member of `project` with `role`.
    pub fn add_member(&mut self, project: &str, account: &str, role: Role) {
        self.members
            .insert((project.to_string(), account.to_string()), role);
    }

    /// The role Harbor gave `account` in `project`.
    pub fn member(&self, project: &str, account: &str) -> Option<&Role> {
        self.members
            .get(&(project.to_string(), account.to_string()))
    }

    pub fn project(&self, name: &str) -> Option<&Project> {
        self.projects.get(name)
    }

    pub fn project_mut(&mut self, name: &str) -> Option<&mut Project> {
        self.projects.get_mut(name)
    }

    pub fn project_names(&self) -> BTreeSet<String> {
        self.projects.keys().cloned().collect()
    }

    /// Reserves `bytes` of `project`'s quota, or Harbor's overflow message (`reserveResources`).
    pub fn reserve(&mut self, project: &str, bytes: i64) -> Result<(), String> {
        let Some(p) = self.projects.get_mut(project) else {
            return Ok(());
        };
        let new_used = p.used + bytes;
        if p.storage_limit != -1 && new_used > p.storage_limit {
            return Err(quota_exceeded(p.storage_limit, p.used, new_used));
        }
        p.used = new_used;
        Ok(())
    }

    /// Gives back a reservation whose request did not succeed (`rollbackResources`).
    pub fn release(&mut self, project: &str, bytes: i64) {
        if let Some(p) = self.projects.get_mut(project) {
            p.used = (p.used - bytes).max(0);
        }
    }

    /// The size of a blob Harbor knows.
    pub fn blob(&self, digest: &str) -> Option<i64> {
        self.blobs.get(digest).copied()
    }

    pub fn project_has_blob(&self, project: &str, digest: &str) -> bool {
        self.projects
            .get(project)
            .is_some_and(|p| p.blobs.contains_key(digest))
    }

    /// Records a blob and associates it with `project`.
    pub fn associate(&mut self, project: &str, digest: &str, size: i64) {
        let size = *self.blobs.entry(digest.to_string()).or_insert(size);
        if let Some(p) = self.projects.get_mut(project) {
            p.blobs.insert(digest.to_string(), size);
        }
    }

    pub fn session_size(&self, session: &str) -> i64 {
        self.sessions.get(session).copied().unwrap_or(0)
    }

    pub fn set_session_size(&mut self, session: &str, size: i64) {
        self.sessions.insert(session.to_string(), size);
    }

    pub fn has_repository(&self, repository: &str) -> bool {
        self.repositories.contains(repository)
    }

    pub fn repositories(&self) -> Vec<String> {
        self.repositories.iter().cloned().collect()
    }

    pub fn has_artifact(&self, repository: &str, digest: &str) -> bool {
        self.artifacts
            .contains(&(repository.to_string(), digest.to_string()))
    }

    pub fn tag(&self, repository: &str, tag: &str) -> Option<&str> {
        self.tags
            .get(&(repository.to_string(), tag.to_string()))
            .map(String::as_str)
    }

    /// The tags of a repository Harbor knows, sorted.
    pub fn tags_of(&self, repository: &str) -> Option<Vec<String>> {
        if !self.repositories.contains(repository) {
            return None;
        }
        Some(
            self.tags
                .keys()
                .filter(|(r, _)| r == repository)
                .map(|(_, t)| t.clone())
                .collect(),
        )
    }

    /// Records a pushed manifest: its repository, the artifact and the tag (moved if it existed).
    pub fn record_artifact(&mut self, repository: &str, digest: &str, tag: Option<&str>) {
        self.repositories.insert(repository.to_string());
        self.artifacts
            .insert((repository.to_string(), digest.to_string()));
        if let Some(tag) = tag {
            self.tags.insert(
                (repository.to_string(), tag.to_string()),
                digest.to_string(),
            );
        }
    }

    /// Forgets a deleted manifest and the tags pointing at it.
    pub fn forget_artifact(&mut self, repository: &str, digest: &str) {
        self.artifacts
            .remove(&(repository.to_string(), digest.to_string()));
        self.tags
            .retain(|(r, _), d| !(r == repository && d == digest));
    }
}
