//! Where a consent sits in an introspection response.
//!
//! Authorization servers of different open-finance specs put the consent id, status,
//! permissions and granted accounts under different names (see the profiles below).
//! A [`ClaimPath`] addresses one of them: dot-separated member names, where a segment
//! ending in `[]` walks every element of an array, e.g. `fdx_consent.resources[].id`.

pub use crate::introspection::claims::{Claim, Node};

/// A parsed claim address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    segments: Vec<Segment>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    name: String,
    each: bool,
}

impl ClaimPath {
    /// Parses `a.b[].c`; an empty or malformed segment is an error.
    pub fn parse(text: &str) -> Result<ClaimPath, String> {
        if text.is_empty() {
            return Err("claim path is empty".into());
        }
        let segments = text
            .split('.')
            .map(|part| {
                let (name, each) = match part.strip_suffix("[]") {
                    Some(n) => (n, true),
                    None => (part, false),
                };
                if name.is_empty() || name.contains(['[', ']']) {
                    Err(format!("claim path `{text}` has an empty or malformed segment `{part}`"))
                } else {
                    Ok(Segment { name: name.to_string(), each })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClaimPath { segments, text: text.to_string() })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The top-level member the path starts at.
    pub fn first(&self) -> &str {
        &self.segments[0].name
    }

    /// Every value found at this path (arrays at the end are flattened).
    pub fn values<'a, N: Node>(&self, root: &'a N) -> Vec<&'a N> {
        // A final array (e.g. `Permissions`) counts as its elements.
        self.ends(root)
            .into_iter()
            .flat_map(|v| match v.items() {
                Some(items) => items.iter().collect::<Vec<_>>(),
                None => vec![v],
            })
            .collect()
    }

    /// The values at the end of the path, final arrays not flattened.
    fn ends<'a, N: Node>(&self, root: &'a N) -> Vec<&'a N> {
        let mut current = vec![root];
        for seg in &self.segments {
            let mut next = Vec::new();
            for v in current {
                if let Some(child) = v.member(&seg.name) {
                    if seg.each {
                        if let Some(items) = child.items() {
                            next.extend(items.iter());
                        }
                    } else {
                        next.push(child);
                    }
                }
            }
            current = next;
        }
        current
    }

    /// The single string at this path, if there is exactly one.
    pub fn string<'a, N: Node>(&self, root: &'a N) -> Option<&'a str> {
        // The common case, one plain member, without collecting.
        if let [Segment { name, each: false }] = self.segments.as_slice() {
            return root.member(name).and_then(Node::text);
        }
        match self.values(root).as_slice() {
            [one] => one.text(),
            _ => None,
        }
    }

    /// Whether `wanted` is among the strings at this path (as `strings` lists them).
    pub fn contains<N: Node>(&self, root: &N, wanted: &str) -> bool {
        self.any_string(root, |s| s == wanted)
    }

    /// The strings at this path. A string standing alone is a space-separated list (as
    /// `scope` is); a string in an array (a final array, or reached through `name[]`) is one
    /// value: an account granted as `["GB29 NWBK 6016"]` is that account, not three.
    pub fn strings<N: Node>(&self, root: &N) -> Vec<String> {
        let mut out = Vec::new();
        self.any_string(root, |s| {
            out.push(s.to_string());
            false
        });
        out
    }

    /// Calls `f` on each string at this path, as `strings` lists them, until it returns true.
    fn any_string<N: Node>(&self, root: &N, mut f: impl FnMut(&str) -> bool) -> bool {
        let mut one = |v: &N, alone: bool| match v.text() {
            Some(s) if alone => s.split_whitespace().any(&mut f),
            Some(s) => f(s),
            None => false,
        };
        // The common case, one plain member, without collecting.
        if let [Segment { name, each: false }] = self.segments.as_slice() {
            return match root.member(name) {
                Some(v) => match v.items() {
                    Some(items) => items.iter().any(|i| one(i, false)),
                    None => one(v, true),
                },
                None => false,
            };
        }
        let walked = self.segments.iter().any(|s| s.each);
        self.ends(root).into_iter().any(|v| match v.items() {
            Some(items) => items.iter().any(|i| one(i, false)),
            None => one(v, !walked),
        })
    }
}

/// Where one spec's authorization server puts the consent, and which status grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// Where the consent id is (UK `ConsentId`).
    pub consent_id: ClaimPath,
    /// The consent's kind (`account-access-consent`, `domestic-payment-consent`, …), which
    /// routes with `consent_types` check; `None` where the spec has one kind of consent.
    pub consent_type: Option<ClaimPath>,
    /// `None` where the spec has no status claim (CDR): presence of the consent suffices.
    pub status: Option<ClaimPath>,
    /// Statuses that grant access (UK `Authorised`), unless a route names its own.
    pub granting_status: Vec<String>,
    /// `None` where permissions are expressed as scopes (CDR, FDX, generic).
    pub permissions: Option<ClaimPath>,
    /// Where the ids of the accounts the consent grants are; `None` where the server's
    /// responses carry none (routes then cannot check an account in the path).
    pub accounts: Option<ClaimPath>,
    /// RFC 3339 date-time (UK `ExpirationDateTime`) or seconds since the epoch.
    pub expiration: Option<ClaimPath>,
}

