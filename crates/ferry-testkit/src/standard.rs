//! The standard scenario: a small tree holding one of every case ferry must handle.

use anyhow::{Context, Result};
use base64::Engine as _;

use crate::images::{
    ArtifactLayer, ForeignLayer, Format, Pushed, push_artifact, push_image, push_index,
    random_bytes,
};
use crate::media::{
    COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING, HELM_CHART, HELM_CONFIG, OCI_CONFIG,
    Platform,
};
use crate::push::Pusher;
use crate::registry::Registry;
use crate::truth::{Truth, UntaggedManifest};

/// Repository names used by the standard scenario.
pub mod repos {
    /// Single component; `3.19` and `latest` share a digest; holds a cosign signature tag.
    pub const ALPINE: &str = "alpine";
    /// Path prefix of [`NS_SUB_IMG`]; tag `v1` was moved from a Docker image to an OCI image.
    pub const NS_SUB: &str = "ns/sub";
    /// Holds an image pushed by digest only and the unfinished upload.
    pub const NS_SUB_IMG: &str = "ns/sub/img";
    /// Four levels deep; a Docker manifest list.
    pub const ORG_TEAM_SUB_APP: &str = "org/team/sub/app";
    /// An OCI image index.
    pub const MULTI_OCI_APP: &str = "multi/oci-app";
    /// A helm chart artifact.
    pub const CHARTS_MYCHART: &str = "charts/mychart";
    /// A Docker image with a foreign layer.
    pub const LEGACY_FOREIGN: &str = "legacy/foreign";
}

/// The URL of the foreign layer (never fetched).
pub const FOREIGN_LAYER_URL: &str = "https://example.invalid/layer.tar.gz";

/// The three platforms every index in the scenario has.
pub fn index_platforms() -> Vec<Platform> {
    vec![
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", None),
        Platform::new("linux", "arm", Some("v7")),
    ]
}

/// Pushes the standard scenario into `reg`. The same seed gives the same blobs and
/// manifests (upload uuids differ from run to run).
pub fn generate_standard(reg: &Registry, seed: u64) -> Result<Truth> {
    generate_standard_at(&Pusher::new(reg), seed).with_context(|| {
        format!(
            "standard scenario; registry log tail:\n{}",
            reg.log_tail(15)
        )
    })
}

