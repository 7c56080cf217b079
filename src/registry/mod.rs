//! Talking to registries (Distribution, Harbor, any OCI registry): client, auth, credentials, errors.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod endpoint;
pub mod error;
pub mod harbor;
pub mod jwt;

pub use client::{Client, ClientOptions, FetchedManifest, ManifestHead, Mount};
pub use credentials::{CredentialOptions, CredentialSource, Credentials};
pub use endpoint::Endpoint;
pub use error::RegistryError;
