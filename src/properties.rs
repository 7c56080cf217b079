//! Property tests of every parser that reads untrusted bytes: link files, manifests, challenges,
//! token answers, `Retry-After`, auth files, image lists and names, tar headers and members.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::json;

use crate::digest::{Digest, DigestError};
use crate::filter::{ImageRef, read_image_list};
use crate::manifest::{ManifestError, ManifestKind, RawManifest, media_type};
use crate::names::{from_list_line, list_line};
use crate::registry::auth::{Challenge, MAX_TOKEN_LIFE, token_reply};
use crate::registry::credentials::CredentialOptions;
use crate::registry::error::retry_after;
use crate::source::archive_tree::{ArchiveTree, Data, RawMember};
use crate::source::members::{MemberKind, blob_data, clean_name, root_of, under};
use crate::source::tar_index;

/// Few enough cases that the whole file runs in a few seconds (`PROPTEST_CASES` sets more, for a
/// long run); no regression files in the tree (what a run found is kept as a named test).
fn cases(n: u32) -> ProptestConfig {
    let from_env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: from_env.unwrap_or(n),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A message a person reads on one line: no control character from the input may break it.
fn one_line(message: &str) -> bool {
    !message.chars().any(|c| c == '\n' || c == '\r')
}

// ---- link files -------------------------------------------------------------------------------

/// A digest as a link file writes it, or damaged in one of the ways trees are.
fn link_text() -> impl Strategy<Value = String> {
    let hex = "[0-9a-f]{64}";
    prop_oneof![
        hex.prop_map(|h| format!("sha256:{h}")),
        "[0-9a-f]{0,63}".prop_map(|h| format!("sha256:{h}")),
        "[0-9a-f]{65,130}".prop_map(|h| format!("sha256:{h}")),
        "[0-9A-F]{64}".prop_map(|h| format!("sha256:{h}")),
        ("[a-z0-9]{1,10}", "[0-9a-f]{64,128}").prop_map(|(a, h)| format!("{a}:{h}")),
        hex.prop_map(|h| format!("sha256:{h}\n")),
        "sha256:(\\.\\./)+[a-z/]{0,20}",
        ".{0,100}",
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn a_link_file_parses_only_as_exactly_sha256_and_64_lowercase_hex(bytes in vec(any::<u8>(), 0..160)) {
        let text = std::str::from_utf8(&bytes).ok();
        match Digest::from_link(&bytes) {
            Ok(d) => prop_assert_eq!(Some(d.to_string()), text.map(str::to_string)),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(one_line(&message), "{message}");
                prop_assert!(message.len() < 300, "{message}");
            }
        }
    }

    #[test]
    fn damaged_link_texts_are_refused_and_good_ones_round_trip(text in link_text()) {
        let valid = text.len() == 71
            && text.starts_with("sha256:")
            && text[7..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        match Digest::from_link(text.as_bytes()) {
            Ok(d) => {
                prop_assert!(valid, "{text:?} accepted");
                prop_assert_eq!(d.to_string(), text.clone());
                prop_assert_eq!(Digest::parse(&d.to_string()), Ok(d));
                prop_assert_eq!(Digest::from_hex(&d.hex()), Some(d));
            }
            Err(e) => {
                prop_assert!(!valid, "{text:?} refused: {e}");
                let algorithm = matches!(e, DigestError::Algorithm { .. });
                let other_algorithm = text.split_once(':').is_some_and(|(a, _)| a != "sha256" && !a.is_empty() && !a.contains(char::is_whitespace));
                prop_assert_eq!(algorithm, other_algorithm, "{:?}: {}", text, e);
                prop_assert!(one_line(&e.to_string()));
            }
        }
    }
}

// ---- manifests ----------------------------------------------------------------------------------

/// A descriptor's digest: right, of the wrong length, of another algorithm, uppercase, a path.
fn descriptor_digest() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        4 => any::<[u8; 32]>().prop_map(|b| (format!("sha256:{}", hex::encode(b)), true)),
        1 => "[0-9a-f]{1,63}".prop_map(|h| (format!("sha256:{h}"), false)),
        1 => "[0-9a-f]{128}".prop_map(|h| (format!("sha512:{h}"), false)),
        1 => "[0-9A-F]{64}".prop_map(|h| (format!("sha256:{h}"), false)),
        1 => Just(("sha256:../../../../etc/passwd".to_string(), false)),
    ]
}

