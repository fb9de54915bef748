//! Problems found in configuration and policy files, each with its file and line, so
//! `fapi-gateway check` lists them all at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a configuration or policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    /// What is wrong, for the operator.
    pub message: String,
}

impl ConfigError {
    /// A problem in `file`, at `line` when known.
    pub fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), line, message: message.into() }
    }

    /// A problem at a byte span of `source`.
    pub fn at(file: &Path, source: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let line = span.map(|s| line_of(source, s.start));
        Self::new(file, line, message)
    }

    /// Turns a TOML parse or schema error into a located problem.
    pub fn from_toml(file: &Path, source: &str, err: &toml::de::Error) -> Self {
        Self::at(file, source, err.span(), err.message().trim().to_string())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found; loading reports all of them, not just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// 1-based line number of a byte offset.
pub fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Deserializes a TOML file, reporting every unknown key rather than only the first: each
/// one is blanked out (its line; a whole table for an unknown table) and parsing resumes.
/// Any other error ends the parse, since what follows it would be guesswork.
pub fn from_toml_all<T: serde::de::DeserializeOwned>(file: &Path, source: &str) -> Result<T, Vec<ConfigError>> {
    let mut text = source.as_bytes().to_vec();
    let mut errors: Vec<ConfigError> = Vec::new();
    for _ in 0..100 {
        let current = String::from_utf8_lossy(&text).into_owned();
        let err = match toml::from_str::<T>(&current) {
            Ok(v) if errors.is_empty() => return Ok(v),
            Ok(_) => return Err(errors),
            Err(e) => e,
        };
        let problem = ConfigError::from_toml(file, source, &err);
        let again = errors.contains(&problem);
        if !again {
            errors.push(problem);
        }
        match err.span() {
            Some(span) if !again && err.message().starts_with("unknown field") => blank_entry(&mut text, span),
            _ => return Err(errors),
        }
    }
    Err(errors)
}

/// Replaces the lines of the entry at `span` with spaces (offsets and line numbers kept);
/// a table header takes its table's lines with it.
fn blank_entry(text: &mut [u8], span: Range<usize>) {
    let start = text[..span.start.min(text.len())].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line_end = |from: usize| text[from..].iter().position(|&b| b == b'\n').map_or(text.len(), |i| from + i);
    let mut end = line_end(span.end.min(text.len()));
    if text[start..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        // A table: up to the next table header.
        while end < text.len() {
            let next = end + 1;
            let first = text[next..].iter().find(|&&b| b != b' ' && b != b'\t');
            if first == Some(&b'[') {
                break;
            }
            end = line_end(next);
        }
    }
    for b in &mut text[start..end] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
}

/// Collects the problems of one file as it is validated: errors (the file is refused)
/// and warnings (`check` prints them), each located by a byte span of the source.
pub struct Diagnostics<'a> {
    /// The file, as named in messages.
    pub path: &'a Path,
    source: &'a str,
    /// Relative paths in the file resolve against this folder.
    pub base: PathBuf,
    /// Problems that refuse the file.
    pub errors: Vec<ConfigError>,
    /// Problems worth an operator's look.
    pub warnings: Vec<ConfigError>,
}

impl<'a> Diagnostics<'a> {
    /// A collector for `source`, read from `path`.
    pub fn new(path: &'a Path, source: &'a str) -> Diagnostics<'a> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Diagnostics { path, source, base, errors: Vec::new(), warnings: Vec::new() }
    }

    /// An error at `span` (`None`: the file as a whole).
    pub fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.errors.push(ConfigError::at(self.path, self.source, span, message));
    }

    /// A warning at `span` (`None`: the file as a whole).
    pub fn warn(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.warnings.push(ConfigError::at(self.path, self.source, span, message));
    }

    /// Where a key is written, for a problem with a value the file format does not locate
    /// (`["cache", "capacity"]`, `["authorization_servers", "gobank", "timeout_ms"]`): the
    /// key's line, else its table's header, else `None` (the key is absent: a default).
    pub fn key(&self, path: &[&str]) -> Option<Range<usize>> {
        let (key, table) = path.split_last()?;
        let mut offset = 0;
        let mut in_table = table.is_empty();
        let mut header = None;
        for line in self.source.split_inclusive('\n') {
            let trimmed = line.trim();
            if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.split(']').next()) {
                let name: Vec<String> =
                    name.trim_matches('[').split('.').map(|p| p.trim().trim_matches('"').to_string()).collect();
                in_table = name.iter().map(String::as_str).eq(table.iter().copied());
                if in_table {
                    header = Some(offset..offset + line.trim_end().len());
                }
            } else if in_table {
                let written = trimmed.split('=').next().unwrap_or("").trim().trim_matches('"');
                if trimmed.contains('=') && written == *key {
                    return Some(offset..offset + line.trim_end().len());
                }
            }
            offset += line.len();
        }
        header
    }

    /// `relative` resolved against the file's folder; an error at `span` if no such file.
    pub fn existing_file(&mut self, relative: &str, span: Range<usize>, what: &str) -> PathBuf {
        let resolved = self.base.join(relative);
        if !resolved.is_file() {
            self.error(Some(span), format!("{what} file {} does not exist", resolved.display()));
        }
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        a: Inner,
        b: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: Option<u32>,
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_line() {
        let source = "[a]\nx = 1\ncolour = 2\n[wrong]\ny = 3\nz = 4\n[b]\nsize = 5\n";
        let errors = from_toml_all::<Doc>(Path::new("f.toml"), source).unwrap_err();
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("f.toml:3: unknown field `colour`"), "{lines:?}");
        assert!(lines[1].starts_with("f.toml:4: unknown field `wrong`"), "{lines:?}");
        assert!(lines[2].starts_with("f.toml:8: unknown field `size`"), "{lines:?}");
        // Another kind of error ends the parse, after the unknown keys before it.
        let source = "[a]\ncolour = 2\nx = \"text\"\n";
        let errors = from_toml_all::<Doc>(Path::new("f.toml"), source).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[1].line, Some(3));
        assert!(from_toml_all::<Doc>(Path::new("f.toml"), "[a]\nx = 1\n").is_ok());
    }

    #[test]
    fn keys_are_found_in_their_tables() {
        let source = "top = 1\n[cache]\ncapacity = 0\n[authorization_servers.\"as-1\"]\ntimeout_ms = 0\n[server]\n";
        let d = Diagnostics::new(Path::new("g.toml"), source);
        let line = |path: &[&str]| d.key(path).map(|s| line_of(source, s.start));
        assert_eq!(line(&["top"]), Some(1));
        assert_eq!(line(&["cache", "capacity"]), Some(3));
        assert_eq!(line(&["authorization_servers", "as-1", "timeout_ms"]), Some(5));
        assert_eq!(line(&["server", "threads"]), Some(6), "an absent key: its table");
        assert_eq!(line(&["limits", "x"]), None);
    }
}
