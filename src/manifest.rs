//! Raw manifests: exact stored bytes plus a read-only parsed view, classified by content.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Manifests larger than this are refused, read from a tree or from a registry (Distribution itself
/// refuses more than 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Indexes nest at most this deep below an image's top manifest.
pub const MAX_INDEX_DEPTH: usize = 4;
/// Image configs larger than this are not read for their platform.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Media types ferry recognises.
pub mod media_type {
    pub const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
    pub const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

    /// The media types most images use, so a run over many images keeps one copy of each.
    const COMMON: [&str; 16] = [
        DOCKER_V2,
        DOCKER_LIST,
        DOCKER_V1,
        DOCKER_V1_SIGNED,
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_CONFIG,
        OCI_CONFIG,
        HELM_CONFIG,
        COSIGN_SIGNATURE,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
    ];

    /// `media_type` as a shared constant when it is a common one, else a copy of its own.
    pub fn intern(media_type: &str) -> std::borrow::Cow<'static, str> {
        match COMMON.iter().find(|c| **c == media_type) {
            Some(c) => std::borrow::Cow::Borrowed(c),
            None => std::borrow::Cow::Owned(media_type.to_string()),
        }
    }

    /// Every manifest type a registry may hold, for `Accept` headers.
    pub const ACCEPT_ALL: [&str; 6] = [
        OCI_INDEX,
        DOCKER_LIST,
        OCI_MANIFEST,
        DOCKER_V2,
        DOCKER_V1_SIGNED,
        DOCKER_V1,
    ];
}

/// What a manifest is, decided from its content like Distribution does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// Docker image manifest, schema 2.
    Docker,
    /// Docker manifest list.
    DockerList,
    /// OCI image manifest whose config and layers are image types.
    Oci,
    /// OCI index.
    OciIndex,
    /// OCI manifest carrying something other than a container image (helm chart, signature, ...).
    Artifact,
    /// Docker schema 1 (its digest depends on the repository name inside it).
    Schema1,
}

impl ManifestKind {
    pub fn is_index(self) -> bool {
        matches!(self, ManifestKind::DockerList | ManifestKind::OciIndex)
    }

    pub fn label(self) -> &'static str {
        match self {
            ManifestKind::Docker => "docker",
            ManifestKind::DockerList => "docker-list",
            ManifestKind::Oci => "oci",
            ManifestKind::OciIndex => "oci-index",
            ManifestKind::Artifact => "artifact",
            ManifestKind::Schema1 => "schema1",
        }
    }
}

/// A platform of an index entry or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Windows images name their OS build here; validation compares it.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Read from a manifest: a control character in it must not break a line of output.
        let show = crate::names::escape_controls;
        write!(f, "{}/{}", show(&self.os), show(&self.architecture))?;
        match &self.variant {
            Some(v) if !v.is_empty() => write!(f, "/{}", show(v)),
            _ => Ok(()),
        }
    }
}

/// A reference from a manifest to a blob or another manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// Where a foreign layer can be fetched; such layers may be absent from the tree.
    pub urls: Vec<String>,
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A foreign (non-distributable) layer: it carries `urls` and need not be stored.
    pub fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
    }
}

/// Why manifest bytes could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid manifest JSON: {0}")]
    Json(String),
    #[error("unsupported manifest: {0}")]
    Unsupported(String),
    #[error("bad descriptor {field}: {reason}")]
    Descriptor { field: String, reason: String },
}

/// A manifest as stored: exact bytes (what travels), digest of those bytes, and a parsed view.
#[derive(Debug, Clone)]
pub struct RawManifest {
    bytes: Vec<u8>,
    digest: Digest,
    kind: ManifestKind,
    media_type: String,
    config: Option<Descriptor>,
    layers: Vec<Descriptor>,
    manifests: Vec<Descriptor>,
    artifact_type: Option<String>,
    subject: Option<Descriptor>,
}