/// A size as a hostile manifest may declare it.
fn descriptor_size() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..1 << 40,
        1 => Just(i64::MAX),
        1 => Just(u32::MAX as i64 + 1),
        1 => i64::MIN..0,
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Docker,
    Oci,
    DockerList,
    OciIndex,
    Schema1,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Docker),
        Just(Shape::Oci),
        Just(Shape::DockerList),
        Just(Shape::OciIndex),
        Just(Shape::Schema1),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn any_bytes_are_a_manifest_or_a_one_line_error_and_the_digest_is_of_the_bytes(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(m) = RawManifest::parse(bytes.clone()) {
            prop_assert_eq!(m.bytes(), &bytes[..]);
            prop_assert_eq!(m.digest(), Digest::of(&bytes));
        } else if let Err(e) = RawManifest::parse(bytes) {
            prop_assert!(one_line(&e.to_string()), "{e}");
        }
    }

    #[test]
    fn generated_manifests_classify_by_content_and_refuse_bad_descriptors(
        shape in shape(),
        entries in vec((descriptor_digest(), descriptor_size()), 0..5),
        config in (descriptor_digest(), descriptor_size()),
        pretty in any::<bool>(),
    ) {
        let descriptor = |((digest, _), size): &((String, bool), i64), media: &str| {
            json!({"mediaType": media, "digest": digest, "size": size})
        };
        let layer = "application/vnd.oci.image.layer.v1.tar+gzip";
        let (value, expected) = match shape {
            Shape::Docker | Shape::Oci => {
                let (mt, config_mt, kind) = if shape == Shape::Docker {
                    (media_type::DOCKER_V2, media_type::DOCKER_CONFIG, ManifestKind::Docker)
                } else {
                    (media_type::OCI_MANIFEST, media_type::OCI_CONFIG, ManifestKind::Oci)
                };
                (json!({
                    "schemaVersion": 2,
                    "mediaType": mt,
                    "config": descriptor(&config, config_mt),
                    "layers": entries.iter().map(|e| descriptor(e, layer)).collect::<Vec<_>>(),
                }), kind)
            }
            Shape::DockerList | Shape::OciIndex => {
                let (mt, child, kind) = if shape == Shape::DockerList {
                    (media_type::DOCKER_LIST, media_type::DOCKER_V2, ManifestKind::DockerList)
                } else {
                    (media_type::OCI_INDEX, media_type::OCI_MANIFEST, ManifestKind::OciIndex)
                };
                (json!({
                    "schemaVersion": 2,
                    "mediaType": mt,
                    "manifests": entries.iter().map(|e| descriptor(e, child)).collect::<Vec<_>>(),
                }), kind)
            }
            Shape::Schema1 => (json!({
                "schemaVersion": 1,
                "name": "a",
                "tag": "b",
                "fsLayers": entries.iter().map(|((d, _), _)| json!({"blobSum": d})).collect::<Vec<_>>(),
            }), ManifestKind::Schema1),
        };
        let bytes = if pretty { serde_json::to_vec_pretty(&value) } else { serde_json::to_vec(&value) }.unwrap();
        let with_config = matches!(shape, Shape::Docker | Shape::Oci);
        let sizes_count = shape != Shape::Schema1;
        let good = |((_, ok), size): &((String, bool), i64)| *ok && (!sizes_count || *size >= 0);
        let all_good = entries.iter().all(good) && (!with_config || good(&config));
        match RawManifest::parse(bytes.clone()) {
            Ok(m) => {
                prop_assert!(all_good, "accepted bad descriptors: {}", String::from_utf8_lossy(&bytes));
                prop_assert_eq!(m.kind(), expected);
                prop_assert_eq!(m.digest(), Digest::of(&bytes));
                prop_assert_eq!(m.bytes(), &bytes[..]);
                let listed = if expected.is_index() { m.manifests() } else { m.layers() };
                prop_assert_eq!(listed.len(), entries.len());
                if sizes_count {
                    for (d, (_, size)) in listed.iter().zip(&entries) {
                        prop_assert_eq!(d.size, *size as u64);
                    }
                }
            }
            Err(e) => {
                prop_assert!(!all_good, "refused a good manifest: {e}");
                prop_assert!(matches!(e, ManifestError::Descriptor { .. }), "{e}");
                prop_assert!(one_line(&e.to_string()), "{e}");
            }
        }
    }
}