/// [`generate_standard`] against any registry reachable through `p`.
pub fn generate_standard_at(p: &Pusher, seed: u64) -> Result<Truth> {
    use repos::*;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut truth = Truth::default();
    let amd64 = Platform::new("linux", "amd64", None);

    // Shared base layers, used by several repositories.
    let base_os = random_bytes(&mut rng, 2048);
    let base_runtime = random_bytes(&mut rng, 1536);
    let arch_bases: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(&mut rng, 1024)).collect();
    let unique = |rng: &mut fastrand::Rng| {
        let len = rng.usize(300..1200);
        random_bytes(rng, len)
    };

    // alpine: one Docker image under two tags.
    let layer = unique(&mut rng);
    let alpine = push_image(
        p,
        ALPINE,
        Some("3.19"),
        Format::Docker,
        &amd64,
        &[&base_os, &layer],
        &[("name", "alpine")],
        None,
    )?;
    p.push_manifest(ALPINE, "latest", &alpine.media_type, &alpine.bytes)?;
    truth.add_tag(alpine.tagged(ALPINE, "3.19"));
    truth.add_tag(alpine.tagged(ALPINE, "latest"));

    // alpine: a cosign-style signature of alpine:3.19.
    let sig_tag = format!("sha256-{}.sig", alpine.digest.trim_start_matches("sha256:"));
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": "registry.invalid/alpine" },
            "image": { "docker-manifest-digest": alpine.digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))?;
    let signature = base64::engine::general_purpose::STANDARD.encode(random_bytes(&mut rng, 71));
    let payload_digest = crate::media::sha256_digest(&payload);
    let sig_config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": [payload_digest] },
        "config": {},
    }))?;
    let sig = push_artifact(
        p,
        ALPINE,
        Some(&sig_tag),
        OCI_CONFIG,
        &sig_config,
        &[ArtifactLayer {
            media_type: COSIGN_SIMPLESIGNING,
            bytes: &payload,
            annotations: vec![(COSIGN_SIGNATURE_ANNOTATION, signature.as_str())],
        }],
        &[],
    )?;
    truth.add_tag(sig.tagged(ALPINE, &sig_tag));

    // ns/sub: an OCI image, and tag v1 moved from a Docker image (A) to an OCI image (B).
    let layer = unique(&mut rng);
    let img = push_image(
        p,
        NS_SUB,
        Some("1.0"),
        Format::Oci,
        &amd64,
        &[&base_os, &base_runtime, &layer],
        &[("name", "ns/sub")],
        None,
    )?;
    truth.add_tag(img.tagged(NS_SUB, "1.0"));
    let layer = unique(&mut rng);
    let a = push_image(
        p,
        NS_SUB,
        Some("v1"),
        Format::Docker,
        &amd64,
        &[&base_os, &layer],
        &[("name", "ns/sub"), ("rev", "a")],
        None,
    )?;
    let layer = unique(&mut rng);
    let b = push_image(
        p,
        NS_SUB,
        Some("v1"),
        Format::Oci,
        &amd64,
        &[&base_os, &layer],
        &[("name", "ns/sub"), ("rev", "b")],
        None,
    )?;
    truth.add_tag(b.tagged(NS_SUB, "v1"));
    truth.untagged.push(UntaggedManifest {
        repository: NS_SUB.into(),
        digest: a.digest.clone(),
    });

    // ns/sub/img: the runtime layer arrives by cross-repository mount, as docker push does it.
    let runtime_digest = crate::media::sha256_digest(&base_runtime);
    anyhow::ensure!(
        p.mount_blob(NS_SUB_IMG, NS_SUB, &runtime_digest)?,
        "registry refused to mount {runtime_digest} from {NS_SUB} into {NS_SUB_IMG}"
    );
    let layer = unique(&mut rng);
    let img = push_image(
        p,
        NS_SUB_IMG,
        Some("2.0"),
        Format::Docker,
        &amd64,
        &[&base_os, &base_runtime, &layer],
        &[("name", "ns/sub/img")],
        None,
    )?;
    truth.add_tag(img.tagged(NS_SUB_IMG, "2.0"));
    let layer = unique(&mut rng);
    let loose = push_image(
        p,
        NS_SUB_IMG,
        None,
        Format::Oci,
        &amd64,
        &[&base_os, &layer],
        &[("name", "ns/sub/img"), ("rev", "untagged")],
        None,
    )?;
    truth.untagged.push(UntaggedManifest {
        repository: NS_SUB_IMG.into(),
        digest: loose.digest.clone(),
    });

    // org/team/sub/app: a Docker manifest list; multi/oci-app: an OCI index. Children by digest first.
    for (repo, format) in [
        (ORG_TEAM_SUB_APP, Format::Docker),
        (MULTI_OCI_APP, Format::Oci),
    ] {
        let mut children: Vec<Pushed> = Vec::new();
        for (platform, base) in index_platforms().iter().zip(&arch_bases) {
            let layer = unique(&mut rng);
            let label = platform.label();
            let child = push_image(
                p,
                repo,
                None,
                format,
                platform,
                &[base, &layer],
                &[("name", repo), ("platform", &label)],
                None,
            )?;
            children.push(child);
        }
        let index = push_index(p, repo, Some("1.0"), format, &children)?;
        truth.add_tag(index.tagged(repo, "1.0"));
    }

    // charts/mychart: a helm chart.
    let chart_config = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v2",
        "name": "mychart",
        "version": "0.1.0",
        "description": "A Helm chart for ferry tests",
        "type": "application",
        "appVersion": "1.16.0",
    }))?;
    let chart = random_bytes(&mut rng, 900);
    let helm = push_artifact(
        p,
        CHARTS_MYCHART,
        Some("0.1.0"),
        HELM_CONFIG,
        &chart_config,
        &[ArtifactLayer {
            media_type: HELM_CHART,
            bytes: &chart,
            annotations: vec![],
        }],
        &[],
    )?;
    truth.add_tag(helm.tagged(CHARTS_MYCHART, "0.1.0"));

    // legacy/foreign: a Docker image whose last layer is foreign (referenced by URL only).
    let foreign = ForeignLayer {
        bytes: random_bytes(&mut rng, 4096),
        url: FOREIGN_LAYER_URL.to_string(),
    };
    let layer = unique(&mut rng);
    let img = push_image(
        p,
        LEGACY_FOREIGN,
        Some("1.0"),
        Format::Docker,
        &amd64,
        &[&base_os, &layer],
        &[("name", "legacy/foreign")],
        Some(&foreign),
    )?;
    truth.add_tag(img.tagged(LEGACY_FOREIGN, "1.0"));

    // ns/sub/img: an upload that was started and never finished.
    let partial = random_bytes(&mut rng, 300);
    truth
        .uploads
        .push(p.start_unfinished_upload(NS_SUB_IMG, &partial)?);

    truth.normalize();
    Ok(truth)
}
