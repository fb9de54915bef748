//! `[dpop]`: how RFC 9449 proofs are checked.

use std::time::Duration;

use super::file::DpopSection;
use crate::diagnostics::Diagnostics;
use crate::dpop::DpopConfig;

pub(super) fn validate(p: &DpopSection, d: &mut Diagnostics) -> DpopConfig {
    let external_url = p.external_url.as_ref().and_then(|u| match u.get_ref().parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {
            Some(u.get_ref().trim_end_matches('/').to_string())
        }
        _ => {
            d.error(Some(u.span()), format!("dpop.external_url `{}` must be an https URL", u.get_ref()));
            None
        }
    });
    DpopConfig {
        max_age: Duration::from_secs(p.max_age_seconds.clamp(1, 3600)),
        external_url,
        require_nonce: p.require_nonce,
        replay_capacity: p.replay_capacity.max(1),
    }
}