impl RawManifest {
    /// Parses `bytes`; the digest is always computed from exactly these bytes.
    pub fn parse(bytes: Vec<u8>) -> Result<RawManifest, ManifestError> {
        let digest = Digest::of(&bytes);
        let wire: wire::Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        let view = classify(wire)?;
        Ok(RawManifest {
            bytes,
            digest,
            kind: view.kind,
            media_type: view.media_type,
            config: view.config,
            layers: view.layers,
            manifests: view.manifests,
            artifact_type: view.artifact_type,
            subject: view.subject,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn digest(&self) -> Digest {
        self.digest
    }
    pub fn kind(&self) -> ManifestKind {
        self.kind
    }
    /// The media type to send as `Content-Type` and to record in layouts.
    pub fn media_type(&self) -> &str {
        &self.media_type
    }
    pub fn config(&self) -> Option<&Descriptor> {
        self.config.as_ref()
    }
    /// Layers of an image manifest (schema1: its `fsLayers`, sizes unknown as 0).
    pub fn layers(&self) -> &[Descriptor] {
        &self.layers
    }
    /// Entries of an index.
    pub fn manifests(&self) -> &[Descriptor] {
        &self.manifests
    }
    pub fn artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref()
    }
    /// The manifest this one refers to (OCI 1.1 `subject`: a signature, an SBOM, an attestation).
    pub fn subject(&self) -> Option<&Descriptor> {
        self.subject.as_ref()
    }
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A short name for the kind of content, more precise than the kind for artifacts.
    pub fn type_label(&self) -> &'static str {
        if self.kind != ManifestKind::Artifact {
            return self.kind.label();
        }
        let config_type = self.config.as_ref().map(|c| c.media_type.as_str());
        if config_type == Some(media_type::HELM_CONFIG) {
            "helm"
        } else if self
            .layers
            .iter()
            .any(|l| l.media_type == media_type::COSIGN_SIGNATURE)
        {
            "signature"
        } else {
            "artifact"
        }
    }
}

struct View {
    kind: ManifestKind,
    media_type: String,
    config: Option<Descriptor>,
    layers: Vec<Descriptor>,
    manifests: Vec<Descriptor>,
    artifact_type: Option<String>,
    subject: Option<Descriptor>,
}

fn classify(wire: wire::Manifest) -> Result<View, ManifestError> {
    use media_type as mt;
    if wire.schema_version == Some(1) {
        let layers = wire
            .fs_layers
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let digest = Digest::parse(&l.blob_sum).map_err(|e| ManifestError::Descriptor {
                    field: format!("fsLayers[{i}].blobSum"),
                    reason: e.to_string(),
                })?;
                Ok(Descriptor {
                    media_type: String::new(),
                    digest,
                    size: 0,
                    urls: Vec::new(),
                    platform: None,
                })
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let media_type = if wire.signatures.is_some() {
            mt::DOCKER_V1_SIGNED
        } else {
            mt::DOCKER_V1
        };
        return Ok(View {
            kind: ManifestKind::Schema1,
            media_type: media_type.to_string(),
            config: None,
            layers,
            manifests: Vec::new(),
            artifact_type: None,
            subject: None,
        });
    }
    if wire.schema_version != Some(2) {
        return Err(ManifestError::Unsupported(match wire.schema_version {
            Some(v) => format!("schemaVersion {v}"),
            None => "no schemaVersion".to_string(),
        }));
    }
    let declared = wire.media_type.clone();
    let is_index = match declared.as_deref() {
        Some(mt::DOCKER_LIST) | Some(mt::OCI_INDEX) => true,
        Some(mt::DOCKER_V2) | Some(mt::OCI_MANIFEST) => false,
        None => wire.manifests.is_some(),
        Some(other) => {
            return Err(ManifestError::Unsupported(format!("mediaType {other:?}")));
        }
    };
    // Only used to order a referrer after its subject: one that cannot be read is left out.
    let subject = wire.subject.and_then(|d| d.into_descriptor("subject").ok());
    let descriptors = |list: Option<Vec<wire::Descriptor>>, field: &str| {
        list.unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, d)| d.into_descriptor(&format!("{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    if is_index {
        let media_type = declared.unwrap_or_else(|| mt::OCI_INDEX.to_string());
        let kind = if media_type == mt::DOCKER_LIST {
            ManifestKind::DockerList
        } else {
            ManifestKind::OciIndex
        };
        if wire.manifests.is_none() {
            return Err(ManifestError::Unsupported(format!(
                "{media_type} without \"manifests\""
            )));
        }
        return Ok(View {
            kind,
            media_type,
            config: None,
            layers: Vec::new(),
            manifests: descriptors(wire.manifests, "manifests")?,
            artifact_type: wire.artifact_type,
            subject,
        });
    }
    let media_type = declared.unwrap_or_else(|| mt::OCI_MANIFEST.to_string());
    let config = match wire.config {
        Some(c) => c.into_descriptor("config")?,
        None => {
            return Err(ManifestError::Unsupported(format!(
                "{media_type} without \"config\""
            )));
        }
    };
    let layers = descriptors(wire.layers, "layers")?;
    let kind = if media_type == mt::DOCKER_V2 {
        ManifestKind::Docker
    } else if wire.artifact_type.is_some()
        || config.media_type != mt::OCI_CONFIG
        || !layers.iter().all(|l| is_image_layer(&l.media_type))
    {
        ManifestKind::Artifact
    } else {
        ManifestKind::Oci
    };
    Ok(View {
        kind,
        media_type,
        config: Some(config),
        layers,
        manifests: Vec::new(),
        artifact_type: wire.artifact_type,
        subject,
    })
}

fn is_image_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// The JSON shapes as they appear in stored manifests; read-only, never written back.
mod wire {
    use serde::Deserialize;

    use super::{Descriptor as Parsed, ManifestError, Platform};
    use crate::digest::Digest;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Manifest {
        pub schema_version: Option<i64>,
        pub media_type: Option<String>,
        pub artifact_type: Option<String>,
        pub config: Option<Descriptor>,
        pub layers: Option<Vec<Descriptor>>,
        pub manifests: Option<Vec<Descriptor>>,
        pub fs_layers: Option<Vec<FsLayer>>,
        pub signatures: Option<serde_json::Value>,
        pub subject: Option<Descriptor>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct FsLayer {
        pub blob_sum: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Descriptor {
        #[serde(default)]
        pub media_type: String,
        pub digest: String,
        pub size: i64,
        #[serde(default)]
        pub urls: Vec<String>,
        pub platform: Option<Platform>,
    }

    impl Descriptor {
        pub fn into_descriptor(self, field: &str) -> Result<Parsed, ManifestError> {
            let bad = |reason: String| ManifestError::Descriptor {
                field: field.to_string(),
                reason,
            };
            let digest = Digest::parse(&self.digest).map_err(|e| bad(e.to_string()))?;
            let size = u64::try_from(self.size)
                .map_err(|_| bad(format!("negative size {}", self.size)))?;
            Ok(Parsed {
                media_type: self.media_type,
                digest,
                size,
                urls: self.urls,
                platform: self.platform,
            })
        }
    }
}

/// An image config's platform fields, for single-platform images.
pub fn config_platform(config_bytes: &[u8]) -> Option<Platform> {
    let p: Platform = serde_json::from_slice(config_bytes).ok()?;
    (!p.os.is_empty() || !p.architecture.is_empty()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    #[test]
    fn classifies_by_content() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":7}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":9}}]}}"#,
            media_type::DOCKER_V2,
            media_type::DOCKER_CONFIG,
            d(1),
            d(2)
        );
        let m = RawManifest::parse(docker.clone().into_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::Docker);
        assert_eq!(m.digest(), Digest::of(docker.as_bytes()));
        assert_eq!(m.bytes(), docker.as_bytes());
        assert_eq!(m.layers()[0].size, 9);

        // An OCI index without mediaType is recognised by its "manifests".
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":3,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
            media_type::OCI_MANIFEST,
            d(3)
        );
        let m = RawManifest::parse(index.into_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::OciIndex);
        assert_eq!(m.media_type(), media_type::OCI_INDEX);
        assert_eq!(
            m.manifests()[0].platform.as_ref().unwrap().to_string(),
            "linux/arm/v7"
        );

        let helm = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{}","size":1}},"layers":[{{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"{}","size":2}}]}}"#,
            media_type::HELM_CONFIG,
            d(4),
            d(5)
        );
        let m = RawManifest::parse(helm.into_bytes()).unwrap();
        assert_eq!((m.kind(), m.type_label()), (ManifestKind::Artifact, "helm"));

        let schema1 = format!(
            r#"{{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[{{"blobSum":"{}"}}]}}"#,
            d(6)
        );
        let m = RawManifest::parse(schema1.into_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::Schema1);
        assert_eq!(m.media_type(), media_type::DOCKER_V1);
    }

    #[test]
    fn rejects_what_it_cannot_understand() {
        assert!(matches!(
            RawManifest::parse(b"{\"schemaVersion\":2,".to_vec()),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            RawManifest::parse(br#"{"schemaVersion":3}"#.to_vec()),
            Err(ManifestError::Unsupported(_))
        ));
        let bad_digest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(matches!(
            RawManifest::parse(bad_digest.as_bytes().to_vec()),
            Err(ManifestError::Descriptor { .. })
        ));
    }
}
