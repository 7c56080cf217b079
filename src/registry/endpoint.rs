//! The destination given with `-d`: `host[:port]` or a URL, and which schemes may be tried.

use anyhow::bail;

/// Where a registry is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `name[:port]`, as auth files and messages name it.
    pub host: String,
    /// Schemes to try, in order: `https` alone; `http` alone for `http://`; `https` then `http`
    /// with `--tls-verify=false` (skopeo and Hangar behave so).
    pub schemes: Vec<&'static str>,
}

impl Endpoint {
    pub fn parse(destination: &str, tls_verify: bool) -> anyhow::Result<Endpoint> {
        let (scheme, rest) = match destination.split_once("://") {
            Some(("http", rest)) => (Some("http"), rest),
            Some(("https", rest)) => (Some("https"), rest),
            Some((other, _)) => {
                bail!("destination {destination:?}: scheme {other:?} is not http or https")
            }
            None => (None, destination),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() {
            bail!("destination {destination:?} has no host");
        }
        if host.contains('/') {
            bail!(
                "destination {destination:?}: give only the registry host (and port); use --project NAME to put images under a path"
            );
        }
        if host.contains(['@', '?', '#', ' ']) {
            bail!("destination {destination:?} is not host[:port] or a URL");
        }
        let schemes = match (scheme, tls_verify) {
            (Some("http"), _) => vec!["http"],
            (Some(_), true) | (None, true) => vec!["https"],
            (Some(_), false) => vec!["https"],
            (None, false) => vec!["https", "http"],
        };
        Ok(Endpoint {
            host: host.to_string(),
            schemes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_follow_the_flags() {
        let e = Endpoint::parse("harbor.example.com", true).unwrap();
        assert_eq!(
            (e.host.as_str(), e.schemes),
            ("harbor.example.com", vec!["https"])
        );
        let e = Endpoint::parse("http://127.0.0.1:5000/", true).unwrap();
        assert_eq!(
            (e.host.as_str(), e.schemes),
            ("127.0.0.1:5000", vec!["http"])
        );
        assert_eq!(
            Endpoint::parse("reg:5000", false).unwrap().schemes,
            vec!["https", "http"]
        );
        assert_eq!(
            Endpoint::parse("https://reg:5000", false).unwrap().schemes,
            vec!["https"]
        );
        assert!(Endpoint::parse("reg/project", true).is_err());
        assert!(Endpoint::parse("ftp://reg", true).is_err());
        assert!(Endpoint::parse("user:pw@reg", true).is_err());
    }
}
