//! Secrets in the configuration: from a file (`…_file`), from the environment (`${NAME}`
//! in the value), or inline; never a value this project has published.
//!
//! A configuration file is copied, committed and pasted into tickets; the secrets it
//! points to need not be. Known development values are refused wherever they appear, so a
//! copy of an example can never run with a secret anyone can read in this repository.

use std::path::Path;

/// Secrets that were published in this repository's examples: refused by `check` and `run`.
pub const PUBLISHED_SECRETS: [&str; 3] =
    ["dev-admin-secret-change-me", "dev-gateway-secret", "dev-consent-storage-secret"];

/// Reads a secret given inline (`${NAME}` replaced from the environment) or as a file
/// (its contents, without the trailing newline). At most one of the two may be given;
/// `Ok(None)` when neither is.
pub fn resolve(inline: Option<&str>, file: Option<&Path>, what: &str) -> Result<Option<String>, String> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => return Err(format!("give {what} or {what}_file, not both")),
        (Some(text), None) => expand_env(text, what)?,
        (None, Some(path)) => read_secret_file(path).map_err(|e| format!("{what}_file {}: {e}", path.display()))?,
        (None, None) => return Ok(None),
    };
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if PUBLISHED_SECRETS.contains(&value.as_str()) {
        return Err(format!(
            "{what} is a development value published with fapi-gateway: generate your own (e.g. `openssl rand -hex 32 > secret`) and point {what}_file at it"
        ));
    }
    Ok(Some(value))
}

/// Longest secret file read: a secret is a line, not a stream (`/dev/zero` is refused).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// A regular file's contents, without the final newline.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(|e| e.to_string())?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!("longer than {MAX_SECRET_FILE_BYTES} bytes"));
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Replaces every `${NAME}` with the environment variable `NAME` (which must be set).
fn expand_env(text: &str, what: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("{what}: `${{` without a closing `}}`"))?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{what}: `${{{name}}}` is not an environment variable name"));
        }
        let value = std::env::var(name).map_err(|_| format!("{what}: environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_file_and_environment() {
        assert_eq!(resolve(Some("s3cret-value"), None, "x").unwrap().as_deref(), Some("s3cret-value"));
        assert_eq!(resolve(None, None, "x").unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-a-file\n").unwrap();
        assert_eq!(resolve(None, Some(&file), "x").unwrap().as_deref(), Some("from-a-file"));
        assert!(resolve(Some("a"), Some(&file), "x").unwrap_err().contains("not both"));
        assert!(resolve(None, Some(&dir.path().join("missing")), "x").is_err());
        // Not a stream, not a folder.
        assert!(resolve(None, Some(Path::new("/dev/zero")), "x").unwrap_err().contains("not a regular file"));
        assert!(resolve(None, Some(dir.path()), "x").unwrap_err().contains("not a regular file"));
        std::fs::write(&file, "x".repeat(70 * 1024)).unwrap();
        assert!(resolve(None, Some(&file), "x").unwrap_err().contains("longer than"));
        // SAFETY of set_var: tests of this module are the only readers of this variable.
        std::env::set_var("FAPI_GATEWAY_TEST_SECRET", "from-env");
        assert_eq!(resolve(Some("${FAPI_GATEWAY_TEST_SECRET}"), None, "x").unwrap().as_deref(), Some("from-env"));
        assert!(resolve(Some("${FAPI_GATEWAY_UNSET_VARIABLE}"), None, "x").unwrap_err().contains("not set"));
        assert!(resolve(Some("${oops"), None, "x").is_err());
    }

    #[test]
    fn published_values_are_refused_however_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        for known in PUBLISHED_SECRETS {
            assert!(resolve(Some(known), None, "x").unwrap_err().contains("published"));
            std::fs::write(&file, format!("{known}\n")).unwrap();
            assert!(resolve(None, Some(&file), "x").unwrap_err().contains("published"));
        }
        assert!(resolve(Some(""), None, "x").unwrap_err().contains("empty"));
    }
}
