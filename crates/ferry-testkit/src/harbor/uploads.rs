//! Harbor's write path around the registry: immutable tags, quota reservations (given back
//! when the answer is not a success), manifest parsing, the checks Harbor makes once the
//! registry has stored a manifest, and the blob associations that count a project's bytes.

use std::sync::{Arc, Mutex};

use super::artifact::{Info, without_project};
use super::double::Double;
use super::errors::error;
use super::store::Store;
use crate::media::sha256_digest;
use crate::proxy::{AfterAction, Answered, Decision, Incoming, Reply};

const COSIGN_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Distribution refuses manifests over 4 MiB; a little more is read to pass them on.
const MANIFEST_READ_LIMIT: u64 = 8 << 20;

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

/// Whether Harbor counts an answer as a success (2xx, 3xx); otherwise a reservation goes back.
pub(super) fn succeeded(status: u16) -> bool {
    (200..400).contains(&status)
}

/// `PUT /v2/<repo>/manifests/<ref>`: immutable → quota → registry → artifact (index children,
/// cosign subject) → blob associations, in the order of Harbor's route.
pub(super) fn put_manifest(d: &Double, req: &mut Incoming<'_>, info: Info) -> Decision {
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
pub(super) fn post_upload(d: &Double, req: &Incoming<'_>, info: Info) -> Decision {
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
pub(super) fn patch_upload(d: &Double, req: &Incoming<'_>) -> Decision {
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
pub(super) fn put_upload(d: &Double, req: &Incoming<'_>, info: Info) -> Decision {
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
    use serde_json::json;

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

    #[test]
    fn cosign_tags() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            cosign_subject(&format!("sha256-{hex}.sig")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(cosign_subject(&format!("sha256-{hex}.att")), None);
    }
}
