//! `[logging]`: the log format and filter.

use serde::Deserialize;

use super::file::LoggingSection;
use crate::diagnostics::Diagnostics;

/// How logs are written (`logging.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The validated `[logging]`.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// How lines are written.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `fapi_gateway=debug,warn`); `RUST_LOG` wins when set.
    pub level: String,
}

pub(super) fn validate(l: &LoggingSection, d: &mut Diagnostics) -> LoggingConfig {
    if tracing_subscriber::EnvFilter::try_new(l.level.get_ref()).is_err() {
        d.error(Some(l.level.span()), format!("logging.level `{}` is not a valid filter", l.level.get_ref()));
    }
    LoggingConfig { format: l.format, level: l.level.get_ref().clone() }
}
