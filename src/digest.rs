//! Content digests (`sha256:<64 hex>`): parsing, strict link-file reading and hashing.

use std::fmt;
use std::io::{self, Read};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "sha256:";

/// A sha256 content digest, the only algorithm a Distribution storage tree uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a usable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("expected sha256:<64 lowercase hex>, found {found:?}")]
    Malformed { found: String },
    #[error("unsupported digest algorithm in {found:?} (only sha256 is supported)")]
    Algorithm { found: String },
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>` exactly: no whitespace, no uppercase.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some(hex_part) = s.strip_prefix(PREFIX) else {
            return Err(match s.split_once(':') {
                Some((alg, _)) if !alg.is_empty() && !alg.contains(char::is_whitespace) => {
                    DigestError::Algorithm { found: clip(s) }
                }
                _ => DigestError::Malformed { found: clip(s) },
            });
        };
        Digest::from_hex(hex_part).ok_or_else(|| DigestError::Malformed { found: clip(s) })
    }

    /// Parses 64 lowercase hex characters (a blob folder name).
    pub fn from_hex(hex_part: &str) -> Option<Digest> {
        let lower = hex_part.len() == 64
            && hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).ok()?;
        Some(Digest(out))
    }

    /// Parses the content of a storage-tree `link` file: exactly `sha256:<64 hex>`, no newline.
    pub fn from_link(content: &[u8]) -> Result<Digest, DigestError> {
        match std::str::from_utf8(content) {
            Ok(s) => Digest::parse(s),
            Err(_) => Err(DigestError::Malformed {
                found: clip(&String::from_utf8_lossy(content)),
            }),
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest and length of everything `reader` yields.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finish())
    }

    /// The 64 lowercase hex characters.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, as `docker images` shows them.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

/// Incremental sha256 that also counts bytes, for verifying while streaming.
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher {
            inner: Sha256::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn finish(self) -> (Digest, u64) {
        (Digest(self.inner.finalize().into()), self.len)
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_and_round_trips() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap(), d);
        assert_eq!(d.short(), "e3b0c44298fc");
        let (d2, n) = Digest::of_reader(&b"abc"[..]).unwrap();
        assert_eq!((d2, n), (Digest::of(b"abc"), 3));
    }

    #[test]
    fn link_parsing_is_strict() {
        assert!(Digest::from_link(EMPTY.as_bytes()).is_ok());
        for bad in [
            format!("{EMPTY}\n"),
            format!(" {EMPTY}"),
            format!("sha256:{}", EMPTY[7..].to_uppercase()),
            EMPTY.replace("sha256:", "sha256"),
            EMPTY[..70].to_string(),
            String::new(),
        ] {
            assert!(
                matches!(
                    Digest::from_link(bad.as_bytes()),
                    Err(DigestError::Malformed { .. })
                ),
                "{bad:?} must be rejected as malformed"
            );
        }
        let sha512 = format!("sha512:{}", "a".repeat(128));
        assert!(matches!(
            Digest::parse(&sha512),
            Err(DigestError::Algorithm { .. })
        ));
        assert!(Digest::from_link(&[0xff, 0xfe]).is_err());
    }
}
