//! A **double** of Harbor 2.x (not Harbor): a [`Proxy`] hook in front of a real docker-registry
//! without auth that answers the way Harbor's core does in front of its own registry.
//!
//! Harbor cannot run in ferry's tests, so this double reproduces what Harbor answers, each
//! behaviour read from goharbor/harbor's source (v2.5–v2.13; file paths below are from v2.12.4
//! unless a version is named). Configure it per test with [`HarborDouble`] (the version to
//! mimic, accounts, grants, projects, quotas, immutable rules) and start it with
//! [`Proxy::harbor`].
//!
//! | behaviour | Harbor source |
//! | --- | --- |
//! | error bodies `{"errors":[{"code","message"}]}` + newline, wrapped errors `msg: cause`, 5xx say "internal server error" | `src/lib/errors/errors.go`, `src/lib/http/error.go` |
//! | `/v2/` answers 401 with `Bearer realm="<ext>/service/token",service="harbor-registry"[,scope=…]` when no `Authorization` was sent, `Basic realm="harbor"` when one was | `src/server/middleware/v2auth/auth.go` (`getChallenge`) |
//! | every `/v2/<repo>/…` request checked: `push` for POST/PUT/PATCH, `pull` for GET/HEAD, also `pull` on `from=` of a mount; 401 UNAUTHORIZED "unauthorized to access repository: R, action: A: unauthorized to access repository: R, action: A"; a missing project 401 "project P not found: project P not found" with an empty `Www-Authenticate`; GET/HEAD without `Authorization` 401 | `src/server/middleware/v2auth/{auth,access}.go` |
//! | repository names need two components: 400 "bad request: invalid repository name: X" (before auth) | `src/server/middleware/artifactinfo/artifact_info.go` |
//! | Basic auth on `/v2` and the API; robots `robot$name` / `robot$project+name`; a wrong, expired or disabled secret is anonymous | `src/server/middleware/security/{robot,basic_auth,unauthorized}.go` |
//! | token service: unknown service 400; anonymous without scope 401; otherwise 200 with every action the account has in the project (not just those asked), none for a missing project or a one-component name; `"*"` added up to 2.8; `access_token` empty | `src/core/service/token/{token,creator,authutils}.go`, v2.8.0 `creator.go` |
//! | tokens: the access map is keyed by project | `src/common/security/v2token/context.go` |
//! | `GET /api/v2.0/ping` → `Pong`; `systeminfo` `harbor_version` anonymous up to 2.12, logged-in only from 2.13 | `src/server/v2.0/handler/{ping,systeminfo}.go`, `src/controller/systeminfo/controller.go` (v2.13.0) |
//! | `POST /api/v2.0/projects`: a user who creates a project becomes its project admin | `src/pkg/project/dao/dao.go` (`Create`) |
//! | `POST /api/v2.0/projects`: 401 anonymous, 403 "Only system level robot can create project", 403 "Only system admin can create project" (admin-only creation), 400 bad `metadata.public`, 400 "project name is not in lower case or contains illegal characters", 409 "The project named X already exists", 201 + `Location: /api/v2.0/projects/<id>`; `storage_limit` only taken from a system admin | `src/server/v2.0/handler/project.go`, `src/pkg/project/{manager.go,dao/dao.go}` |
//! | `HEAD /api/v2.0/projects?project_name=` 401 anonymous, else 200/404 | `project.go` (`HeadProject`) |
//! | `GET /api/v2.0/projects/{name}/summary`: project read needed (401/403), quota only with quota read | `project.go` (`GetProjectSummary`) |
//! | `GET /api/v2.0/users/current`: 401 anonymous, 412 "get current user not available for security context: robot", 200 for users | `src/server/v2.0/handler/user.go` |
//! | quotas: POST upload asks 0 bytes (from 2.9; nothing before), a mount the blob's size unless the project has it, PUT blob its `Content-Length` (else the session's size) unless the project has it, PUT manifest its size plus referenced blobs the project lacks (foreign layers free); over the limit 403 DENIED "adding 1.2 MiB of storage resource, which when updated to current usage of 9.5 MiB will exceed the configured upper limit of 10.0 MiB."; reservations rolled back when the answer is not 2xx/3xx | `src/server/middleware/quota/*.go`, `src/controller/quota/controller.go`, `src/pkg/quota/{errors,util}.go`, `src/pkg/quota/types/format.go` |
//! | immutable tags: a manifest PUT to an existing tag a rule matches gets 412 PRECONDITION "Failed to process request due to 'repo:tag' configured as immutable." (repository without project), even with identical bytes | `src/server/middleware/immutable/{pushmf,error}.go`, `src/pkg/immutable/match/rule/match.go` |
//! | unknown manifest content types fall to schema1 parsing: 400 MANIFEST_INVALID "unmarshal manifest failed: missing signature key" | `src/server/middleware/quota/put_manifest.go`, `src/pkg/distribution/distribution.go` (Distribution v2.8.2 `manifests.go`, `schema1`) |
//! | index children must be artifacts of the same repository: 404 "artifact R@D not found" once the registry has stored the index (Harbor records nothing, so the tag stays invisible) | `src/controller/artifact/{controller,abstractor}.go`, `src/server/registry/manifest.go` |
//! | cosign `sha256-<hex>.sig` tags with a simplesigning layer: the subject must exist up to 2.7 (404 "artifact R@sha256:<hex> not found", after the registry stored it), not from 2.8; a `subject` field is only handled from 2.8 and never refused | v2.5.0/v2.7.0/v2.8.0 `src/server/middleware/{cosign,subject}/*.go` |
//! | GET/HEAD manifest and `tags/list` answered from Harbor's database: 404 "repository R not found", "artifact R:T not found"; tags sorted; HEAD blob 404 for a blob Harbor does not know | `src/server/registry/{manifest,tag}.go`, `src/server/middleware/blob/head_blob.go` |
//! | responses carry `Set-Cookie: sid=…`; a request sending `sid` back gets 403 FORBIDDEN "CSRF token invalid" on POST/PUT/PATCH/DELETE unless it sends a token the double gave in `X-Harbor-CSRF-Token` | `src/server/middleware/{session,csrf}/*.go`, `src/core/main.go`, gorilla/csrf v1.6.2/v1.7.2 |
//!
//! Where the double departs from Harbor, on purpose: tokens are HS256 JWTs signed with a key
//! the double owns (Harbor signs RS256; only the double checks them); Harbor's database is the
//! double's memory of what went through it (a registry written to directly is not seen, which
//! is how tests make "in the registry but not in Harbor"); robots and roles only carry the
//! permissions listed in [`Perm`], and the summary shows `repo_count` and `quota` only; the
//! order of actions in a token is fixed (Harbor's follows a Go map); a CSRF token is any token
//! the double handed out (gorilla/csrf also ties it to its `_gorilla_csrf` cookie); error texts
//! that quote Go's JSON parser are approximations.