#[test]
fn a_manifest_nested_past_serdes_recursion_limit_is_an_error_not_a_stack_overflow() {
    for open in ["[", "{\"a\":"] {
        let bytes = open.repeat(100_000).into_bytes();
        assert!(matches!(
            RawManifest::parse(bytes),
            Err(ManifestError::Json(_))
        ));
    }
}

// ---- WWW-Authenticate, token answers, Retry-After -----------------------------------------------

/// A quoted-string value of a challenge parameter: printable ASCII, `"` and `\` escaped.
fn quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn any_www_authenticate_value_parses_or_is_ignored(header in ".{0,200}") {
        let _ = Challenge::parse(&header);
    }

    #[test]
    fn bearer_challenges_give_back_their_realm_and_service(
        scheme in prop_oneof![Just("Bearer"), Just("bearer"), Just("BEARER")],
        realm in "[ -~]{1,60}",
        service in proptest::option::of("[ -~]{0,40}"),
        scope in proptest::option::of("[a-z/:,]{1,30}"),
        before in proptest::option::of(prop_oneof![Just("Negotiate"), Just("NTLM abc=")]),
    ) {
        let mut params = vec![format!("realm={}", quoted(&realm))];
        if let Some(s) = &service {
            params.push(format!("service={}", quoted(s)));
        }
        if let Some(s) = &scope {
            params.push(format!("scope={}", quoted(s)));
        }
        let mut header = format!("{scheme} {}", params.join(","));
        if let Some(b) = before {
            header = format!("{b}, {header}");
        }
        prop_assert_eq!(
            Challenge::parse(&header),
            Some(Challenge::Bearer { realm: realm.clone(), service: service.clone() }),
            "{}", header
        );
    }

    #[test]
    fn a_token_answer_never_quotes_its_token_in_an_error(
        token in "[A-Za-z0-9._-]{16,40}",
        shape in 0usize..6,
        expires in any::<u64>(),
    ) {
        let body = match shape {
            0 => json!({"token": token, "expires_in": expires}).to_string(),
            1 => json!({"access_token": token, "expires_in": expires.to_string()}).to_string(),
            2 => json!({"token": [token]}).to_string(),
            3 => format!("{{\"token\":\"{token}\",\"expires_in\":-{expires}}}"),
            4 => format!("{{\"token\":\"{token}\""),
            _ => json!({"token": {"value": token}, "expires_in": expires}).to_string(),
        };
        match token_reply("https://auth.example/token", body.as_bytes()) {
            Ok((secret, life)) => {
                prop_assert_eq!(secret.expose(), token.as_str());
                prop_assert!(life <= MAX_TOKEN_LIFE);
                // What the caller does with it: never an overflow.
                let _ = std::time::Instant::now() + life;
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.contains(&token), "{message}");
                prop_assert!(one_line(&message), "{message}");
            }
        }
    }

    #[test]
    fn any_bytes_are_a_token_answer_or_an_error(body in vec(any::<u8>(), 0..200)) {
        if let Ok((_, life)) = token_reply("https://auth.example/token", &body) {
            prop_assert!(life <= MAX_TOKEN_LIFE);
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates_and_nothing_else(
        seconds in any::<u64>(),
        pad in "[ \t]{0,2}",
        now_secs in 0u64..4_000_000_000,
        then_secs in 0u64..253_402_300_799,
        junk in ".{0,40}",
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        prop_assert_eq!(
            retry_after(&format!("{pad}{seconds}{pad}"), now),
            Some(Duration::from_secs(seconds))
        );
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(then_secs));
        prop_assert_eq!(
            retry_after(&date, now),
            Some(Duration::from_secs(then_secs.saturating_sub(now_secs)))
        );
        if let Some(d) = retry_after(&junk, now) {
            // Only a number or a date is understood.
            let t = junk.trim();
            prop_assert!(t.parse::<u64>().is_ok() || httpdate::parse_http_date(t).is_ok(), "{junk:?} → {d:?}");
        }
    }
}

#[test]
fn a_token_that_never_expires_is_renewed_like_any_other() {
    // Regression: `expires_in` = u64::MAX overflowed `Instant + Duration` and panicked.
    let body = format!("{{\"token\":\"t\",\"expires_in\":{}}}", u64::MAX);
    let (_, life) = token_reply("https://auth.example/token", body.as_bytes()).unwrap();
    assert_eq!(life, MAX_TOKEN_LIFE);
}

