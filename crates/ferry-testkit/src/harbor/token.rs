//! Harbor's token service (`GET /service/token`): every action the account has in each scope's
//! project, whatever was asked; anonymous (wrong credentials too) gets a token without actions.

use serde_json::json;

use super::double::Double;
use super::security::{self, Access, Principal, SERVICE};
use super::store::TokenGrant;
use super::{HarborDouble, Perm};
use crate::proxy::{Incoming, Reply};

pub(super) fn handle(d: &Double, req: &Incoming<'_>) -> Reply {
    let principal = security::identify(&d.config, &d.signer, req.header("Authorization"), req.path);
    let account = principal.account(&d.config).map(|a| a.name.clone());
    // `parseScopes`: every `scope` parameter, split on spaces.
    let scopes: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut store = d.store.lock().unwrap();
    let (reply, access) = match req.param("service").unwrap_or_default() {
        SERVICE if !principal.is_authenticated() && scopes.is_empty() => {
            // `unauthorizedError`: beego's CustomAbort(401, "").
            (Reply::new(401), Vec::new())
        }
        SERVICE => {
            let access = grant(&d.config, &store, &principal, &scopes);
            let token = d.signer.sign(
                principal.name(&d.config),
                access.clone(),
                d.config.token_lifetime,
            );
            let body = json!({
                "token": token,
                "access_token": "",
                "expires_in": d.config.token_lifetime.as_secs(),
                "issued_at": rfc3339(security::now()),
            });
            (
                Reply::new(200).body("application/json; charset=utf-8", body.to_string()),
                access,
            )
        }
        other => {
            let message = format!("Unable to handle service: {other}");
            (
                Reply::new(400).body("text/plain; charset=utf-8", message),
                Vec::new(),
            )
        }
    };
    store.tokens.push(TokenGrant {
        account,
        scopes,
        status: reply.status,
        access: access
            .into_iter()
            .map(|a| (a.kind, a.name, a.actions))
            .collect(),
    });
    reply
}

/// `GetResourceActions` + `filterAccess`: each scope's actions replaced by what the account
/// may do (`repositoryFilter`), the catalog only for admins (`registryFilter`), nothing else.
fn grant(
    config: &HarborDouble,
    store: &super::store::Store,
    principal: &Principal,
    scopes: &[String],
) -> Vec<Access> {
    let mut out = Vec::new();
    for scope in scopes.iter().filter(|s| !s.is_empty()) {
        let items: Vec<&str> = scope.split(':').collect();
        let (kind, name, asked) = match items.len() {
            1 => (items[0], String::new(), Vec::new()),
            2 => (items[0], items[1].to_string(), Vec::new()),
            n => (
                items[0],
                items[1..n - 1].join(":"),
                items[n - 1]
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
        };
        let actions = match kind {
            "repository" => repository_actions(config, store, principal, &name),
            "registry" if name == "catalog" && security::is_admin(config, principal) => asked,
            _ => Vec::new(),
        };
        out.push(Access {
            kind: kind.to_string(),
            name,
            actions,
        });
    }
    out
}

/// All actions of the account in the scope's project; none for a missing project or a name
/// without a project (`parseImg`).
fn repository_actions(
    config: &HarborDouble,
    store: &super::store::Store,
    principal: &Principal,
    name: &str,
) -> Vec<String> {
    let Some((project, _)) = name.split_once('/') else {
        return Vec::new();
    };
    let mut actions: Vec<String> = [
        (Perm::Pull, "pull"),
        (Perm::Push, "push"),
        (Perm::Delete, "delete"),
    ]
    .iter()
    .filter(|(p, _)| security::can(config, store, principal, project, *p))
    .map(|(_, a)| a.to_string())
    .collect();
    // Admins also hold `scanner-pull` (the admin evaluator allows everything).
    if security::is_admin(config, principal) && store.project(project).is_some() {
        actions.push("scanner-pull".to_string());
    }
    if config.version.token_star()
        && ["pull", "push", "delete"]
            .iter()
            .all(|a| actions.iter().any(|x| x == a))
    {
        actions.push("*".to_string());
    }
    actions
}

/// `time.Now().UTC().Format(time.RFC3339)`.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn issued_at_is_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
    }
}