impl ClaimMapping {
    /// Which consent elements are read, and where, for `check`: `consent id `ConsentId`;
    /// status `Status` in [Authorised]; expiry not checked; …`.
    pub fn describe(&self) -> String {
        let at = |what: &str, p: &Option<ClaimPath>| match p {
            Some(p) => format!("{what} `{}`", p.as_str()),
            None => format!("{what} not checked"),
        };
        let status = match &self.status {
            Some(p) => format!("status `{}` in [{}]", p.as_str(), self.granting_status.join(", ")),
            None => "status not checked".into(),
        };
        let permissions = match &self.permissions {
            Some(p) => format!("permissions `{}`", p.as_str()),
            None => "permissions as scopes".into(),
        };
        format!(
            "consent id `{}`; {}; {status}; {}; {}; {permissions}",
            self.consent_id.as_str(),
            at("kind", &self.consent_type),
            at("expiry", &self.expiration),
            at("accounts", &self.accounts),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_array_paths() {
        let claims = json!({"fdx_consent": {"id": "c1", "resources": [{"id": "A1"}, {"id": "A2"}]}});
        let path = ClaimPath::parse("fdx_consent.resources[].id").unwrap();
        assert_eq!(path.strings(&claims), vec!["A1", "A2"]);
        assert_eq!(ClaimPath::parse("fdx_consent.id").unwrap().string(&claims), Some("c1"));
    }

    #[test]
    fn final_arrays_and_scope_strings_flatten() {
        let claims = json!({"Permissions": ["ReadBalances", "ReadAccountsBasic"], "scope": "openid accounts"});
        assert_eq!(
            ClaimPath::parse("Permissions").unwrap().strings(&claims),
            vec!["ReadBalances", "ReadAccountsBasic"]
        );
        assert_eq!(ClaimPath::parse("scope").unwrap().strings(&claims), vec!["openid", "accounts"]);
        assert_eq!(ClaimPath::parse("missing").unwrap().string(&claims), None);
    }

    #[test]
    fn compact_claims_read_as_the_json_does() {
        let json = json!({"b": [1, {"id": "x"}], "a": "s", "fdx_consent": {"resources": [{"id": "A1"}, {"id": "A2"}]}, "n": 7});
        let claim = Claim::from(&json);
        assert_eq!(claim.to_value(), json);
        for path in ["a", "b[].id", "fdx_consent.resources[].id", "n", "missing"] {
            let p = ClaimPath::parse(path).unwrap();
            assert_eq!(p.strings(&claim), p.strings(&json), "{path}");
            assert_eq!(p.string(&claim), p.string(&json), "{path}");
        }
        assert_eq!(claim.member("n").and_then(Node::number), Some(7));
    }

    #[test]
    fn malformed_paths_are_refused() {
        assert!(ClaimPath::parse("").is_err());
        assert!(ClaimPath::parse("a..b").is_err());
        assert!(ClaimPath::parse("a[0].b").is_err());
    }

    #[test]
    fn a_string_in_an_array_is_one_value() {
        // Found by tests/properties.rs: an account granted as `["A 1"]` read as accounts
        // `A` and `1` (a consent for the IBAN `GB29 NWBK 6016` granted `GB29`, `NWBK`, ...).
        let claims = json!({
            "AccountIDs": ["GB29 NWBK 6016", "A2"], "scope": "openid accounts",
            "fdx_consent": {"resources": [{"id": "A 1"}]}
        });
        let accounts = ClaimPath::parse("AccountIDs").unwrap();
        assert_eq!(accounts.strings(&claims), vec!["GB29 NWBK 6016", "A2"]);
        assert!(accounts.contains(&claims, "GB29 NWBK 6016"));
        assert!(!accounts.contains(&claims, "GB29"));
        let walked = ClaimPath::parse("fdx_consent.resources[].id").unwrap();
        assert_eq!(walked.strings(&claims), vec!["A 1"]);
        assert!(!walked.contains(&claims, "A"));
        // A string standing alone is still a space-separated list.
        let scope = ClaimPath::parse("scope").unwrap();
        assert!(scope.contains(&claims, "accounts"));
        assert!(!scope.contains(&claims, "openid accounts"));
        let claim = Claim::from(&claims);
        for p in [&accounts, &walked, &scope] {
            assert_eq!(p.strings(&claim), p.strings(&claims));
        }
    }
}