// ---- auth files -----------------------------------------------------------------------------------

/// Resolves credentials for `host` from an auth file holding `text`; the error chain as one string.
fn resolve_from(text: &[u8], host: &str) -> Result<Option<(String, String)>, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    std::fs::write(&file, text).unwrap();
    let options = CredentialOptions {
        authfile: Some(file),
        ..CredentialOptions::default()
    };
    options
        .resolve(host)
        .map(|found| found.map(|(c, _)| (c.username, c.password.expose().to_string())))
        .map_err(|e| format!("{e:#}"))
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn an_auth_file_error_never_quotes_a_secret(secret in "[A-Za-z0-9+/]{12,30}", shape in 0usize..8, cut in any::<prop::sample::Index>()) {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = match shape {
            0 => json!({"auths": {"reg.example": secret}}).to_string(),
            1 => json!({"auths": {"reg.example": {"auth": secret}}}).to_string(),
            2 => json!({"auths": {"reg.example": {"auth": b64(&secret)}}}).to_string(),
            3 => json!({"auths": {"reg.example": {"username": "u", "password": [secret]}}}).to_string(),
            4 => json!({"auths": {"reg.example": {"username": 7, "password": secret}}}).to_string(),
            5 => json!({"auths": [secret]}).to_string(),
            6 => {
                let whole = json!({"auths": {"reg.example": {"auth": b64(&format!("u:{secret}"))}}}).to_string();
                whole[..cut.index(whole.len())].to_string()
            }
            _ => format!("{{\"auths\":{{\"reg.example\":{{\"password\":\"{secret}\",}}}}"),
        };
        match resolve_from(text.as_bytes(), "reg.example") {
            Ok(_) => {}
            Err(message) => {
                prop_assert!(!message.contains(&secret), "{message}");
                prop_assert!(!message.contains(&b64(&secret)), "{message}");
                prop_assert!(!message.contains(&b64(&format!("u:{secret}"))), "{message}");
            }
        }
    }

    #[test]
    fn an_auth_entry_gives_back_its_user_and_password(user in "[a-z][a-z0-9._-]{0,20}", password in "[ -~]{1,40}", https in any::<bool>()) {
        use base64::Engine as _;
        let key = if https { "https://reg.example:5000/v1/" } else { "reg.example:5000" };
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let text = json!({"auths": {key: {"auth": auth}}}).to_string();
        prop_assert_eq!(
            resolve_from(text.as_bytes(), "reg.example:5000"),
            Ok(Some((user.clone(), password.clone())))
        );
    }

    #[test]
    fn any_auth_file_bytes_resolve_or_fail_without_a_panic(bytes in vec(any::<u8>(), 0..200)) {
        let _ = resolve_from(&bytes, "reg.example");
    }
}

#[test]
fn an_auth_entry_that_is_a_string_is_refused_without_quoting_it() {
    // Regression: serde's message quoted the value ("invalid type: string \"…\"").
    let text = json!({"auths": {"reg.example": "dXNlcjpodW50ZXIy"}}).to_string();
    let message = resolve_from(text.as_bytes(), "reg.example").unwrap_err();
    assert!(!message.contains("dXNlcjpodW50ZXIy"), "{message}");
    assert!(message.contains("line 1 column"), "{message}");
}

// ---- image lists and names --------------------------------------------------------------------------

