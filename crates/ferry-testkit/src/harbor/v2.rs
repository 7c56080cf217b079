//! Harbor's registry front (`/v2`): artifact info, the v2auth check, the route middlewares
//! (quota, immutable tags, cosign, index children) around the real registry, and the answers
//! Harbor gives from its own database (manifest lookups, tag lists, catalog, blob HEAD).

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::Perm;
use super::double::{Double, Session};
use super::errors::{self, JSON, error, unauthorized_twice};
use super::security::{self, Principal, SERVICE};
use super::store::Store;
use crate::media::sha256_digest;
use crate::proxy::{AfterAction, Answered, Decision, Incoming, Reply};

/// Which registry API a `/v2` path is (`src/lib/patterns.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Manifest,
    TagList,
    BlobUpload,
    Blob,
    Referrers,
}

/// `lib.ArtifactInfo`: what Harbor reads from a `/v2` URL.
#[derive(Debug, Clone)]
struct Info {
    kind: Kind,
    repository: String,
    project: String,
    tag: Option<String>,
    digest: Option<String>,
    /// `from=` of a mount.
    mount_from: Option<String>,
}

const COSIGN_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Distribution refuses manifests over 4 MiB; a little more is read to pass them on.
const MANIFEST_READ_LIMIT: u64 = 8 << 20;

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

/// `artifactinfo.parse` + `projectNameFromRepo`: `Ok(None)` for paths that are no artifact API.
fn parse_info(path: &str, req: &Incoming<'_>) -> Result<Option<Info>, Reply> {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Ok(None);
    };
    let found = if let Some(i) = rest.rfind("/manifests/") {
        Some((Kind::Manifest, &rest[..i], Some(&rest[i + 11..])))
    } else if let Some(i) = rest.find("/tags/list") {
        Some((Kind::TagList, &rest[..i], None))
    } else if let Some(i) = rest.rfind("/blobs/uploads")
        && rest[i + 14..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.=".contains(c))
    {
        Some((Kind::BlobUpload, &rest[..i], None))
    } else if let Some(i) = rest.rfind("/blobs/")
        && is_digest(&rest[i + 7..])
    {
        Some((Kind::Blob, &rest[..i], Some(&rest[i + 7..])))
    } else {
        rest.rfind("/referrers/")
            .map(|i| (Kind::Referrers, &rest[..i], Some(&rest[i + 11..])))
    };
    let Some((kind, repository, reference)) = found else {
        return Ok(None);
    };
    if !valid_name(repository) {
        return Ok(None);
    }
    let mut info = Info {
        kind,
        repository: repository.to_string(),
        project: String::new(),
        tag: None,
        digest: None,
        mount_from: None,
    };
    if let Some(r) = reference.filter(|r| !r.is_empty()) {
        if is_digest(r) {
            info.digest = Some(r.to_string());
        } else if is_tag(r) {
            info.tag = Some(r.to_string());
        } else {
            return Err(error("NOT_FOUND", "invalid reference format"));
        }
    }
    info.project = project_of(repository)?;
    if kind == Kind::BlobUpload
        && let Some(from) = req.param("from").filter(|f| !f.is_empty())
    {
        project_of(from)?;
        info.mount_from = Some(from.to_string());
    }
    Ok(Some(info))
}

/// `projectNameFromRepo`: the first component, or 400 for one-component names.
fn project_of(repository: &str) -> Result<String, Reply> {
    match repository.split_once('/') {
        Some((project, _)) => Ok(project.to_string()),
        None => Err(error(
            "BAD_REQUEST",
            &format!("bad request: invalid repository name: {repository}"),
        )),
    }
}

/// Distribution's `NameRegexp` (path components only).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(valid_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `digest.DigestRegexp`: `algorithm:hex` with at least 32 hex digits.
fn is_digest(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    !alg.is_empty()
        && alg.starts_with(|c: char| c.is_ascii_alphabetic())
        && alg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c))
        && hex.len() >= 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// `reference.TagRegexp`: `[\w][\w.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    s.len() <= 128 && s.starts_with(word) && s.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// The repository without its project (`utils.ParseRepository`).
fn without_project(repository: &str) -> &str {
    repository.split_once('/').map_or(repository, |(_, r)| r)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Login,
    Catalog,
    Repository,
}

