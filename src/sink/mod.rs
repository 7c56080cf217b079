//! Sinks: where the copy engine writes images (layouts on disk, registries).

pub mod dir_layout;
pub mod layout;
pub mod link;
pub mod oci_layout;
pub mod registry;

use std::fmt;

use crate::engine::Fatal;
use crate::inventory::{BlobRef, Image};
use crate::manifest::RawManifest;
use crate::progress::Progress;
use crate::registry::RegistryError;
use crate::registry::harbor::Refusal;
use crate::source::BlobFile;
use link::LinkError;

/// Why a sink could not take something.
#[derive(Debug)]
pub enum SinkError {
    /// Fails the image being written; the run goes on.
    Image(ImageError),
    /// Nothing more can be done (destination gone, credentials refused, disk full): the run stops.
    Fatal(Fatal),
    /// The work was cut short because the run is stopping.
    Stopped,
}

impl SinkError {
    /// An image-level refusal in the sink's own words.
    pub fn invalid(message: String) -> SinkError {
        SinkError::Image(ImageError::Invalid(message))
    }
}

/// Why one image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The registry refused or failed a request; `hint` says what the user can do.
    #[error("{error}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Registry {
        error: RegistryError,
        hint: Option<String>,
    },
    /// Harbor refused it (a project it cannot go to, a quota, an immutable tag).
    #[error(transparent)]
    Harbor(#[from] Refusal),
    /// A file could not be placed in a layout.
    #[error(transparent)]
    Layout(#[from] LinkError),
    /// Anything else the sink refuses (an existing `index.json` it cannot read, no source file).
    #[error("{0}")]
    Invalid(String),
}

impl From<RegistryError> for ImageError {
    fn from(error: RegistryError) -> ImageError {
        ImageError::Registry { error, hint: None }
    }
}

/// Work a sink does once at the end (`finish`) that failed, and the images it concerns.
#[derive(Debug)]
pub struct Unfinished {
    /// What could not be completed (an `index.json`), for messages.
    pub what: String,
    /// Source references of the images that depend on it.
    pub images: Vec<String>,
    pub error: SinkError,
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobAction {
    /// Sent over the wire.
    Uploaded,
    /// Cross-repository mount at the destination.
    Mounted,
    /// Already at the destination.
    Present,
    /// Hard link to the source file.
    Linked,
    /// Reflink (copy-on-write clone) of the source file.
    Reflinked,
    /// Byte copy, hashed on the way.
    Copied,
}

impl BlobAction {
    /// Whether the action wrote the blob's bytes (to a disk or a wire).
    pub fn writes_bytes(self) -> bool {
        matches!(self, BlobAction::Uploaded | BlobAction::Copied)
    }
}

/// A destination for images. The engine calls, per image: `target`, `image_present`,
/// `put_blob` for each config/layer, `put_manifest` children first and the tagged one last,
/// `finish_image`; and `finish` once at the end. Implementations are shared by worker threads.
pub trait Sink: Sync {
    /// Where one image goes (a destination repository, a folder).
    type Target: Clone + Send + Sync + fmt::Display;

    /// Maps an image to its target; an error (a name the destination refuses, a project that
    /// cannot take it) fails that image before anything is sent.
    fn target(&self, image: &Image) -> Result<Self::Target, ImageError>;

    /// Whether the image is already complete at its target, so it can be skipped.
    fn image_present(&self, target: &Self::Target, image: &Image) -> Result<bool, SinkError>;

    /// Stores one blob from its local file, verifying digest and size on the way.
    fn put_blob(
        &self,
        target: &Self::Target,
        blob: &BlobRef,
        file: &BlobFile,
        progress: &Progress,
    ) -> Result<BlobAction, SinkError>;

    /// Stores a manifest as its exact bytes; `tag` is set for the image's top manifest when it has one.
    fn put_manifest(
        &self,
        target: &Self::Target,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), SinkError>;

    /// Called after an image's manifests are stored.
    fn finish_image(&self, _target: &Self::Target, _image: &Image) -> Result<(), SinkError> {
        Ok(())
    }

    /// Called once after every image (write indexes, flush); what failed fails its images.
    fn finish(&self) -> Vec<Unfinished> {
        Vec::new()
    }
}
