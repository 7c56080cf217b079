//! Builds synthetic images (blobs + config + manifest), pushes them, and describes them for the truth.

use anyhow::Result;

use crate::media::{
    self, DOCKER_CONFIG, DOCKER_FOREIGN_LAYER, DOCKER_LAYER, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    Descriptor, ImageIndex, ImageManifest, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
    Platform,
};
use crate::push::Pusher;
use crate::truth::{self, BlobRef, TaggedImage};

/// Docker schema2 or OCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

impl Format {
    pub fn manifest_type(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_MANIFEST,
            Format::Oci => OCI_MANIFEST,
        }
    }
    pub fn index_type(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_MANIFEST_LIST,
            Format::Oci => OCI_INDEX,
        }
    }
    pub fn config_type(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_CONFIG,
            Format::Oci => OCI_CONFIG,
        }
    }
    pub fn layer_type(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_LAYER,
            Format::Oci => OCI_LAYER,
        }
    }
    pub fn kind(self) -> &'static str {
        match self {
            Format::Docker => truth::KIND_DOCKER,
            Format::Oci => truth::KIND_OCI,
        }
    }
    pub fn index_kind(self) -> &'static str {
        match self {
            Format::Docker => truth::KIND_DOCKER_LIST,
            Format::Oci => truth::KIND_OCI_INDEX,
        }
    }
}

/// A layer that is referenced by URL and never uploaded.
#[derive(Debug, Clone)]
pub struct ForeignLayer {
    /// The bytes the URL would serve; only their digest and size are used.
    pub bytes: Vec<u8>,
    pub url: String,
}

/// A manifest that was pushed, with what the truth needs to know about it.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The exact manifest bytes (to push the same manifest under another tag).
    pub bytes: Vec<u8>,
    pub kind: String,
    /// Set for single-platform images.
    pub platform: Option<Platform>,
    pub platforms: Vec<Platform>,
    pub children: Vec<String>,
    pub blobs: Vec<BlobRef>,
    pub foreign_layers: Vec<String>,
}

impl Pushed {
    /// The truth entry for `repo:tag` pointing at this manifest.
    pub fn tagged(&self, repo: &str, tag: &str) -> TaggedImage {
        TaggedImage {
            repository: repo.to_string(),
            tag: tag.to_string(),
            digest: self.digest.clone(),
            media_type: self.media_type.clone(),
            kind: self.kind.clone(),
            platforms: self.platforms.clone(),
            children: self.children.clone(),
            blobs: self.blobs.clone(),
            foreign_layers: self.foreign_layers.clone(),
        }
    }

    /// The descriptor an index uses to point at this manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            size: self.size,
            digest: self.digest.clone(),
            urls: Vec::new(),
            annotations: Default::default(),
            platform: self.platform.clone(),
        }
    }
}

/// Pushes `reference` (a tag, or `None` to push by digest only) → manifest bytes.
pub fn push_manifest_bytes(
    p: &Pusher,
    repo: &str,
    reference: Option<&str>,
    media_type: &str,
    bytes: &[u8],
) -> Result<String> {
    let digest = media::sha256_digest(bytes);
    let reference = reference.unwrap_or(&digest);
    p.push_manifest(repo, reference, media_type, bytes)
}

/// Uploads `layers` and a config, then pushes an image manifest under `reference`
/// (`None`: by digest only). `foreign` adds a Docker foreign layer after the others.
#[allow(clippy::too_many_arguments)]
pub fn push_image(
    p: &Pusher,
    repo: &str,
    reference: Option<&str>,
    format: Format,
    platform: &Platform,
    layers: &[&[u8]],
    labels: &[(&str, &str)],
    foreign: Option<&ForeignLayer>,
) -> Result<Pushed> {
    let mut layer_descs = Vec::new();
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let d = p.push_blob_typed(repo, format.layer_type(), layer)?;
        diff_ids.push(d.digest.clone());
        layer_descs.push(d);
    }
    let mut foreign_layers = Vec::new();
    if let Some(f) = foreign {
        let mut d = Descriptor::of(DOCKER_FOREIGN_LAYER, &f.bytes);
        d.urls.push(f.url.clone());
        diff_ids.push(d.digest.clone());
        foreign_layers.push(d.digest.clone());
        layer_descs.push(d);
    }
    let config = media::image_config(platform, &diff_ids, labels);
    let config_desc = p.push_blob_typed(repo, format.config_type(), &config)?;
    truth::push_unique(
        &mut blobs,
        BlobRef {
            digest: config_desc.digest.clone(),
            size: config_desc.size,
        },
    );
    for d in &layer_descs {
        if d.urls.is_empty() {
            truth::push_unique(
                &mut blobs,
                BlobRef {
                    digest: d.digest.clone(),
                    size: d.size,
                },
            );
        }
    }
    let manifest = ImageManifest::new(format.manifest_type(), config_desc, layer_descs);
    let bytes = manifest.to_bytes();
    let digest = push_manifest_bytes(p, repo, reference, format.manifest_type(), &bytes)?;
    Ok(Pushed {
        digest,
        media_type: format.manifest_type().to_string(),
        size: bytes.len() as u64,
        bytes: bytes.clone(),
        kind: format.kind().to_string(),
        platform: Some(platform.clone()),
        platforms: Vec::new(),
        children: Vec::new(),
        blobs,
        foreign_layers,
    })
}

