//! Harbor's REST API (`/api/v2.0`): detect Harbor, its version, who the account is, and projects
//! (exists? create, quota).

pub mod refusal;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::Client;
use super::error::RegistryError;
pub use refusal::{Blocks, Refusal};

/// Whether the destination is Harbor: `GET /api/v2.0/ping` answers `Pong`. A plain registry
/// answers 404; any other failure is said as a warning (no project will be created), not
/// silently taken for a plain registry.
pub fn detect(client: &Client) -> bool {
    match client.api_anonymous("/api/v2.0/ping") {
        Ok((200, body)) if String::from_utf8_lossy(&body).contains("Pong") => true,
        Ok((404, _)) => false,
        Ok((status, _)) => {
            crate::warn!(
                "cannot tell whether {} is Harbor: GET /api/v2.0/ping answered {status}; treating it as a plain registry (no Harbor project will be created)",
                client.base()
            );
            false
        }
        Err(e) => {
            crate::warn!(
                "cannot tell whether {} is Harbor ({e}); treating it as a plain registry (no Harbor project will be created)",
                client.base()
            );
            false
        }
    }
}

/// `harbor_version` from `GET /api/v2.0/systeminfo` (`v2.12.4-6b4981d4`); `None` when Harbor
/// does not say (2.13 shows it to logged-in callers only).
pub fn version(client: &Client) -> Option<String> {
    #[derive(Deserialize)]
    struct Info {
        harbor_version: Option<String>,
    }
    match client.api("GET", "/api/v2.0/systeminfo", None) {
        Ok((200, body)) => serde_json::from_slice::<Info>(&body)
            .ok()
            .and_then(|i| i.harbor_version),
        Ok((status, _)) => {
            crate::debug!("GET /api/v2.0/systeminfo answered {status}");
            None
        }
        Err(e) => {
            crate::debug!("GET /api/v2.0/systeminfo: {e}");
            None
        }
    }
}

/// Who Harbor takes the credentials for (`GET /api/v2.0/users/current`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Account {
    /// 401: no credentials, or credentials Harbor does not know (a wrong, expired or disabled
    /// robot secret counts as anonymous).
    Anonymous,
    /// 412 "not available for security context: robot": a valid robot account.
    Robot,
    /// 200: a user; `admin` for a system administrator.
    User { name: String, admin: bool },
    /// Any other answer.
    Unknown { status: u16 },
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Account::Anonymous => f.write_str("anonymous"),
            Account::Robot => f.write_str("robot account"),
            Account::User { name, admin: true } => write!(f, "user {name}, system admin"),
            Account::User { name, .. } => write!(f, "user {name}"),
            Account::Unknown { status } => write!(f, "unknown account (users/current: {status})"),
        }
    }
}

pub fn account(client: &Client) -> Result<Account, RegistryError> {
    #[derive(Deserialize)]
    struct User {
        username: String,
        #[serde(default)]
        sysadmin_flag: bool,
    }
    let (status, body) = client.api("GET", "/api/v2.0/users/current", None)?;
    Ok(match status {
        401 => Account::Anonymous,
        412 => Account::Robot,
        200 => match serde_json::from_slice::<User>(&body) {
            Ok(u) => Account::User {
                name: u.username,
                admin: u.sysadmin_flag,
            },
            Err(_) => Account::Unknown { status },
        },
        _ => Account::Unknown { status },
    })
}

/// Whether a project exists (`HEAD /api/v2.0/projects?project_name=`); `None` when Harbor will
/// not say (anonymous callers get 401).
pub fn project_exists(client: &Client, name: &str) -> Result<Option<bool>, RegistryError> {
    let path = format!("/api/v2.0/projects?project_name={name}");
    let (status, _) = client.api("HEAD", &path, None)?;
    match status {
        200 => Ok(Some(true)),
        404 => Ok(Some(false)),
        401 | 403 => Ok(None),
        _ => Err(RegistryError::Protocol(format!(
            "HEAD {}{path}: unexpected status {status}",
            client.base()
        ))),
    }
}

/// What happened to a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectStatus {
    Exists,
    Created,
    /// Dry run: it would be created.
    WouldCreate,
    /// It does not exist and this run does not create it.
    Missing,
    /// Creation was refused.
    NotCreated,
    /// Harbor would not say.
    Unknown,
}

/// Creates a private project (`POST /api/v2.0/projects`: 201 created, 409 exists); `Err(Ok)` is
/// Harbor's refusal, `Err(Err)` any other failure.
pub fn create_project(
    client: &Client,
    name: &str,
) -> Result<ProjectStatus, Result<Refusal, RegistryError>> {
    let body = json!({"project_name": name, "metadata": {"public": "false"}});
    let (status, reply) = client
        .api("POST", "/api/v2.0/projects", Some(&body))
        .map_err(Err)?;
    let errors = RegistryError::parse_errors(&reply);
    match status {
        201 => Ok(ProjectStatus::Created),
        409 => Ok(ProjectStatus::Exists),
        401 | 403 => Err(Ok(Refusal::CreateRefused {
            project: name.to_string(),
            who: client.who(),
            status,
            message: errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| "no reason given".to_string()),
        })),
        _ => Err(Err(RegistryError::Status {
            method: "POST".into(),
            url: format!("{}/api/v2.0/projects", client.base()),
            status,
            errors,
            retry_after: None,
        })),
    }
}

/// A project's storage quota in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    /// -1: unlimited.
    pub limit: i64,
    pub used: i64,
}

impl Quota {
    /// Bytes left before the limit; `None` when unlimited.
    pub fn left(&self) -> Option<u64> {
        (self.limit >= 0).then(|| self.limit.saturating_sub(self.used).max(0) as u64)
    }
}

/// A project's quota from `GET /api/v2.0/projects/{name}/summary`; `None` when the account may
/// not read it (robots without project or quota read).
pub fn quota(client: &Client, name: &str) -> Result<Option<Quota>, RegistryError> {
    #[derive(Deserialize)]
    struct Storage {
        storage: i64,
    }
    #[derive(Deserialize)]
    struct QuotaBody {
        hard: Storage,
        used: Storage,
    }
    #[derive(Deserialize)]
    struct Summary {
        quota: Option<QuotaBody>,
    }
    let path = format!("/api/v2.0/projects/{name}/summary");
    let (status, body) = client.api_with("GET", &path, None, &[("X-Is-Resource-Name", "true")])?;
    match status {
        200 => Ok(serde_json::from_slice::<Summary>(&body)
            .ok()
            .and_then(|s| s.quota)
            .map(|q| Quota {
                limit: q.hard.storage,
                used: q.used.storage,
            })),
        _ => {
            crate::debug!("GET {path} answered {status}; quota unknown");
            Ok(None)
        }
    }
}