/// A name component as a damaged tree may hold it: anything but `/` and NUL.
fn odd_component() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9][a-z0-9._-]{0,12}",
        1 => "[^/\\x00]{1,12}",
        1 => "[#:@\"\\\\ \t\n.a-z]{1,8}",
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn a_list_line_is_one_line_and_reads_back_as_itself(reference in "(?s).{0,60}") {
        let line = list_line(&reference);
        prop_assert!(one_line(&line), "{line:?}");
        prop_assert_eq!(line.trim(), &*line);
        prop_assert!(!line.starts_with('#'), "{line:?} reads as a comment");
        prop_assert_eq!(from_list_line(&line).unwrap(), reference.as_str());
    }

    #[test]
    fn a_failed_list_of_any_names_reads_back_as_exactly_those_images(
        images in vec((vec(odd_component(), 1..4), odd_component(), any::<bool>()), 1..6),
    ) {
        let mut written = Vec::new();
        let mut text = String::new();
        for (components, tag, untagged) in &images {
            let repository = components.join("/");
            let image = if *untagged {
                ImageRef::Digest { repository: repository.clone(), digest: Digest::of(tag.as_bytes()) }
            } else {
                ImageRef::Tag { repository: repository.clone(), tag: tag.clone() }
            };
            text.push_str(&image.list_line());
            text.push('\n');
            written.push(image);
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("failed.txt");
        std::fs::write(&file, &text).unwrap();
        let read = read_image_list(&file).map_err(|e| format!("{e:#}"));
        prop_assert_eq!(read, Ok(written), "{}", text);
    }

    #[test]
    fn plain_references_parse_and_print_back_unchanged(
        repository in "[a-z0-9]{1,5}(/[a-z0-9]{1,5}){0,3}",
        tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
    ) {
        let text = format!("{repository}:{tag}");
        let parsed = ImageRef::parse(&text).unwrap();
        prop_assert_eq!(parsed.to_string(), text.clone());
        prop_assert_eq!(ImageRef::split(&text).unwrap(), parsed);
    }

    #[test]
    fn any_image_list_text_reads_or_fails_with_the_line_number(text in "(.{0,30}\n){0,6}") {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("list.txt");
        std::fs::write(&file, &text).unwrap();
        if let Err(e) = read_image_list(&file) {
            let message = format!("{e:#}");
            prop_assert!(message.contains("list.txt:"), "{message}");
            prop_assert!(one_line(&message), "{message}");
        }
    }
}

// ---- tar archives ---------------------------------------------------------------------------------------

/// A plain tar of a few small files, as a registry tarball holds them.
fn small_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, &data[..])
            .expect("a member is added");
    }
    builder.into_inner().expect("the tar is finished")
}

/// Indexes `bytes` as a tar file; every member must lie inside the file.
fn index_bytes(bytes: &[u8]) -> Result<tar_index::TarIndex, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tar");
    std::fs::write(&path, bytes).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let index = tar_index::index(&path, &file).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for m in &index.members {
        if let Data::InTar { offset, len } = m.data {
            prop_assert!(offset.saturating_add(len) <= bytes.len() as u64, "{m:?}");
        }
    }
    for d in &index.damage {
        prop_assert!(one_line(&d.to_string()), "{d}");
    }
    Ok(index)
}

/// A member name built from the parts a tree (or a hostile archive) uses.
fn member_name() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        Just("docker".to_string()),
        Just("registry".to_string()),
        Just("v2".to_string()),
        Just("repositories".to_string()),
        Just("blobs".to_string()),
        Just("sha256".to_string()),
        Just("_manifests".to_string()),
        Just("tags".to_string()),
        Just("current".to_string()),
        Just("link".to_string()),
        Just("data".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just("ab".to_string()),
        Just(format!("ab{}", "0".repeat(62))),
        "[a-z_:@]{1,6}",
    ];
    (any::<bool>(), vec(part, 1..10)).prop_map(|(absolute, parts)| {
        let name = parts.join("/");
        if absolute { format!("/{name}") } else { name }.into_bytes()
    })
}

