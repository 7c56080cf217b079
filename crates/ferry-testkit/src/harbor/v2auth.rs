//! Harbor's `v2auth` middleware: the rights every `/v2` request needs, checked against the
//! caller's security context, and the 401 answers with their challenges.

use super::Perm;
use super::artifact::Info;
use super::double::Double;
use super::errors::unauthorized_twice;
use super::security::{self, Principal, SERVICE};
use crate::proxy::{Incoming, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Login,
    Catalog,
    Repository,
}

/// `v2auth.reqChecker.check`: the first access the principal lacks, as Harbor's 401.
pub(super) fn v2auth(
    d: &Double,
    req: &Incoming<'_>,
    principal: &Principal,
    authorization: Option<&str>,
    info: Option<&Info>,
) -> Option<Reply> {
    let mut access: Vec<(Target, String, &'static str)> = Vec::new();
    if req.path == "/v2/" {
        access.push((Target::Login, String::new(), ""));
    } else if req.path == "/v2/_catalog" || req.path.starts_with("/v2/_catalog/") {
        access.push((Target::Catalog, String::new(), ""));
    } else if let Some(info) = info {
        let action = match req.method {
            "POST" | "PATCH" | "PUT" => "push",
            "GET" | "HEAD" => "pull",
            "DELETE" => "delete",
            _ => "",
        };
        if !action.is_empty() {
            access.push((Target::Repository, info.repository.clone(), action));
            if req.method == "POST"
                && let Some(from) = &info.mount_from
            {
                access.push((Target::Repository, from.clone(), "pull"));
            }
        }
    }
    let has_auth = authorization.is_some_and(|a| !a.is_empty());
    let deny = |challenge: String, message: String| {
        Some(
            unauthorized_twice(&message)
                .header("Docker-Distribution-Api-Version", "registry/2.0")
                .header("Www-Authenticate", &challenge),
        )
    };
    if access.is_empty() {
        let message = format!("un-recognized request: {} {}", req.method, req.path);
        return deny(String::new(), message);
    }
    let challenge = || challenge(d, req.path, has_auth, &access);
    let store = d.store.lock().unwrap();
    for (target, name, action) in &access {
        match target {
            Target::Login if !principal.is_authenticated() => {
                return deny(challenge(), "unauthorized".to_string());
            }
            Target::Catalog if !security::is_admin(&d.config, principal) => {
                return deny(challenge(), "unauthorized to list catalog".to_string());
            }
            Target::Repository if !has_auth && matches!(req.method, "GET" | "HEAD") => {
                // Docker's CLI expects a 401 to its anonymous HEAD (Harbor issue #11271).
                let message = "authorize header needed to send HEAD to repository".to_string();
                return deny(challenge(), message);
            }
            Target::Repository => {
                let project = name.split('/').next().unwrap_or_default();
                if store.project(project).is_none() {
                    return deny(String::new(), format!("project {project} not found"));
                }
                let perm = match *action {
                    "push" => Perm::Push,
                    "delete" => Perm::Delete,
                    _ => Perm::Pull,
                };
                if !security::can(&d.config, &store, principal, project, perm) {
                    let message =
                        format!("unauthorized to access repository: {name}, action: {action}");
                    return deny(challenge(), message);
                }
            }
            _ => {}
        }
    }
    None
}

/// `getChallenge`: Basic when credentials were sent (or for the catalog), else Bearer with scopes.
fn challenge(
    d: &Double,
    path: &str,
    has_auth: bool,
    access: &[(Target, String, &'static str)],
) -> String {
    if has_auth || path.starts_with("/v2/_catalog") {
        return r#"Basic realm="harbor""#.to_string();
    }
    let scope: Vec<String> = access
        .iter()
        .filter(|(t, _, _)| *t == Target::Repository)
        .map(|(_, name, action)| {
            let act = match *action {
                "push" => "pull,push",
                other => other,
            };
            format!("repository:{name}:{act}")
        })
        .collect();
    let mut c = format!(
        r#"Bearer realm="{}/service/token",service="{SERVICE}""#,
        d.url.trim_end_matches('/')
    );
    if !scope.is_empty() {
        c.push_str(&format!(r#",scope="{}""#, scope.join(" ")));
    }
    c
}
