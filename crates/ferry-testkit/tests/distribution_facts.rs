//! Pins down Distribution 2.8 behaviours that ferry and its tests rely on or must work around.

use std::fs;

use ferry_testkit::images::{ForeignLayer, Format, push_image};
use ferry_testkit::media::{
    self, ACCEPT_ALL_MANIFESTS, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, ImageIndex,
    OCI_INDEX, OCI_MANIFEST, Platform,
};
use ferry_testkit::standard::repos;
use ferry_testkit::{Pusher, Registry, RegistryConfig, generate_standard, tree};

const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}

#[test]
fn manifest_get_depends_on_the_accept_header() {
    let reg = Registry::start().unwrap();
    let truth = generate_standard(&reg, 1).unwrap();
    let p = Pusher::new(&reg);

    // OCI manifests and indexes are refused (404) unless their type is accepted, even by digest.
    let oci = &truth.tags["ns/sub:1.0"];
    let err = p
        .get_manifest_accepting("ns/sub", "1.0", DOCKER_MANIFEST)
        .unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("OCI manifest found, but accept header does not support OCI manifests")
    );
    assert!(
        p.get_manifest_accepting("ns/sub", &oci.digest, "*/*")
            .is_err()
    );
    assert_eq!(
        p.get_manifest_accepting("ns/sub", "1.0", OCI_MANIFEST)
            .unwrap()
            .digest,
        oci.digest
    );
    let err = p
        .get_manifest_accepting(
            "multi/oci-app",
            "1.0",
            &format!("{OCI_MANIFEST}, {DOCKER_MANIFEST_LIST}"),
        )
        .unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("OCI index found, but accept header does not support OCI indexes")
    );
    assert_eq!(
        p.get_manifest_accepting("multi/oci-app", "1.0", OCI_INDEX)
            .unwrap()
            .digest,
        truth.tags["multi/oci-app:1.0"].digest
    );

    // A Docker list fetched by tag without the list type accepted gives its linux/amd64 child.
    let list = &truth.tags["org/team/sub/app:1.0"];
    let m = p
        .get_manifest_accepting(repos::ORG_TEAM_SUB_APP, "1.0", DOCKER_MANIFEST)
        .unwrap();
    assert_eq!(m.digest, list.children[0]);

    // A Docker schema2 manifest fetched by tag without its type accepted is converted on the fly
    // to a signed schema1 manifest, with another digest. By digest it is served as stored.
    let docker = &truth.tags["alpine:3.19"];
    for accept in ["*/*", OCI_MANIFEST] {
        let m = p.get_manifest_accepting("alpine", "3.19", accept).unwrap();
        assert_eq!(m.media_type, SCHEMA1);
        assert_ne!(m.digest, docker.digest);
    }
    assert_eq!(
        p.get_manifest_accepting("alpine", &docker.digest, "*/*")
            .unwrap()
            .digest,
        docker.digest
    );
    assert_eq!(
        p.get_manifest("alpine", "3.19").unwrap().digest,
        docker.digest
    );
    assert!(ACCEPT_ALL_MANIFESTS.contains(OCI_INDEX));
}

#[test]
fn blob_and_catalog_requests() {
    let reg = Registry::start().unwrap();
    let p = Pusher::new(&reg);
    let d = p.push_blob("a/one", b"shared base").unwrap();
    // Blobs are scoped by repository: HEAD in another repository is 404 until mounted.
    assert!(!p.blob_exists("b/two", &d.digest).unwrap());
    assert!(p.mount_blob("b/two", "a/one", &d.digest).unwrap());
    assert!(p.blob_exists("b/two", &d.digest).unwrap());
    // The catalog refuses n above catalog.maxentries (1000).
    let url = format!("{}/v2/_catalog?n=1001", reg.url());
    let out = std::process::Command::new("curl")
        .args(["-s", &url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("PAGINATION_NUMBER_INVALID"));
    assert_eq!(p.catalog().unwrap(), ["a/one", "b/two"]);
}

#[test]
fn a_single_post_with_digest_is_not_a_monolithic_upload() {
    let reg = Registry::start().unwrap();
    let body = b"monolithic?";
    let digest = media::sha256_digest(body);
    let url = format!("{}/v2/mono/blobs/uploads/?digest={digest}", reg.url());
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data-binary",
            "monolithic?",
            &url,
        ])
        .output()
        .unwrap();
    // 202: Distribution 2.8 opened an upload session and ignored the body.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "202");
    assert!(!Pusher::new(&reg).blob_exists("mono", &digest).unwrap());
    let stopped = reg.stop().unwrap();
    let uploads = tree::repo_dir(stopped.root(), "mono").join("_uploads");
    assert_eq!(
        fs::read_dir(uploads).unwrap().count(),
        1,
        "an open session is left behind"
    );
}

