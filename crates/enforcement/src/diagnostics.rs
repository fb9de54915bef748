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

    /// `relative` resolved against the file's folder; an error at `span` if no such file.
    pub fn existing_file(&mut self, relative: &str, span: Range<usize>, what: &str) -> PathBuf {
        let resolved = self.base.join(relative);
        if !resolved.is_file() {
            self.error(Some(span), format!("{what} file {} does not exist", resolved.display()));
        }
        resolved
    }
}
