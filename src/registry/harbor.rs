//! Harbor's project API (`/api/v2.0`): detect Harbor, check and create projects.

use serde_json::json;

use super::client::Client;
use super::error::RegistryError;

/// Whether the destination is Harbor: `GET /api/v2.0/ping` answers `Pong`. A plain registry
/// answers 404; any other failure is said as a warning (no project will be created), not
/// silently taken for a plain registry.
pub fn detect(client: &Client) -> bool {
    match client.api("GET", "/api/v2.0/ping", None) {
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

/// What happened to a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectStatus {
    Exists,
    Created,
    /// Dry run: it would be created.
    WouldCreate,
}

/// Makes sure a project exists: `HEAD /api/v2.0/projects?project_name=`, then `POST` (201 created, 409 exists).
pub fn ensure_project(
    client: &Client,
    name: &str,
    dry_run: bool,
) -> Result<ProjectStatus, RegistryError> {
    let (status, _) = client.api(
        "HEAD",
        &format!("/api/v2.0/projects?project_name={name}"),
        None,
    )?;
    match status {
        200 => return Ok(ProjectStatus::Exists),
        404 => {}
        401 => return Err(refused(client, name, status, "check")),
        _ => {
            return Err(RegistryError::Protocol(format!(
                "HEAD {}/api/v2.0/projects?project_name={name}: unexpected status {status}",
                client.base()
            )));
        }
    }
    if dry_run {
        return Ok(ProjectStatus::WouldCreate);
    }
    let body = json!({"project_name": name, "metadata": {"public": "false"}});
    let (status, reply) = client.api("POST", "/api/v2.0/projects", Some(&body))?;
    match status {
        201 => Ok(ProjectStatus::Created),
        409 => Ok(ProjectStatus::Exists),
        401 | 403 => Err(refused(client, name, status, "create")),
        _ => Err(RegistryError::Status {
            method: "POST".into(),
            url: format!("{}/api/v2.0/projects", client.base()),
            status,
            errors: RegistryError::parse_errors(&reply),
            retry_after: None,
        }),
    }
}

fn refused(client: &Client, name: &str, status: u16, what: &str) -> RegistryError {
    let message = format!(
        "Harbor refused to {what} project {name:?} for {} ({status}): create the project in Harbor, use an account allowed to create projects, or pass --no-create-projects",
        client.who()
    );
    if status == 401 {
        RegistryError::Auth(message)
    } else {
        RegistryError::Status {
            method: "POST".into(),
            url: format!("{}/api/v2.0/projects", client.base()),
            status,
            errors: vec![super::error::ApiError {
                code: "FORBIDDEN".into(),
                message,
            }],
            retry_after: None,
        }
    }
}