mod api;
mod artifact;
mod double;
mod errors;
mod security;
mod store;
mod token;
mod uploads;
mod v2;
mod v2auth;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::proxy::Proxy;

pub use store::{CreatedProject, TokenGrant};

/// The Harbor release the double mimics (2.5 to 2.13; behaviours change at 2.8, 2.9 and 2.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HarborVersion {
    pub minor: u8,
    pub patch: u8,
}

impl HarborVersion {
    pub const V2_5: HarborVersion = HarborVersion::new(5, 6);
    pub const V2_7: HarborVersion = HarborVersion::new(7, 4);
    pub const V2_8: HarborVersion = HarborVersion::new(8, 6);
    pub const V2_9: HarborVersion = HarborVersion::new(9, 5);
    pub const V2_12: HarborVersion = HarborVersion::new(12, 4);
    pub const V2_13: HarborVersion = HarborVersion::new(13, 5);

    /// `2.<minor>.<patch>`.
    pub const fn new(minor: u8, patch: u8) -> HarborVersion {
        HarborVersion { minor, patch }
    }

    /// What `systeminfo` says: `v2.12.4-<8 hex of the release commit>`.
    pub fn harbor_version(&self) -> String {
        format!("v2.{}.{}-{}", self.minor, self.patch, self.commit())
    }

    /// The first 8 hex of goharbor/harbor's release tag commit (zeros for other versions).
    fn commit(&self) -> &'static str {
        match (self.minor, self.patch) {
            (5, 6) => "9b0ac301",
            (7, 4) => "8693b25a",
            (8, 6) => "c090df90",
            (9, 5) => "672ec4ad",
            (12, 4) => "6b4981d4",
            (13, 5) => "ffae5421",
            _ => "00000000",
        }
    }

    /// Up to 2.7, a cosign signature is refused while its subject is not in the repository.
    pub(crate) fn cosign_needs_subject(&self) -> bool {
        self.minor <= 7
    }

    /// Up to 2.8 (Notary's time), a token with pull, push and delete also says `*`.
    pub(crate) fn token_star(&self) -> bool {
        self.minor <= 8
    }

    /// From 2.9, a plain upload POST checks the quota with 0 bytes.
    pub(crate) fn post_checks_quota(&self) -> bool {
        self.minor >= 9
    }

    /// From 2.13, `harbor_version` is only shown to logged-in callers.
    pub(crate) fn version_needs_login(&self) -> bool {
        self.minor >= 13
    }
}

