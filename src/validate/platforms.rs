//! `-a/--arch` and `--os` (Hangar's semantics): which index entries count, and the srcSpec/dstSpec comparison.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::digest::Digest;
use crate::manifest::{Descriptor, Platform, RawManifest};

/// The platforms a validation looks at; empty lists mean every platform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformSelection {
    /// `amd64`, or `arm/v7` to name one variant (plain `arm` takes every variant).
    arches: BTreeSet<(String, Option<String>)>,
    oses: BTreeSet<String>,
}

impl PlatformSelection {
    /// From the comma-split values of `-a/--arch` and `--os`.
    pub fn new(arches: &[String], oses: &[String]) -> anyhow::Result<PlatformSelection> {
        let mut selection = PlatformSelection::default();
        for a in arches.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            let (arch, variant) = match a.split_once('/') {
                Some((arch, variant)) => (arch, Some(variant.to_string())),
                None => (a, None),
            };
            if arch.is_empty()
                || variant
                    .as_deref()
                    .is_some_and(|v| v.is_empty() || v.contains('/'))
            {
                anyhow::bail!(
                    "--arch {a:?}: expected ARCH or ARCH/VARIANT, for example arm64 or arm/v7"
                );
            }
            selection.arches.insert((arch.to_string(), variant));
        }
        selection.oses.extend(
            oses.iter()
                .map(|o| o.trim())
                .filter(|o| !o.is_empty())
                .map(str::to_string),
        );
        Ok(selection)
    }

    /// No `-a` and no `--os`: every platform, and digests must match exactly.
    pub fn is_all(&self) -> bool {
        self.arches.is_empty() && self.oses.is_empty()
    }

    /// Whether an index entry with this platform is looked at; entries without one only when all are.
    pub fn selects(&self, platform: Option<&Platform>) -> bool {
        if self.is_all() {
            return true;
        }
        let Some(p) = platform else { return false };
        let arch_ok = self.arches.is_empty()
            || self.arches.iter().any(|(arch, variant)| {
                *arch == p.architecture
                    && variant
                        .as_ref()
                        .is_none_or(|v| p.variant.as_deref() == Some(v.as_str()))
            });
        let os_ok = self.oses.is_empty() || self.oses.contains(&p.os);
        arch_ok && os_ok
    }

    /// The entries of an index this selection looks at.
    pub fn entries<'m>(&self, index: &'m RawManifest) -> Vec<&'m Descriptor> {
        index
            .manifests()
            .iter()
            .filter(|d| self.selects(d.platform.as_ref()))
            .collect()
    }
}

impl fmt::Display for PlatformSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("all platforms");
        }
        let arches: Vec<String> = self
            .arches
            .iter()
            .map(|(a, v)| match v {
                Some(v) => format!("{a}/{v}"),
                None => a.clone(),
            })
            .collect();
        let oses: Vec<&str> = self.oses.iter().map(String::as_str).collect();
        write!(
            f,
            "arch {}, os {}",
            if arches.is_empty() {
                "any".to_string()
            } else {
                arches.join(",")
            },
            if oses.is_empty() {
                "any".to_string()
            } else {
                oses.join(",")
            }
        )
    }
}

/// One index entry as Hangar prints it in `srcSpec` / `dstSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecEntry {
    pub digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl From<&Descriptor> for SpecEntry {
    fn from(d: &Descriptor) -> SpecEntry {
        SpecEntry {
            digest: d.digest,
            platform: d.platform.clone(),
        }
    }
}

/// How a source index entry fares in the destination index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryMismatch {
    /// No entry with that digest, and none with the same platform.
    Missing(SpecEntry),
    /// Another digest stands for the same platform.
    OtherDigest { source: SpecEntry, dest: Digest },
    /// The same digest, with other platform fields.
    OtherPlatform {
        source: SpecEntry,
        dest: Option<Platform>,
    },
}

/// The selected entries of both indexes, and what differs.
#[derive(Debug, Clone, Serialize)]
pub struct SpecComparison {
    #[serde(rename = "srcSpec")]
    pub source: Vec<SpecEntry>,
    #[serde(rename = "dstSpec")]
    pub dest: Vec<SpecEntry>,
    #[serde(skip)]
    pub mismatches: Vec<EntryMismatch>,
}

