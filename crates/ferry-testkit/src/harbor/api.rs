//! Harbor's REST API (`/api/v2.0`) as far as a migration uses it: ping, systeminfo, projects
//! (create, exists?, summary with quota) and the current user.

use serde_json::json;

use super::double::Double;
use super::errors::{JSON, error, go_json};
use super::security::{self, Principal};
use super::store::{CreatedProject, Store};
use super::{AccountKind, Perm, ProjectSpec};
use crate::proxy::{Incoming, Reply};

pub(super) fn handle(d: &Double, req: &mut Incoming<'_>) -> Reply {
    let api = req
        .path
        .strip_prefix("/api/v2.0")
        .unwrap_or_default()
        .to_string();
    let body = req.read_body(1 << 20);
    let principal = security::identify(&d.config, &d.signer, req.header("Authorization"), req.path);
    let mut store = d.store.lock().unwrap();
    let reply = match (req.method, api.as_str()) {
        ("GET", "/ping") => Reply::new(200).body("text/plain", "Pong"),
        ("GET", "/systeminfo") => systeminfo(d, &principal),
        ("HEAD", "/projects") => head_project(&store, &principal, req.param("project_name")),
        ("POST", "/projects") => create_project(d, &mut store, &principal, req, &body),
        ("GET", "/users/current") => current_user(d, &principal),
        ("GET", p) if p.starts_with("/projects/") && p.ends_with("/summary") => {
            let name = &p["/projects/".len()..p.len() - "/summary".len()];
            let by_name = req
                .header("X-Is-Resource-Name")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            summary(d, &store, &principal, name, by_name)
        }
        _ => error(
            "NOT_FOUND",
            &format!(
                "{} {} is not served by the ferry-testkit Harbor double",
                req.method, req.path
            ),
        ),
    };
    let full = if req.raw_query.is_empty() {
        req.path.to_string()
    } else {
        format!("{}?{}", req.path, req.raw_query)
    };
    store
        .api_calls
        .push((req.method.to_string(), full, reply.status));
    reply
}

/// `GetSystemInfo`: `harbor_version` for everyone up to 2.12, for logged-in callers from 2.13.
fn systeminfo(d: &Double, principal: &Principal) -> Reply {
    let v = d.config.version;
    let logged_in = principal.is_authenticated();
    let mut info = json!({
        "auth_mode": "db_auth",
        "self_registration": false,
    });
    if v.minor >= 8 {
        info["primary_auth_mode"] = json!(false);
    }
    if v.minor >= 9 {
        info["banner_message"] = json!("");
    }
    if v.minor >= 10 {
        info["oidc_provider_name"] = json!("");
    }
    if logged_in || !v.version_needs_login() {
        info["harbor_version"] = json!(v.harbor_version());
    }
    if logged_in {
        let restriction = if d.config.admin_only_project_creation {
            "adminonly"
        } else {
            "everyone"
        };
        info["has_ca_root"] = json!(false);
        info["project_creation_restriction"] = json!(restriction);
        info["external_url"] = json!(d.url);
        info["registry_url"] = json!(d.url.split_once("://").map_or(d.url.as_str(), |x| x.1));
        info["read_only"] = json!(false);
        info["registry_storage_provider_name"] = json!("filesystem");
        info["notification_enable"] = json!(true);
    }
    Reply::new(200).body(JSON, go_json(&info))
}

/// `HeadProject`: any logged-in caller learns whether the project exists.
fn head_project(store: &Store, principal: &Principal, name: Option<&str>) -> Reply {
    if !principal.is_authenticated() {
        return error("UNAUTHORIZED", "unauthorized");
    }
    match name {
        None => error("BAD_REQUEST", "project_name in query is required"),
        Some(n) if store.project(n).is_some() => Reply::new(200),
        Some(n) => error("NOT_FOUND", &format!("project {n} not found")),
    }
}

