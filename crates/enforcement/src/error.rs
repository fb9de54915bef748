//! Why the enforcement could not be set up: at start and on reload, before any request.
//! (Why a request is refused is a [`Refusal`](crate::refusal::Refusal), not an error.)

use std::path::PathBuf;

/// A failure to set the enforcement up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file named by the configuration could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should: a PEM certificate chain, private key, CA
    /// bundle or CRL.
    #[error("{}: {reason}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS could not be set up with what was given.
    #[error("TLS: {0}")]
    Tls(String),
    /// The process already runs another TLS profile (rustls has one provider per process).
    #[error("this process already runs another TLS profile than `{0}`; one profile per process")]
    TlsProfile(&'static str),
    /// An authorization server's client could not be built (its CA, key or certificate).
    #[error("authorization server `{server}`: {reason}")]
    AuthorizationServer {
        /// The server's name.
        server: String,
        /// What went wrong.
        reason: String,
    },
}

impl StartError {
    /// A problem with the contents of `path`.
    pub fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> StartError {
        StartError::File { path: path.to_path_buf(), reason: reason.to_string() }
    }

    /// `path` could not be read.
    pub fn read(path: &std::path::Path, source: std::io::Error) -> StartError {
        StartError::Read { path: path.to_path_buf(), source }
    }
}
