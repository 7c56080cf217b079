//! Harbor's answers as bytes: error bodies, quota messages and sizes, the way Harbor writes them.

use crate::proxy::Reply;

/// `application/json; charset=utf-8`, what Harbor's `SendError` and tag lists send.
pub const JSON: &str = "application/json; charset=utf-8";

/// JSON as Go's `encoding/json` writes it: `<`, `>` and `&` escaped (`src/lib/errors/errors.go`).
pub fn go_json(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// `{"errors":[{"code":…,"message":…}]}` plus the newline of `fmt.Fprintln` (`src/lib/http/error.go`).
pub fn error_body(code: &str, message: &str) -> String {
    let v = serde_json::json!({"errors": [{"code": code, "message": message}]});
    format!("{}\n", go_json(&v))
}

/// An error answer with the status Harbor maps `code` to.
pub fn error(code: &str, message: &str) -> Reply {
    Reply::new(status_of(code)).body(JSON, error_body(code, message))
}

/// `errors.UnauthorizedError(err).WithMessage(err.Error())`: the message said twice.
pub fn unauthorized_twice(message: &str) -> Reply {
    error("UNAUTHORIZED", &format!("{message}: {message}"))
}

/// The status of an error code (`codeMap` in `src/lib/http/error.go`).
fn status_of(code: &str) -> u16 {
    match code {
        "BAD_REQUEST" | "DIGEST_INVALID" | "MANIFEST_INVALID" | "UNSUPPORTED" => 400,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" | "DENIED" => 403,
        "NOT_FOUND" => 404,
        "METHOD_NOT_ALLOWED" => 405,
        "CONFLICT" => 409,
        "PRECONDITION" | "VIOLATE_FOREIGN_KEY_CONSTRAINT" | "PROJECTPOLICYVIOLATION" => 412,
        "TOO_MANY_REQUEST" => 429,
        _ => 500,
    }
}

/// `byteCountToDisplaySize` (`src/pkg/quota/types/format.go`): `512 B`, `1.2 MiB`.
pub fn display_size(bytes: i64) -> String {
    const UNIT: i64 = 1024;
    if bytes < UNIT {
        return format!("{bytes} B");
    }
    let (mut div, mut exp) = (UNIT, 0usize);
    let mut n = bytes / UNIT;
    while n >= UNIT {
        div *= UNIT;
        exp += 1;
        n /= UNIT;
    }
    let unit = "KMGTPE".as_bytes()[exp] as char;
    format!("{:.1} {unit}iB", bytes as f64 / div as f64)
}

/// `ResourceOverflow.Error()` (`src/pkg/quota/errors.go`).
pub fn quota_exceeded(hard: i64, used: i64, new_used: i64) -> String {
    let (op, delta) = if new_used > used {
        ("adding", new_used - used)
    } else {
        ("subtracting", used - new_used)
    };
    format!(
        "{op} {} of storage resource, which when updated to current usage of {} will exceed the configured upper limit of {}.",
        display_size(delta),
        display_size(used),
        display_size(hard)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_harbor() {
        assert_eq!(display_size(0), "0 B");
        assert_eq!(display_size(1023), "1023 B");
        assert_eq!(display_size(1024), "1.0 KiB");
        assert_eq!(display_size(1_258_291), "1.2 MiB");
        assert_eq!(display_size(10 << 20), "10.0 MiB");
        assert_eq!(display_size(3 << 30), "3.0 GiB");
        assert_eq!(
            quota_exceeded(10 << 20, 9_961_472, 9_961_472 + 1_258_291),
            "adding 1.2 MiB of storage resource, which when updated to current usage of 9.5 MiB will exceed the configured upper limit of 10.0 MiB."
        );
        assert_eq!(
            error_body("X", "a<b"),
            "{\"errors\":[{\"code\":\"X\",\"message\":\"a\\u003cb\"}]}\n"
        );
    }
}