/// A permission, as Harbor's RBAC names them (resource, action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perm {
    /// repository pull
    Pull,
    /// repository push
    Push,
    /// repository delete
    Delete,
    /// project read (the project itself, its summary)
    ReadProject,
    /// quota read (the quota in the summary)
    ReadQuota,
    /// project create, at system level (system robots only)
    CreateProject,
}

/// A project member's role (`src/common/rbac/project/rbac_role.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    ProjectAdmin,
    Maintainer,
    Developer,
    Guest,
    LimitedGuest,
}

impl Role {
    /// What the role may do among the permissions the double knows.
    pub fn perms(self) -> &'static [Perm] {
        use Perm::*;
        match self {
            Role::ProjectAdmin | Role::Maintainer => &[Pull, Push, Delete, ReadProject, ReadQuota],
            Role::Developer => &[Pull, Push, ReadProject, ReadQuota],
            Role::Guest | Role::LimitedGuest => &[Pull, ReadProject, ReadQuota],
        }
    }
}

/// What kind of account, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountKind {
    /// A system administrator: everything everywhere.
    Admin,
    /// A local user with a role in some projects.
    User { roles: BTreeMap<String, Role> },
    /// `robot$<name>`: permissions per project (`*` = every project); [`Perm::CreateProject`] in
    /// the `*` entry lets it create projects.
    SystemRobot { grants: BTreeMap<String, Vec<Perm>> },
    /// `robot$<project>+<name>`: permissions in its own project only (push brings pull).
    ProjectRobot { project: String, perms: Vec<Perm> },
}

/// One account. Robots log in with their full name (`robot$…`) and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub secret: String,
    pub kind: AccountKind,
    /// An expired or disabled robot is treated as anonymous.
    pub disabled: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl Account {
    pub fn is_robot(&self) -> bool {
        matches!(
            self.kind,
            AccountKind::SystemRobot { .. } | AccountKind::ProjectRobot { .. }
        )
    }
}

/// A project that exists when the double starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSpec {
    pub name: String,
    /// `metadata.public`: anyone (anonymous too) may pull.
    pub public: bool,
    /// `quota.hard.storage` in bytes; -1 is unlimited.
    pub storage_limit: i64,
}

/// An immutable tag rule: in `project`, repositories (without the project) matching
/// `repositories` and tags matching `tags` (doublestar globs, `**` crosses `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImmutableRule {
    pub project: String,
    pub repositories: String,
    pub tags: String,
}

/// The Harbor double's configuration. Build it with the methods, or set fields directly.
#[derive(Debug, Clone)]
pub struct HarborDouble {
    pub version: HarborVersion,
    pub accounts: Vec<Account>,
    /// Harbor ships with the public project `library`.
    pub projects: Vec<ProjectSpec>,
    pub immutable: Vec<ImmutableRule>,
    /// `project_creation_restriction: adminonly` (Harbor's default is `everyone`).
    pub admin_only_project_creation: bool,
    /// `storage_per_project`: the quota of projects created without one (-1, Harbor's default).
    pub storage_per_project: i64,
    /// `token_expiration` (Harbor's default: 30 minutes).
    pub token_lifetime: Duration,
}

impl Default for HarborDouble {
    fn default() -> Self {
        HarborDouble::new(HarborVersion::V2_12)
    }
}

impl HarborDouble {
    /// Harbor `version` with the public `library` project and no accounts.
    pub fn new(version: HarborVersion) -> HarborDouble {
        HarborDouble {
            version,
            accounts: Vec::new(),
            projects: vec![ProjectSpec {
                name: "library".to_string(),
                public: true,
                storage_limit: -1,
            }],
            immutable: Vec::new(),
            admin_only_project_creation: false,
            storage_per_project: -1,
            token_lifetime: Duration::from_secs(30 * 60),
        }
    }

    /// Harbor 2.12 with one admin and `library`.
    pub fn with_admin(user: &str, password: &str) -> HarborDouble {
        HarborDouble::default().admin(user, password)
    }

    pub fn version(mut self, version: HarborVersion) -> HarborDouble {
        self.version = version;
        self
    }

    fn account(mut self, name: &str, secret: &str, kind: AccountKind) -> HarborDouble {
        self.accounts.push(Account {
            name: name.to_string(),
            secret: secret.to_string(),
            kind,
            disabled: false,
        });
        self
    }

    /// A system administrator.
    pub fn admin(self, name: &str, password: &str) -> HarborDouble {
        self.account(name, password, AccountKind::Admin)
    }

    /// A local user with `roles` (project, role).
    pub fn user(self, name: &str, password: &str, roles: &[(&str, Role)]) -> HarborDouble {
        let roles = roles.iter().map(|(p, r)| (p.to_string(), *r)).collect();
        self.account(name, password, AccountKind::User { roles })
    }