impl SpecComparison {
    /// Every selected source entry is in the destination index with the same digest and platform fields.
    pub fn matches(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Compares the selected entries of a source index with those of a destination index.
pub fn compare(
    source: &RawManifest,
    dest: &RawManifest,
    selection: &PlatformSelection,
) -> SpecComparison {
    let src: Vec<SpecEntry> = selection
        .entries(source)
        .into_iter()
        .map(SpecEntry::from)
        .collect();
    let dst: Vec<SpecEntry> = selection
        .entries(dest)
        .into_iter()
        .map(SpecEntry::from)
        .collect();
    let mut mismatches = Vec::new();
    for s in &src {
        match dst.iter().find(|d| d.digest == s.digest) {
            Some(d) if same_platform(d.platform.as_ref(), s.platform.as_ref()) => {}
            Some(d) => mismatches.push(EntryMismatch::OtherPlatform {
                source: s.clone(),
                dest: d.platform.clone(),
            }),
            None => match dst
                .iter()
                .find(|d| same_platform(d.platform.as_ref(), s.platform.as_ref()))
            {
                Some(d) => mismatches.push(EntryMismatch::OtherDigest {
                    source: s.clone(),
                    dest: d.digest,
                }),
                None => mismatches.push(EntryMismatch::Missing(s.clone())),
            },
        }
    }
    SpecComparison {
        source: src,
        dest: dst,
        mismatches,
    }
}

/// Platform fields compared as sets where order carries no meaning.
fn same_platform(a: Option<&Platform>, b: Option<&Platform>) -> bool {
    let key = |p: Option<&Platform>| {
        p.map(|p| {
            let mut features = p.os_features.clone();
            features.sort();
            (
                p.os.clone(),
                p.architecture.clone(),
                p.variant.clone().filter(|v| !v.is_empty()),
                p.os_version.clone().filter(|v| !v.is_empty()),
                features,
            )
        })
    };
    key(a) == key(b)
}

/// `linux/arm/v7`, with `os.version` and `os.features` when present; `no platform` for none.
pub fn describe(platform: Option<&Platform>) -> String {
    let Some(p) = platform else {
        return "no platform".to_string();
    };
    let mut s = p.to_string();
    if let Some(v) = p.os_version.as_deref().filter(|v| !v.is_empty()) {
        s.push_str(&format!(" os.version {v}"));
    }
    if !p.os_features.is_empty() {
        s.push_str(&format!(" os.features {}", p.os_features.join(",")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(u8, &str, &str, Option<&str>)]) -> RawManifest {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(n, os, arch, variant)| {
                let mut platform = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": crate::manifest::media_type::OCI_MANIFEST,
                    "digest": Digest::of(&[*n]).to_string(),
                    "size": 10,
                    "platform": platform,
                })
            })
            .collect();
        let json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::manifest::media_type::OCI_INDEX,
            "manifests": manifests,
        });
        RawManifest::parse(serde_json::to_vec(&json).unwrap()).unwrap()
    }

    fn sel(arches: &[&str], oses: &[&str]) -> PlatformSelection {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PlatformSelection::new(&v(arches), &v(oses)).unwrap()
    }

    #[test]
    fn selects_like_hangar() {
        let i = index(&[
            (1, "linux", "amd64", None),
            (2, "linux", "arm64", None),
            (3, "linux", "arm", Some("v7")),
            (4, "windows", "amd64", None),
        ]);
        let picked =
            |s: &PlatformSelection| s.entries(&i).iter().map(|d| d.digest).collect::<Vec<_>>();
        let d = |n: u8| Digest::of(&[n]);
        assert_eq!(picked(&sel(&[], &[])), vec![d(1), d(2), d(3), d(4)]);
        assert_eq!(picked(&sel(&["amd64"], &[])), vec![d(1), d(4)]);
        assert_eq!(picked(&sel(&["amd64"], &["linux"])), vec![d(1)]);
        assert_eq!(picked(&sel(&["arm"], &[])), vec![d(3)]);
        assert_eq!(picked(&sel(&["arm/v6"], &[])), Vec::<Digest>::new());
        assert_eq!(picked(&sel(&["arm/v7", "arm64"], &[])), vec![d(2), d(3)]);
        assert_eq!(picked(&sel(&[], &["windows"])), vec![d(4)]);
        assert!(PlatformSelection::new(&["/v7".into()], &[]).is_err());
        assert_eq!(sel(&["amd64"], &[]).to_string(), "arch amd64, os any");
    }

    #[test]
    fn compares_selected_entries_by_digest_and_platform() {
        let src = index(&[
            (1, "linux", "amd64", None),
            (2, "linux", "arm64", None),
            (3, "linux", "arm", Some("v7")),
        ]);
        // The destination lost arm/v7, has another arm64 image, and labels digest 1 differently.
        let dst = index(&[
            (1, "linux", "amd64", Some("v2")),
            (9, "linux", "arm64", None),
        ]);
        let all = compare(&src, &dst, &sel(&[], &[]));
        assert_eq!(all.source.len(), 3);
        assert_eq!(all.dest.len(), 2);
        assert_eq!(all.mismatches.len(), 3);
        assert!(matches!(
            all.mismatches[0],
            EntryMismatch::OtherPlatform { .. }
        ));
        assert!(
            matches!(&all.mismatches[1], EntryMismatch::OtherDigest { dest, .. } if *dest == Digest::of(&[9]))
        );
        assert!(matches!(all.mismatches[2], EntryMismatch::Missing(_)));

        let good = index(&[(2, "linux", "arm64", None), (1, "linux", "amd64", None)]);
        assert!(compare(&src, &good, &sel(&["amd64", "arm64"], &[])).matches());
        assert!(!compare(&src, &good, &sel(&["arm"], &[])).matches());
        let json = serde_json::to_value(compare(&src, &good, &sel(&["arm64"], &[]))).unwrap();
        assert_eq!(json["srcSpec"][0]["platform"]["architecture"], "arm64");
        assert_eq!(json["dstSpec"][0]["digest"], Digest::of(&[2]).to_string());
    }
}