/// `CreateProject` (handler checks, then the manager's name rules, then the unique name).
fn create_project(
    d: &Double,
    store: &mut Store,
    principal: &Principal,
    req: &Incoming<'_>,
    body: &[u8],
) -> Reply {
    if !principal.is_authenticated() {
        return error("UNAUTHORIZED", "unauthorized");
    }
    let account = principal.account(&d.config);
    if matches!(
        account.map(|a| &a.kind),
        Some(AccountKind::ProjectRobot { .. })
    ) {
        return error("FORBIDDEN", "Only system level robot can create project");
    }
    let may_create = security::can_create_projects(&d.config, principal);
    if d.config.admin_only_project_creation && !may_create {
        return error("FORBIDDEN", "Only system admin can create project");
    }
    let parsed: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error("BAD_REQUEST", &format!("parsing project body failed: {e}")),
    };
    let name = parsed["project_name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let requested = parsed["storage_limit"].as_i64().filter(|&l| l != 0);
    let storage_limit = match requested {
        Some(l) if may_create => l,
        _ => d.config.storage_per_project,
    };
    let mut public = parsed["metadata"]["public"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if public.is_empty()
        && let Some(b) = parsed["public"].as_bool()
    {
        public = b.to_string();
    }
    let sent_public = parsed["metadata"]["public"].as_str().map(str::to_string);
    if public.is_empty() {
        public = "false".to_string();
    }
    if public != "true" && public != "false" {
        let message =
            format!("metadata.public should only be 'true' or 'false', but got: '{public}'");
        return error("BAD_REQUEST", &message);
    }
    if name.is_empty() || name.len() > 255 {
        let message =
            format!("Project name {name} is illegal in length. (greater than 255 or less than 1)");
        return error("BAD_REQUEST", &message);
    }
    if !project_name_ok(&name) {
        return error(
            "BAD_REQUEST",
            "project name is not in lower case or contains illegal characters",
        );
    }
    if store.project(&name).is_some() {
        return error(
            "CONFLICT",
            &format!("The project named {name} already exists"),
        );
    }
    let id = store.add_project(&ProjectSpec {
        name: name.clone(),
        public: public == "true",
        storage_limit,
    });
    // The creator becomes the project's admin (`dao.Create` inserts the owner as a member).
    if let Some(a) = account.filter(|a| matches!(a.kind, AccountKind::User { .. })) {
        store.add_member(&name, &a.name, super::Role::ProjectAdmin);
    }
    store.created.push(CreatedProject {
        name: name.clone(),
        public: sent_public,
        by: principal.name(&d.config).to_string(),
        storage_limit,
    });
    let by_name = req
        .header("X-Resource-Name-In-Location")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let location = if by_name {
        format!("/api/v2.0/projects/{name}")
    } else {
        format!("/api/v2.0/projects/{id}")
    };
    Reply::new(201).header("Location", &location)
}

/// `restrictedNameChars`: `^[a-z0-9]+(?:[._-][a-z0-9]+)*$`.
fn project_name_ok(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.split(['.', '_', '-'])
        .all(|part| !part.is_empty() && part.chars().all(alnum))
}

/// `GetProjectSummary`: project read needed; the quota only with quota read.
fn summary(
    d: &Double,
    store: &Store,
    principal: &Principal,
    name_or_id: &str,
    by_name: bool,
) -> Reply {
    let name = match name_or_id.parse::<i64>() {
        Ok(id) if !by_name => store
            .project_names()
            .into_iter()
            .find(|n| store.project(n).is_some_and(|p| p.id == id)),
        _ => Some(name_or_id.to_string()),
    };
    let exists = name.as_deref().and_then(|n| store.project(n)).is_some();
    let admin = security::is_admin(&d.config, principal);
    let readable = match &name {
        Some(n) => admin || security::can(&d.config, store, principal, n, Perm::ReadProject),
        None => admin,
    };
    if !readable {
        return if principal.is_authenticated() {
            error("FORBIDDEN", "forbidden")
        } else {
            error("UNAUTHORIZED", "unauthorized")
        };
    }
    let (Some(name), true) = (name, exists) else {
        return error("NOT_FOUND", &format!("project {name_or_id} not found"));
    };
    let project = store.project(&name).expect("exists");
    let prefix = format!("{name}/");
    let repo_count = store
        .repositories()
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .count();
    let mut summary = json!({"repo_count": repo_count});
    if admin || security::can(&d.config, store, principal, &name, Perm::ReadQuota) {
        summary["quota"] = json!({
            "hard": {"storage": project.storage_limit},
            "used": {"storage": project.used},
        });
    }
    Reply::new(200).body(JSON, go_json(&summary))
}

/// `GetCurrentUserInfo`: users only; robots get 412.
fn current_user(d: &Double, principal: &Principal) -> Reply {
    if !principal.is_authenticated() {
        return error("UNAUTHORIZED", "unauthorized");
    }
    let Some(account) = principal.account(&d.config) else {
        return error("UNAUTHORIZED", "unauthorized");
    };
    if account.is_robot() {
        return error(
            "PRECONDITION",
            "get current user not available for security context: robot",
        );
    }
    let id = d
        .config
        .accounts
        .iter()
        .position(|a| a.name == account.name)
        .unwrap_or(0)
        + 1;
    let user = json!({
        "user_id": id,
        "username": account.name,
        "email": "",
        "realname": "",
        "comment": "",
        "sysadmin_flag": matches!(account.kind, AccountKind::Admin),
        "admin_role_in_auth": false,
        "creation_time": "2024-01-01T00:00:00.000Z",
        "update_time": "2024-01-01T00:00:00.000Z",
    });
    Reply::new(200).body(JSON, go_json(&user))
}