    /// A system robot `robot$<name>` with `grants` (project or `*`, permissions).
    pub fn system_robot(
        self,
        name: &str,
        secret: &str,
        grants: &[(&str, &[Perm])],
    ) -> HarborDouble {
        let grants = grants
            .iter()
            .map(|(p, perms)| (p.to_string(), perms.to_vec()))
            .collect();
        self.account(
            &format!("robot${name}"),
            secret,
            AccountKind::SystemRobot { grants },
        )
    }

    /// A project robot `robot$<project>+<name>` with `perms` in `project`.
    pub fn project_robot(
        self,
        project: &str,
        name: &str,
        secret: &str,
        perms: &[Perm],
    ) -> HarborDouble {
        self.account(
            &format!("robot${project}+{name}"),
            secret,
            AccountKind::ProjectRobot {
                project: project.to_string(),
                perms: perms.to_vec(),
            },
        )
    }

    /// Marks an account as expired (a robot) so its credentials count as anonymous.
    pub fn disabled(mut self, name: &str) -> HarborDouble {
        for a in self.accounts.iter_mut().filter(|a| a.name == name) {
            a.disabled = true;
        }
        self
    }

    /// A private project with a storage limit (-1 unlimited); replaces one of the same name.
    pub fn project(mut self, name: &str, storage_limit: i64) -> HarborDouble {
        self.projects.retain(|p| p.name != name);
        self.projects.push(ProjectSpec {
            name: name.to_string(),
            public: false,
            storage_limit,
        });
        self
    }

    /// A public project without limit; replaces one of the same name.
    pub fn public_project(mut self, name: &str) -> HarborDouble {
        self.projects.retain(|p| p.name != name);
        self.projects.push(ProjectSpec {
            name: name.to_string(),
            public: true,
            storage_limit: -1,
        });
        self
    }

    /// An immutable tag rule in `project`.
    pub fn immutable(mut self, project: &str, repositories: &str, tags: &str) -> HarborDouble {
        self.immutable.push(ImmutableRule {
            project: project.to_string(),
            repositories: repositories.to_string(),
            tags: tags.to_string(),
        });
        self
    }

    /// Only system admins (and system robots with [`Perm::CreateProject`]) create projects.
    pub fn admin_only_project_creation(mut self) -> HarborDouble {
        self.admin_only_project_creation = true;
        self
    }
}

impl Proxy {
    /// A proxy playing Harbor (the double) in front of the registry at `backend`, which must
    /// run without auth (Harbor's core does the auth in front of its registry).
    pub fn harbor(backend: &str, double: HarborDouble) -> Result<Proxy> {
        Proxy::start_hooked(backend, |url| {
            Some(Arc::new(double::Double::new(double, url)) as Arc<dyn crate::proxy::Hook>)
        })
    }

    fn double(&self) -> &double::Double {
        self.hook()
            .and_then(|h| h.as_any().downcast_ref::<double::Double>())
            .expect("this proxy has no Harbor double")
    }

    /// Harbor double: projects that exist now.
    pub fn projects(&self) -> BTreeSet<String> {
        self.double().with_store(|s| s.project_names())
    }

    /// Harbor double: projects created through the API, in order.
    pub fn created_projects(&self) -> Vec<CreatedProject> {
        self.double().with_store(|s| s.created.clone())
    }

    /// Harbor double: every `/api/v2.0` call as (method, path with query, status).
    pub fn api_calls(&self) -> Vec<(String, String, u16)> {
        self.double().with_store(|s| s.api_calls.clone())
    }

    /// Harbor double: every `/service/token` answer.
    pub fn token_grants(&self) -> Vec<TokenGrant> {
        self.double().with_store(|s| s.tokens.clone())
    }

    /// Harbor double: a project's (hard limit, used) storage in bytes.
    pub fn quota(&self, project: &str) -> Option<(i64, i64)> {
        self.double()
            .with_store(|s| s.project(project).map(|p| (p.storage_limit, p.used)))
    }

    /// Harbor double: changes a project's storage limit, as an admin would in the UI.
    pub fn set_storage_limit(&self, project: &str, bytes: i64) {
        self.double().with_store_mut(|s| {
            if let Some(p) = s.project_mut(project) {
                p.storage_limit = bytes;
            }
        })
    }

    /// Harbor double: the first request for which `matches(method, path)` holds (and every one
    /// after it) finds every token handed out before it expired, as Harbor finds a token past
    /// its `exp`: refused as anonymous, with `Basic realm="harbor"`.
    pub fn expire_tokens_when(&self, matches: impl Fn(&str, &str) -> bool + Send + 'static) {
        *self.double().expire_when.lock().unwrap() = Some(Box::new(matches));
    }

    /// Harbor double: the tags Harbor knows in `repository` (sorted), or `None`.
    pub fn harbor_tags(&self, repository: &str) -> Option<Vec<String>> {
        self.double().with_store(|s| s.tags_of(repository))
    }
}