/// `v2auth.reqChecker.check`: the first access the principal lacks, as Harbor's 401.
fn v2auth(
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

/// What a manifest references (`Manifest.References()` of Distribution v2.8.2).
struct Parsed {
    refs: Vec<(String, i64, String)>,
    /// Manifest lists and OCI indexes: their children.
    is_index: bool,
}

/// `distribution.UnmarshalManifest` as Harbor's quota middleware calls it: the error text, or
/// what the manifest references.
fn parse_manifest(content_type: &str, body: &[u8]) -> Result<Parsed, String> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        if matches!(
            media_type.as_str(),
            DOCKER_MANIFEST | DOCKER_LIST | OCI_MANIFEST | OCI_INDEX
        ) {
            e.to_string()
        } else {
            format!("error unmarshalling content: {e}")
        }
    })?;
    let declared = value["mediaType"].as_str().unwrap_or_default();
    let descriptor = |v: &serde_json::Value| {
        (
            v["digest"].as_str().unwrap_or_default().to_string(),
            v["size"].as_i64().unwrap_or(0),
            v["mediaType"].as_str().unwrap_or_default().to_string(),
        )
    };
    let list = |key: &str| -> Vec<(String, i64, String)> {
        value[key]
            .as_array()
            .map(|a| a.iter().map(descriptor).collect())
            .unwrap_or_default()
    };
    match media_type.as_str() {
        DOCKER_MANIFEST | OCI_MANIFEST => {
            if media_type == DOCKER_MANIFEST && declared != DOCKER_MANIFEST {
                return Err(format!(
                    "mediaType in manifest should be '{DOCKER_MANIFEST}' not '{declared}'"
                ));
            }
            if media_type == OCI_MANIFEST && !declared.is_empty() && declared != OCI_MANIFEST {
                return Err(format!(
                    "if present, mediaType in manifest should be '{OCI_MANIFEST}' not '{declared}'"
                ));
            }
            let mut refs = vec![descriptor(&value["config"])];
            refs.extend(list("layers"));
            Ok(Parsed {
                refs,
                is_index: false,
            })
        }
        DOCKER_LIST | OCI_INDEX => {
            if media_type == DOCKER_LIST && declared != DOCKER_LIST {
                return Err(format!(
                    "mediaType in manifest list should be '{DOCKER_LIST}' not '{declared}'"
                ));
            }
            if media_type == OCI_INDEX && !declared.is_empty() && declared != OCI_INDEX {
                return Err(format!(
                    "if present, mediaType in image index should be '{OCI_INDEX}' not '{declared}'"
                ));
            }
            Ok(Parsed {
                refs: list("manifests"),
                is_index: true,
            })
        }
        // Distribution's default for any other type (and none) is schema1, which needs signatures.
        _ if media_type == SCHEMA1_SIGNED || value.get("signatures").is_some() => {
            let refs = value["fsLayers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|l| {
                            (
                                l["blobSum"].as_str().unwrap_or_default().to_string(),
                                0,
                                String::new(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Parsed {
                refs,
                is_index: false,
            })
        }
        _ => Err("missing signature key".to_string()),
    }
}

/// `sha256-<64 hex>.sig` (`cosignRe`; its `.` matches any character).
fn cosign_subject(tag: &str) -> Option<String> {
    let hex = tag.strip_prefix("sha256-")?;
    (hex.len() == 68
        && hex.ends_with("sig")
        && hex[..64]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
    .then(|| format!("sha256:{}", &hex[..64]))
}

/// A reservation to give back unless the registry's (or Harbor's final) answer succeeds.
fn succeeded(status: u16) -> bool {
    (200..400).contains(&status)
}

/// `PUT /v2/<repo>/manifests/<ref>`: immutable → quota → registry → artifact (index children,
/// cosign subject) → blob associations, in the order of Harbor's route.
fn put_manifest(d: &Double, req: &mut Incoming<'_>, info: Info) -> Decision {
    let content_type = req.header("Content-Type").unwrap_or_default().to_string();
    let body = req.read_body(MANIFEST_READ_LIMIT);
    let repo = info.repository.clone();
    let project = info.project.clone();
    {
        let store = d.store.lock().unwrap();
        if let Some(tag) = &info.tag
            && store.tag(&repo, tag).is_some()
            && d.immutable(&project, without_project(&repo), tag)
        {
            let message = format!(
                "Failed to process request due to '{}:{tag}' configured as immutable.",
                without_project(&repo)
            );
            return Decision::Answer(error("PRECONDITION", &message));
        }
    }
    let parsed = match parse_manifest(&content_type, &body) {
        Ok(p) => p,
        Err(e) => {
            let message = format!("unmarshal manifest failed: {e}");
            return Decision::Answer(error("MANIFEST_INVALID", &message));
        }
    };
    let digest = sha256_digest(&body);
    let size = body.len() as i64;
    let charge = {
        let mut store = d.store.lock().unwrap();
        let charge = if store.project_has_blob(&project, &digest) {
            None
        } else {
            let missing: i64 = parsed
                .refs
                .iter()
                .filter(|(dg, _, mt)| mt != FOREIGN_LAYER && !store.project_has_blob(&project, dg))
                .map(|(_, s, _)| *s)
                .sum();
            Some(size + missing)
        };
        if let Some(bytes) = charge
            && let Err(message) = store.reserve(&project, bytes)
        {
            return Decision::Answer(error("DENIED", &message));
        }
        charge.unwrap_or(0)
    };
    let store = d.store.clone();
    let cosign_check = d.config.version.cosign_needs_subject();
    let tag = info.tag.clone();
    let after = move |answered: &Answered| {
        let mut store = store.lock().unwrap();
        if answered.status != 201 {
            if !succeeded(answered.status) {
                store.release(&project, charge);
            }
            return AfterAction::Pass(Vec::new());
        }
        let refused = refusal_after_push(&store, &repo, tag.as_deref(), &parsed, cosign_check);
        if let Some(reply) = refused {
            store.release(&project, charge);
            return AfterAction::Replace(reply);
        }
        for (dg, s, _) in &parsed.refs {
            if !dg.is_empty() {
                store.associate(&project, dg, *s);
            }
        }
        store.associate(&project, &digest, size);
        store.record_artifact(&repo, &digest, tag.as_deref());
        AfterAction::Pass(Vec::new())
    };
    Decision::Forward {
        body: Some(body),
        after: Some(Box::new(after)),
    }
}

/// Harbor's refusals once the registry took a manifest (nothing is recorded, the quota goes back):
/// an index child that is no artifact of the repository, and up to 2.7 a cosign signature
/// whose subject is not there.
fn refusal_after_push(
    store: &Store,
    repo: &str,
    tag: Option<&str>,
    parsed: &Parsed,
    cosign_check: bool,
) -> Option<Reply> {
    if parsed.is_index {
        for (child, _, _) in &parsed.refs {
            if !store.has_artifact(repo, child) {
                return Some(error(
                    "NOT_FOUND",
                    &format!("artifact {repo}@{child} not found"),
                ));
            }
        }
    }
    if cosign_check
        && let Some(subject) = tag.and_then(cosign_subject)
        && parsed.refs.iter().any(|(_, _, mt)| mt == COSIGN_LAYER)
        && !store.has_artifact(repo, &subject)
    {
        return Some(error(
            "NOT_FOUND",
            &format!("artifact {repo}@{subject} not found"),
        ));
    }
    None
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

/// Forwards with a quota reservation that `on_success` completes or that is given back.
fn reserved_forward(
    store: Arc<Mutex<Store>>,
    project: String,
    charge: i64,
    on_success: impl FnOnce(&mut Store, &Answered) + Send + 'static,
) -> Decision {
    let after = move |answered: &Answered| {
        let mut store = store.lock().unwrap();
        if succeeded(answered.status) {
            on_success(&mut store, answered);
        } else {
            store.release(&project, charge);
        }
        AfterAction::Pass(Vec::new())
    };
    Decision::Forward {
        body: None,
        after: Some(Box::new(after)),
    }
}

/// `POST .../blobs/uploads/`: quota (0 bytes from 2.9; a mount the blob's size), then the
/// registry; a mount answered 201 associates the blob with the project.
fn post_upload(d: &Double, req: &Incoming<'_>, info: Info) -> Decision {
    let mount = req
        .param("mount")
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let mut store = d.store.lock().unwrap();
    let request = match &mount {
        None => d.config.version.post_checks_quota().then_some(0),
        Some(m) => match store.blob(m) {
            Some(_) if store.project_has_blob(&info.project, m) => None,
            Some(size) => Some(size),
            None => None,
        },
    };
    if let Some(bytes) = request
        && let Err(message) = store.reserve(&info.project, bytes)
    {
        return Decision::Answer(error("DENIED", &message));
    }
    drop(store);
    let project = info.project.clone();
    reserved_forward(
        d.store.clone(),
        info.project,
        request.unwrap_or(0),
        move |store, answered| {
            if answered.status == 201
                && let Some(m) = &mount
                && let Some(size) = store.blob(m)
            {
                store.associate(&project, m, size);
            }
        },
    )
}

/// The upload session id: the last path segment.
fn session_id(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `PATCH`: passed on; the registry's `Range: 0-N` tells how much the session holds.
fn patch_upload(d: &Double, req: &Incoming<'_>) -> Decision {
    let store = d.store.clone();
    let session = session_id(req.path);
    let after = move |answered: &Answered| {
        if let Some(end) = answered
            .header("Range")
            .and_then(|r| r.split_once('-'))
            .and_then(|(_, e)| e.trim().parse::<i64>().ok())
        {
            store.lock().unwrap().set_session_size(&session, end + 1);
        }
        AfterAction::Pass(Vec::new())
    };
    Decision::Forward {
        body: None,
        after: Some(Box::new(after)),
    }
}

/// `PUT .../blobs/uploads/<id>?digest=`: quota of its `Content-Length` (else the session's size)
/// unless the project has the blob; 201 associates it with the project.
fn put_upload(d: &Double, req: &Incoming<'_>, info: Info) -> Decision {
    let digest = req.param("digest").unwrap_or_default().to_string();
    let mut store = d.store.lock().unwrap();
    let size = match req
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        Some(n) if n > 0 => n,
        _ => store.session_size(&session_id(req.path)),
    };
    let request = (size > 0 && !store.project_has_blob(&info.project, &digest)).then_some(size);
    if let Some(bytes) = request
        && let Err(message) = store.reserve(&info.project, bytes)
    {
        return Decision::Answer(error("DENIED", &message));
    }
    drop(store);
    let project = info.project.clone();
    reserved_forward(
        d.store.clone(),
        info.project,
        request.unwrap_or(0),
        move |store, answered| {
            if answered.status == 201 {
                let stored = answered
                    .header("Docker-Content-Digest")
                    .unwrap_or(&digest)
                    .to_string();
                store.associate(&project, &stored, size);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_references_and_cosign_tags() {
        assert!(valid_name("library/alpine"));
        assert!(valid_name("a/b__c/d-e/f.g"));
        assert!(valid_name("a/b---c"));
        assert!(!valid_name("a/B"));
        assert!(!valid_name("a//b"));
        assert!(!valid_name("a/b_-c"));
        assert!(!valid_name("a/-b"));
        assert!(is_tag("v1.0_rc-1"));
        assert!(!is_tag(".hidden"));
        assert!(is_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_digest("sha256:abc"));
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            cosign_subject(&format!("sha256-{hex}.sig")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(cosign_subject(&format!("sha256-{hex}.att")), None);
        let items: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            pick(&items, Some(2), ""),
            (items[..2].to_vec(), Some("b".into()))
        );
        assert_eq!(pick(&items, Some(2), "b"), (items[2..].to_vec(), None));
        assert_eq!(pick(&items, None, ""), (items.clone(), None));
    }

    #[test]
    fn manifests_parse_like_distribution() {
        let oci = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "c", "digest": "sha256:1", "size": 3},
            "layers": [{"mediaType": FOREIGN_LAYER, "digest": "sha256:2", "size": 5}]});
        let p = parse_manifest(OCI_MANIFEST, oci.to_string().as_bytes()).unwrap();
        assert_eq!(p.refs.len(), 2);
        assert!(!p.is_index);
        assert_eq!(
            parse_manifest("application/x-unknown", oci.to_string().as_bytes()).err(),
            Some("missing signature key".to_string())
        );
        assert_eq!(
            parse_manifest(DOCKER_MANIFEST, oci.to_string().as_bytes()).err(),
            Some(format!(
                "mediaType in manifest should be '{DOCKER_MANIFEST}' not '{OCI_MANIFEST}'"
            ))
        );
    }
}
