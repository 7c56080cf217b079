//! Reads what a registry token grants: the `access` claim in a JWT's payload (no signature
//! check: only the registry that receives the token checks it).

use base64::Engine as _;
use serde::Deserialize;

/// The actions a token grants on `repository`; `None` when the token is not a JWT with claims.
pub fn granted(token: &str, repository: &str) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Access {
        #[serde(rename = "type")]
        kind: String,
        name: String,
        #[serde(default)]
        actions: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Claims {
        #[serde(default)]
        access: Vec<Access>,
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    Some(
        claims
            .access
            .into_iter()
            .filter(|a| a.kind == "repository" && a.name == repository)
            .flat_map(|a| a.actions)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    #[test]
    fn reads_the_access_claim() {
        let t = jwt(
            r#"{"sub":"robot$a+ci","access":[{"type":"repository","name":"a/app","actions":["pull","push"]},{"type":"repository","name":"b/app","actions":[]}]}"#,
        );
        assert_eq!(granted(&t, "a/app").unwrap(), ["pull", "push"]);
        assert!(granted(&t, "b/app").unwrap().is_empty());
        assert!(granted(&t, "c/app").unwrap().is_empty());
        assert_eq!(granted(&jwt(r#"{"sub":"x"}"#), "a/app"), Some(vec![]));
        assert_eq!(granted("opaque-token", "a/app"), None);
        assert_eq!(granted("a.%%%.c", "a/app"), None);
    }
}