fn member_kind() -> impl Strategy<Value = MemberKind> {
    prop_oneof![
        4 => Just(MemberKind::File),
        1 => Just(MemberKind::Dir),
        1 => member_name().prop_map(MemberKind::HardLink),
        1 => member_name().prop_map(MemberKind::Symlink),
        1 => Just(MemberKind::Refused("a FIFO")),
        1 => Just(MemberKind::Ignored),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn any_bytes_index_as_a_tar_without_a_member_outside_the_file(bytes in vec(any::<u8>(), 0..3000)) {
        index_bytes(&bytes)?;
    }

    #[test]
    fn a_damaged_tar_indexes_what_precedes_the_damage(
        files in vec(("[a-z]{1,8}(/[a-z]{1,8}){0,3}", vec(any::<u8>(), 0..700)), 1..5),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let whole = small_tar(&files);
        let index = index_bytes(&whole)?;
        prop_assert!(index.damage.is_empty(), "{:?}", index.damage);
        let names: Vec<Vec<u8>> = files.iter().map(|(n, _)| n.clone().into_bytes()).collect();
        let got: Vec<Vec<u8>> = index.members.iter().map(|m| m.name.clone()).collect();
        prop_assert_eq!(got, names);
        let mut bytes = whole.clone();
        for (at, b) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *b;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        let damaged = index_bytes(&bytes)?;
        prop_assert!(damaged.members.len() <= files.len() + flips.len() * 2);
        // Cut before the first of the two end-of-archive blocks (one zero block still ends a tar).
        if cut.is_some_and(|c| c.index(whole.len()) < whole.len() - 512) && flips.is_empty() {
            prop_assert!(!damaged.damage.is_empty(), "a cut tar must be reported");
        }
    }

    #[test]
    fn a_clean_member_name_is_relative_and_never_climbs(name in prop_oneof![member_name(), vec(any::<u8>(), 0..40)]) {
        if let Ok(clean) = clean_name(&name) {
            prop_assert!(!clean.starts_with('/'), "{clean}");
            prop_assert!(!clean.contains('\0'));
            prop_assert!(clean.is_empty() || clean.split('/').all(|p| !p.is_empty() && p != "." && p != ".."), "{clean}");
            if let Some((prefix, hex)) = blob_data(&clean) {
                let rest = format!("blobs/sha256/{}/{hex}/data", &hex[..2]);
                let rebuilt = if prefix.is_empty() { rest } else { format!("{prefix}/{rest}") };
                prop_assert_eq!(rebuilt, clean.clone());
            }
            if let Some(root) = root_of(&clean) {
                prop_assert!(under(root, &clean).is_some(), "{root} / {clean}");
            }
        }
    }

    #[test]
    fn any_members_build_a_tree_or_a_clear_error(
        members in vec((member_name(), member_kind(), vec(any::<u8>(), 0..80)), 0..24),
    ) {
        let raw: Vec<RawMember> = members
            .into_iter()
            .map(|(name, kind, data)| RawMember { name, kind, data: Data::Memory(data.into()) })
            .collect();
        match ArchiveTree::build(Path::new("/x.tar"), None, raw, Vec::new(), None) {
            Ok(tree) => {
                use crate::source::{ScanOptions, Source};
                let scan = tree.repositories(ScanOptions { revisions: true }, &|_| true).unwrap();
                for repo in &scan.repositories {
                    prop_assert!(!repo.name.split('/').any(|c| c == ".." || c.is_empty()), "{}", repo.name);
                    for tag in &repo.tags {
                        if let Err(p) = &tag.target {
                            prop_assert!(one_line(&p.to_string()), "{p}");
                        }
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn a_time_in_the_past_never_makes_a_retry_wait() {
    let now = SystemTime::now();
    let past = httpdate::fmt_http_date(now - Duration::from_secs(3600));
    assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
}

#[test]
fn a_bearer_challenge_after_one_the_parser_cannot_read_is_still_found() {
    // Regression: `NTLM abc=` (a token68) before it made the whole header unreadable.
    assert_eq!(
        Challenge::parse(r#"NTLM abc=, Bearer realm="https://auth.example/token",service="reg""#),
        Some(Challenge::Bearer {
            realm: "https://auth.example/token".to_string(),
            service: Some("reg".to_string()),
        })
    );
}

#[test]
fn a_token_answer_of_the_wrong_shape_is_refused_without_quoting_it() {
    // Regression: serde's message quoted the value it did not expect.
    let e = token_reply("https://a/t", br#"{"token": 31415926535897932}"#).unwrap_err();
    assert!(!e.to_string().contains("31415926535897932"), "{e}");
}

#[test]
fn failed_list_lines_of_odd_names_read_back_as_their_images() {
    // Regression: these were written plain and refused on reading (the whole list, exit 2), read
    // as a comment, or split at the wrong separator.
    let d = Digest::of(b"x");
    let images = [
        ImageRef::Tag {
            repository: "a-".into(),
            tag: "0".into(),
        },
        ImageRef::Tag {
            repository: "#x".into(),
            tag: "v1".into(),
        },
        ImageRef::Tag {
            repository: "a".into(),
            tag: "@".into(),
        },
        ImageRef::Tag {
            repository: "a:b".into(),
            tag: "c:d".into(),
        },
        ImageRef::Tag {
            repository: "a@b".into(),
            tag: "c".into(),
        },
        ImageRef::Digest {
            repository: "a:b@c".into(),
            digest: d,
        },
    ];
    let text: String = images.iter().map(|i| i.list_line() + "\n").collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("failed.txt");
    std::fs::write(&file, &text).unwrap();
    assert_eq!(read_image_list(&file).unwrap(), images, "{text}");
    assert!(text.lines().all(|l| !l.starts_with('#')), "{text}");
}
