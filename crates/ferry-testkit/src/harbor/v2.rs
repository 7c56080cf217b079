//! Harbor's registry front (`/v2`): each request through `artifactinfo` and `v2auth`, then to
//! the write path ([`super::uploads`]) or to the answers Harbor gives from its own database
//! (manifest lookups, tag lists, catalog, blob HEAD); the rest goes to the registry.

use serde_json::json;

use super::artifact::{Info, Kind, parse_info};
use super::double::{Double, Session};
use super::errors::{self, JSON, error};
use super::security;
use super::uploads::{patch_upload, post_upload, put_manifest, put_upload, succeeded};
use super::v2auth::v2auth;
use crate::proxy::{AfterAction, Answered, Decision, Incoming, Reply};

pub(super) fn handle(d: &Double, mut req: Incoming<'_>, session: &Session) -> Decision {
    // Global middleware `artifactinfo`: answered before any auth.
    let info = match parse_info(req.path, &req) {
        Ok(info) => info,
        Err(reply) => return Decision::Answer(reply),
    };
    let authorization = req.header("Authorization").map(str::to_string);
    let principal = security::identify(&d.config, &d.signer, authorization.as_deref(), req.path);
    if let Some(reply) = v2auth(d, &req, &principal, authorization.as_deref(), info.as_ref()) {
        return session.finish(Decision::Answer(reply));
    }
    let decision = match (req.method, info) {
        (_, None) if req.path.starts_with("/v2/_catalog") => catalog(d, &req),
        ("GET" | "HEAD", Some(i)) if i.kind == Kind::Manifest => get_manifest(d, &i),
        ("PUT", Some(i)) if i.kind == Kind::Manifest => put_manifest(d, &mut req, i),
        ("DELETE", Some(i)) if i.kind == Kind::Manifest => delete_manifest(d, i),
        ("GET", Some(i)) if i.kind == Kind::TagList => tag_list(d, &req, &i),
        ("HEAD", Some(i)) if i.kind == Kind::Blob => head_blob(d, &i),
        ("POST", Some(i)) if i.kind == Kind::BlobUpload => post_upload(d, &req, i),
        ("PATCH", Some(i)) if i.kind == Kind::BlobUpload => patch_upload(d, &req),
        ("PUT", Some(i)) if i.kind == Kind::BlobUpload => put_upload(d, &req, i),
        _ => Decision::forward(),
    };
    session.finish(decision)
}

/// `getManifest`: the artifact must be in Harbor's database before the registry is asked.
fn get_manifest(d: &Double, info: &Info) -> Decision {
    let store = d.store.lock().unwrap();
    let repo = &info.repository;
    if let Some(tag) = &info.tag {
        if !store.has_repository(repo) {
            return Decision::Answer(error("NOT_FOUND", &format!("repository {repo} not found")));
        }
        if store.tag(repo, tag).is_none() {
            return Decision::Answer(error(
                "NOT_FOUND",
                &format!("artifact {repo}:{tag} not found"),
            ));
        }
    } else if let Some(digest) = &info.digest
        && !store.has_artifact(repo, digest)
    {
        return Decision::Answer(error(
            "NOT_FOUND",
            &format!("artifact {repo}@{digest} not found"),
        ));
    }
    Decision::forward()
}

/// `n` and `last` of a list request (`ParseNAndLastParameters`).
fn page_params(req: &Incoming<'_>) -> Result<(Option<usize>, String), Reply> {
    let n = match req.param("n").filter(|n| !n.is_empty()) {
        None => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| error("BAD_REQUEST", "the N must be a positive int type"))?,
        ),
    };
    Ok((n, req.param("last").unwrap_or_default().to_string()))
}

/// `pickItems` over sorted, unique items: the page and the `last` of the next one.
fn pick(items: &[String], n: Option<usize>, last: &str) -> (Vec<String>, Option<String>) {
    if items.is_empty() || n == Some(0) {
        return (Vec::new(), None);
    }
    let start = if last.is_empty() {
        0
    } else {
        items.partition_point(|i| i.as_str() <= last)
    };
    let end = (start + n.unwrap_or(items.len())).min(items.len());
    let page = items[start..end].to_vec();
    let next = page.last().filter(|l| items.last() != Some(*l)).cloned();
    (page, next)
}

/// A list answer with Harbor's `Link` header when more follow.
fn list_reply(
    path: &str,
    n: Option<usize>,
    next: Option<String>,
    body: serde_json::Value,
) -> Reply {
    let mut reply = Reply::new(200).body(JSON, format!("{}\n", errors::go_json(&body)));
    if let (Some(next), Some(n)) = (next, n) {
        let link = format!(
            "<{path}?last={}&n={n}>; rel=\"next\"",
            crate::harbor::double::query_escape(&next)
        );
        reply = reply.header("Link", &link);
    }
    reply
}

/// `tagHandler`: tags from Harbor's database, sorted.
fn tag_list(d: &Double, req: &Incoming<'_>, info: &Info) -> Decision {
    let (n, last) = match page_params(req) {
        Ok(p) => p,
        Err(r) => return Decision::Answer(r),
    };
    let repo = &info.repository;
    let tags = if n == Some(0) {
        Vec::new()
    } else {
        match d.store.lock().unwrap().tags_of(repo) {
            Some(t) => t,
            None => {
                return Decision::Answer(error(
                    "NOT_FOUND",
                    &format!("repository {repo} not found"),
                ));
            }
        }
    };
    let (page, next) = pick(&tags, n, &last);
    Decision::Answer(list_reply(
        req.path,
        n,
        next,
        json!({"name": repo, "tags": page}),
    ))
}

/// `repositoryHandler` for `_catalog` (system admins only, checked by v2auth).
fn catalog(d: &Double, req: &Incoming<'_>) -> Decision {
    let (n, last) = match page_params(req) {
        Ok(p) => p,
        Err(r) => return Decision::Answer(r),
    };
    let repos = d.store.lock().unwrap().repositories();
    let (page, next) = pick(&repos, n, &last);
    Decision::Answer(list_reply(req.path, n, next, json!({"repositories": page})))
}

/// `HeadBlobMiddleware`: a blob Harbor has no record of is 404, whatever the registry holds.
fn head_blob(d: &Double, info: &Info) -> Decision {
    let digest = info.digest.clone().unwrap_or_default();
    if d.store.lock().unwrap().blob(&digest).is_none() {
        return Decision::Answer(error("NOT_FOUND", &format!("blob {digest} not found")));
    }
    Decision::forward()
}

/// DELETE of a manifest: passed to the registry; Harbor forgets the artifact when it succeeded.
fn delete_manifest(d: &Double, info: Info) -> Decision {
    let store = d.store.clone();
    let after = move |answered: &Answered| {
        if succeeded(answered.status) {
            let mut store = store.lock().unwrap();
            let digest = match (&info.digest, &info.tag) {
                (Some(dg), _) => Some(dg.clone()),
                (None, Some(t)) => store.tag(&info.repository, t).map(str::to_string),
                _ => None,
            };
            if let Some(dg) = digest {
                store.forget_artifact(&info.repository, &dg);
            }
        }
        AfterAction::Pass(Vec::new())
    };
    Decision::Forward {
        body: None,
        after: Some(Box::new(after)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_like_harbor() {
        let items: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            pick(&items, Some(2), ""),
            (items[..2].to_vec(), Some("b".into()))
        );
        assert_eq!(pick(&items, Some(2), "b"), (items[2..].to_vec(), None));
        assert_eq!(pick(&items, None, ""), (items.clone(), None));
    }
}