/// Pushes an index (Docker list or OCI index) over already pushed `children` under `reference`.
pub fn push_index(
    p: &Pusher,
    repo: &str,
    reference: Option<&str>,
    format: Format,
    children: &[Pushed],
) -> Result<Pushed> {
    let index = ImageIndex::new(
        format.index_type(),
        children.iter().map(Pushed::descriptor).collect(),
    );
    let bytes = index.to_bytes();
    let digest = push_manifest_bytes(p, repo, reference, format.index_type(), &bytes)?;
    let mut blobs = Vec::new();
    let mut foreign_layers = Vec::new();
    for c in children {
        for b in &c.blobs {
            truth::push_unique(&mut blobs, b.clone());
        }
        for f in &c.foreign_layers {
            if !foreign_layers.contains(f) {
                foreign_layers.push(f.clone());
            }
        }
    }
    Ok(Pushed {
        digest,
        media_type: format.index_type().to_string(),
        size: bytes.len() as u64,
        bytes: bytes.clone(),
        kind: format.index_kind().to_string(),
        platform: None,
        platforms: children.iter().filter_map(|c| c.platform.clone()).collect(),
        children: children.iter().map(|c| c.digest.clone()).collect(),
        blobs,
        foreign_layers,
    })
}

/// One layer of an artifact.
#[derive(Debug, Clone)]
pub struct ArtifactLayer<'a> {
    pub media_type: &'a str,
    pub bytes: &'a [u8],
    pub annotations: Vec<(&'a str, &'a str)>,
}

/// Pushes an OCI artifact manifest: `config` with `config_type`, then `layers`.
pub fn push_artifact(
    p: &Pusher,
    repo: &str,
    reference: Option<&str>,
    config_type: &str,
    config: &[u8],
    layers: &[ArtifactLayer],
    annotations: &[(&str, &str)],
) -> Result<Pushed> {
    let mut blobs = Vec::new();
    let config_desc = p.push_blob_typed(repo, config_type, config)?;
    truth::push_unique(
        &mut blobs,
        BlobRef {
            digest: config_desc.digest.clone(),
            size: config_desc.size,
        },
    );
    let mut layer_descs = Vec::new();
    for layer in layers {
        let mut d = p.push_blob_typed(repo, layer.media_type, layer.bytes)?;
        for (k, v) in &layer.annotations {
            d = d.with_annotation(k, v);
        }
        truth::push_unique(
            &mut blobs,
            BlobRef {
                digest: d.digest.clone(),
                size: d.size,
            },
        );
        layer_descs.push(d);
    }
    let mut manifest = ImageManifest::new(OCI_MANIFEST, config_desc, layer_descs);
    for (k, v) in annotations {
        manifest.annotations.insert(k.to_string(), v.to_string());
    }
    let bytes = manifest.to_bytes();
    let digest = push_manifest_bytes(p, repo, reference, OCI_MANIFEST, &bytes)?;
    Ok(Pushed {
        digest,
        media_type: OCI_MANIFEST.to_string(),
        size: bytes.len() as u64,
        bytes: bytes.clone(),
        kind: truth::KIND_ARTIFACT.to_string(),
        platform: None,
        platforms: Vec::new(),
        children: Vec::new(),
        blobs,
        foreign_layers: Vec::new(),
    })
}

/// `len` pseudo-random bytes from `rng`.
pub fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}