#[test]
fn pushes_distribution_refuses() {
    let reg = Registry::start().unwrap();
    let p = Pusher::new(&reg);
    // An index whose children are not in the repository.
    let child = Descriptor::of(DOCKER_MANIFEST, b"not pushed").with_platform(amd64());
    let index = ImageIndex::new(DOCKER_MANIFEST_LIST, vec![child]);
    let err = p
        .push_manifest("r", "1", DOCKER_MANIFEST_LIST, &index.to_bytes())
        .unwrap_err();
    println!("index before children: {err:#}");
    assert!(
        format!("{err:#}").contains("MANIFEST_BLOB_UNKNOWN"),
        "{err:#}"
    );
    // A layer that exists in the registry but is not linked in this repository.
    let layer = b"layer in another repo";
    p.push_blob("other", layer).unwrap();
    let config = p.push_blob_typed("r", media::DOCKER_CONFIG, b"{}").unwrap();
    let m = media::ImageManifest::new(
        DOCKER_MANIFEST,
        config,
        vec![Descriptor::of(media::DOCKER_LAYER, layer)],
    );
    let err = p
        .push_manifest("r", "2", DOCKER_MANIFEST, &m.to_bytes())
        .unwrap_err();
    println!("layer not linked in the repository: {err:#}");
    assert!(
        format!("{err:#}").contains("MANIFEST_BLOB_UNKNOWN"),
        "{err:#}"
    );
    // DELETE needs a digest; a tag is refused.
    push_image(
        &p,
        "r",
        Some("1"),
        Format::Docker,
        &amd64(),
        &[b"l"],
        &[],
        None,
    )
    .unwrap();
    // DELETE needs a digest; a tag is refused.
    let url = format!("{}/v2/r/manifests/1", reg.url());
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", "DELETE", &url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("DIGEST_INVALID"));
}

#[test]
fn foreign_layers_need_an_allow_list() {
    let foreign = ForeignLayer {
        bytes: vec![7; 64],
        url: "https://example.invalid/layer.tar.gz".into(),
    };
    let strict = Registry::start_with(RegistryConfig {
        manifest_urls_allow: vec![],
        ..Default::default()
    })
    .unwrap();
    let err = push_image(
        &Pusher::new(&strict),
        "f",
        Some("1"),
        Format::Docker,
        &amd64(),
        &[b"x"],
        &[],
        Some(&foreign),
    )
    .unwrap_err();
    println!("foreign layer without validation.manifests.urls.allow: {err:#}");
    assert!(
        format!("{err:#}").contains("MANIFEST_BLOB_UNKNOWN"),
        "{err:#}"
    );
    let open = Registry::start().unwrap();
    push_image(
        &Pusher::new(&open),
        "f",
        Some("1"),
        Format::Docker,
        &amd64(),
        &[b"x"],
        &[],
        Some(&foreign),
    )
    .unwrap();
}

#[test]
fn deleting_a_manifest_removes_its_tags_and_revision_link() {
    let reg = Registry::start().unwrap();
    let p = Pusher::new(&reg);
    let img = push_image(
        &p,
        "d",
        Some("t"),
        Format::Oci,
        &amd64(),
        &[b"layer"],
        &[],
        None,
    )
    .unwrap();
    p.delete_manifest("d", &img.digest).unwrap();
    assert!(
        p.tags("d").unwrap().is_empty(),
        "tags/list answers \"tags\": null"
    );
    let stopped = reg.stop().unwrap();
    let root = stopped.root();
    assert!(!tree::repo_dir(root, "d").join("_manifests/tags/t").exists());
    let link = tree::revision_link(root, "d", &img.digest);
    assert!(!link.exists(), "the link goes");
    assert!(link.parent().unwrap().is_dir(), "its folder stays");
    assert!(
        tree::blob_data(root, &img.digest).exists(),
        "blob data stays until garbage collection"
    );
}

#[test]
fn a_removed_layer_link_hides_the_blob_only_without_the_descriptor_cache() {
    for cache in [true, false] {
        let reg = Registry::start_with(RegistryConfig {
            blob_descriptor_cache: cache,
            ..Default::default()
        })
        .unwrap();
        let p = Pusher::new(&reg);
        let blob = p.push_blob("a/b", b"layer bytes").unwrap();
        assert!(p.blob_exists("a/b", &blob.digest).unwrap());
        fs::remove_file(tree::layer_link(reg.storage_root(), "a/b", &blob.digest)).unwrap();
        // The in-memory cache keeps answering for the repository until a restart.
        assert_eq!(
            p.blob_exists("a/b", &blob.digest).unwrap(),
            cache,
            "cache {cache}"
        );
    }
}
