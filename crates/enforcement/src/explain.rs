//! `fapi-gateway explain`: how the gateway would decide a request, check by check, for an
//! introspection response given as JSON. How an operator debugs a refusal without
//! reading code.

use serde_json::Value;

use crate::introspection::{unix_now, TokenInfo};
use crate::policy::{Explanation, PolicySet, Presented};

/// What `explain` needs besides the policies.
pub struct Question<'a> {
    /// `METHOD /path?query` as the client sends it to the gateway.
    pub request: &'a str,
    /// The introspection response.
    pub claims: Value,
    /// The connection's certificate thumbprint; `None` assumes the one the token is bound to.
    pub certificate_thumbprint: Option<String>,
    /// The request body as JSON, for routes that compare its consent (`body_consent`).
    pub body: Option<Value>,
}

/// The report, and whether the request would be allowed.
pub fn explain(policies: &PolicySet, q: Question<'_>) -> Result<(String, bool), String> {
    let (method, target) = q.request.trim().split_once(' ').ok_or("the request must look like `GET /path`")?;
    let method: http::Method = method.parse().map_err(|_| format!("`{method}` is not an HTTP method"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut out = format!("{method} {target}\n");
    let token =
        TokenInfo::from_response(q.claims).map_err(|e| format!("the claims are not an introspection response: {e}"))?;
    let matched = match policies.route(&method, path, query) {
        Ok(m) => m,
        Err(refusal) => {
            out.push_str(&format!("route: none\ndecision: refused, {}\n", refusal.summary()));
            return Ok((out, false));
        }
    };
    let route = matched.route;
    out.push_str(&format!(
        "route: API `{}`, {} {} ({}:{}); authorization server `{}`; forwarded to upstream `{}` ({}) as {}\n",
        matched.api.name,
        route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
        route.path,
        route.file.display(),
        route.line,
        matched.api.authorization_server,
        matched.api.upstream.name,
        matched.api.upstream.address,
        matched.upstream_path,
    ));
    let assumed = q.certificate_thumbprint.is_none();
    let thumbprint = q.certificate_thumbprint.or_else(|| token.certificate_thumbprint.as_deref().map(str::to_string));
    if assumed {
        out.push_str("certificate: assumed to be the one the token is bound to (give --certificate to check one)\n");
    }
    let mut explanation = Explanation::default();
    // A DPoP-bound token is assumed to come with a valid proof of its key.
    let presented = Presented {
        certificate_thumbprint: thumbprint.as_deref(),
        body: q.body.as_ref(),
        dpop_thumbprint: token.dpop_thumbprint.as_deref(),
    };
    let result = matched.run_checks(&token, presented, unix_now(), &mut explanation);
    for (check, outcome) in &explanation.checks {
        match outcome {
            Ok(detail) => out.push_str(&format!("  pass  {}: {detail}\n", check.name())),
            Err(refusal) => out.push_str(&format!("  FAIL  {}: {}\n", check.name(), refusal.summary())),
        }
    }
    match result {
        Ok(grant) => {
            out.push_str(&format!(
                "decision: allowed; forwarded with consent {:?}, client {:?}, subject {:?}\n",
                grant.consent_id.unwrap_or_default(),
                grant.client_id.unwrap_or_default(),
                grant.subject.unwrap_or_default()
            ));
            Ok((out, true))
        }
        Err(refusal) => {
            out.push_str(&format!("decision: refused, {}\n", refusal.summary()));
            Ok((out, false))
        }
    }
}
