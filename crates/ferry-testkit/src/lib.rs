//! Test harness for ferry: starts real docker-registry instances and fills them with synthetic images.
//!
//! ```no_run
//! use ferry_testkit::{Registry, check_tree, generate_standard};
//!
//! let reg = Registry::start()?; // docker-registry on 127.0.0.1:<free port>
//! let truth = generate_standard(&reg, 1)?; // pushes the standard scenario
//! let tree = reg.stop()?; // SIGTERM; the storage folder stays until `tree` drops
//! check_tree(tree.root(), &truth)?; // tree.root()/docker/registry/v2/...
//! # anyhow::Ok(())
//! ```
//!
//! Destinations with more than plain HTTP are `RegistryConfig` options: `auth:
//! RegistryAuth::htpasswd(..)` (bcrypt htpasswd, Basic), `RegistryAuth::token(..)` (a JWT
//! token issuer run by the harness, see [`auth`]), `tls: true` (a certificate from a fresh test
//! CA; [`Registry::ca_cert`] is what a client passes as `--ca-cert`), `relative_urls: true`.
//! A [`Proxy`] in front of a registry counts every request (upload sessions, mounts, how bodies
//! were framed), can answer the next N matching requests with an error, and with a
//! [`HarborDouble`] plays Harbor 2.x in front of the registry (a double, not Harbor: its token
//! service, per-project rights, project API, quotas, immutable tags and error answers, see
//! [`harbor`]). A [`Chaos`] relay in front of a proxy injects seeded random faults: connections
//! cut mid request or mid answer, 5xx, 429 with `Retry-After`.
//!
//! A committed tree of the standard scenario is in `testdata/registry` with its truth in
//! `testdata/registry.truth.json` (regenerate with `scripts/gen-testdata.sh`).
//! Set `FERRY_TESTKIT_TMPDIR=/dev/shm` to run registries on a tmpfs (Distribution fsyncs
//! every blob); `FERRY_TESTKIT_REGISTRY_BIN` points at another registry binary.

pub mod auth;
pub mod bulk;
pub mod chaos;
pub mod harbor;
pub mod images;
pub mod media;
pub mod proxy;
pub mod push;
pub mod registry;
pub mod relay;
pub mod silent;
pub mod standard;
pub mod tls;
pub mod tree;
pub mod truth;
pub mod verify;

use std::time::Duration;

pub use auth::{RegistryAuth, TokenIssuer, User};
pub use bulk::{BulkSpec, generate_bulk};
pub use chaos::{Chaos, ChaosSpec, FaultKind, FaultRecord};
pub use harbor::{HarborDouble, HarborVersion, Perm, Role};
pub use media::{Descriptor, Platform};
pub use proxy::{Proxy, RequestRecord, upload_counts};
pub use push::{FetchedManifest, Pusher};
pub use registry::{Registry, RegistryConfig, StoppedTree};
pub use relay::TcpRelay;
pub use silent::SilentServer;
pub use standard::generate_standard;
pub use truth::{BlobRef, TaggedImage, Truth, UnfinishedUpload, UntaggedManifest};
pub use verify::{check_registry, check_tree};

/// A plain-HTTP agent that ignores proxy variables and hands back 4xx/5xx responses
/// instead of turning them into errors.
pub(crate) fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// Like [`http_agent`], for HTTPS servers whose certificate the CA in `ca_pem` signed.
pub(crate) fn https_agent(
    timeout: Duration,
    ca_pem: &std::path::Path,
) -> anyhow::Result<ureq::Agent> {
    use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
    let pem = std::fs::read(ca_pem)?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build();
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .tls_config(tls)
        .build()
        .into())
}
