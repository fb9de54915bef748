//! A [`TokenInfo`] back into an RFC 7662 response, so a cached answer can travel (the
//! fleet's shared cache) and be read again by [`TokenInfo::from_response`].

use serde_json::{json, Map, Value};

use super::TokenInfo;

impl TokenInfo {
    /// The RFC 7662 response this was read from, as far as the gateway decides on it
    /// (`from_response` of it gives the same `TokenInfo`).
    pub fn to_response(&self) -> Value {
        if !self.active {
            return json!({"active": false});
        }
        let mut body = match self.claims.to_value() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        body.insert("active".into(), Value::Bool(true));
        if let Some(exp) = self.exp {
            body.insert("exp".into(), exp.get().into());
        }
        if !self.scopes.is_empty() {
            let scope: Vec<&str> = self.scopes.iter().map(|s| &**s).collect();
            body.insert("scope".into(), scope.join(" ").into());
        }
        if let Some(c) = &self.client_id {
            body.insert("client_id".into(), (**c).into());
        }
        if let Some(s) = &self.subject {
            body.insert("sub".into(), (**s).into());
        }
        if !self.audiences.is_empty() {
            body.insert("aud".into(), self.audiences.iter().map(|a| Value::from(&**a)).collect());
        }
        let mut cnf = Map::new();
        if let Some(t) = &self.certificate_thumbprint {
            cnf.insert("x5t#S256".into(), (**t).into());
        }
        if let Some(t) = &self.dpop_thumbprint {
            cnf.insert("jkt".into(), (**t).into());
        }
        if !cnf.is_empty() {
            body.insert("cnf".into(), Value::Object(cnf));
        }
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_survives_the_round_trip() {
        let original = json!({
            "active": true, "exp": 1_900_000_000u64, "scope": "openid accounts", "client_id": "tpp",
            "sub": "alice", "aud": ["https://bank"], "cnf": {"x5t#S256": "abc", "jkt": "def"},
            "consent": {"id": "c-1", "status": "Authorised", "permissions": ["ReadBalances"]}, "n": 3
        });
        let info = TokenInfo::from_response(original).unwrap();
        let again = TokenInfo::from_response(info.to_response()).unwrap();
        assert_eq!(format!("{info:?}"), format!("{again:?}"));
        let inactive = TokenInfo::from_response(TokenInfo::inactive().to_response()).unwrap();
        assert!(!inactive.active);
    }
}
