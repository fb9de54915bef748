//! JSON as the gateway reads it for a decision: a document with a duplicate member name is
//! refused, not resolved.
//!
//! RFC 8259 §4 leaves duplicate names to the parser: serde_json keeps the last, many
//! servers keep the first. A body naming `ConsentId` twice would be checked against one
//! value by the gateway and acted on with the other by the bank, so every JSON document a
//! decision depends on (request bodies, introspection responses, DPoP proofs) goes through
//! [`parse`], which accepts only documents every parser reads the same way.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting accepted (serde_json's own recursion limit is 128).
const MAX_DEPTH: usize = 64;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// Not JSON at all (syntax, trailing bytes, invalid UTF-8, nesting too deep).
    #[error("not JSON: {0}")]
    Syntax(String),
    /// An object names a member twice.
    #[error("duplicate member `{0}`")]
    DuplicateMember(String),
    /// A member name that serde_json (with `arbitrary_precision` or `raw_value`) reads as an
    /// instruction, not a name: a Rust bank would see a number or raw JSON where the
    /// gateway saw an object (found by fuzzing against serde_json).
    #[error("reserved member name `{0}`")]
    ReservedMember(String),
}

/// Member names serde_json reserves for itself.
const RESERVED_PREFIX: &str = "$serde_json::private::";

/// Parses one JSON document, refusing duplicate member names at any depth.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue { depth: 0 }.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

/// The claims of a compact JWS (its second segment), parsed strictly. Call after the
/// signature is verified: the JWT library's own reading keeps the last of duplicate members.
pub fn jws_payload(jws: &str) -> Result<Value, StrictJsonError> {
    use base64::Engine;
    let payload = jws.split('.').nth(1).ok_or_else(|| StrictJsonError::Syntax("not a compact JWS".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| StrictJsonError::Syntax("the payload is not base64url".into()))?;
    parse(&bytes)
}

/// serde_json wraps a visitor's custom error in its own; the duplicate stands out by prefix.
fn classify(e: serde_json::Error) -> StrictJsonError {
    let text = e.to_string();
    let name = |rest: &str| rest.split('`').next().unwrap_or("").to_string();
    if let Some(rest) = text.strip_prefix(DUPLICATE) {
        return StrictJsonError::DuplicateMember(name(rest));
    }
    match text.strip_prefix(RESERVED) {
        Some(rest) => StrictJsonError::ReservedMember(name(rest)),
        None => StrictJsonError::Syntax(text),
    }
}

const DUPLICATE: &str = "duplicate member `";
const RESERVED: &str = "reserved member `";

struct StrictValue {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.deeper::<A::Error>()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue { depth })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.deeper::<A::Error>()?;
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if name.starts_with(RESERVED_PREFIX) {
                return Err(de::Error::custom(format_args!("{RESERVED}{name}`")));
            }
            if members.contains_key(&name) {
                return Err(de::Error::custom(format_args!("{DUPLICATE}{name}`")));
            }
            let value = map.next_value_seed(StrictValue { depth })?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

impl StrictValue {
    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deeply"));
        }
        Ok(self.depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_serde_json_reads() {
        let text = br#"{"Data": {"ConsentId": "c1", "n": [1, -2, 3.5, true, null]}, "e": {}}"#;
        assert_eq!(parse(text).unwrap(), serde_json::from_slice::<Value>(text).unwrap());
        assert_eq!(parse(b" 7 ").unwrap(), json!(7));
    }

    #[test]
    fn refuses_duplicate_members_at_any_depth() {
        for text in [
            r#"{"ConsentId": "a", "ConsentId": "b"}"#,
            r#"{"Data": {"ConsentId": "a", "ConsentId": "b"}}"#,
            r#"[{"x": 1}, {"y": 1, "y": 1}]"#,
            // The same name spelled with an escape is the same name.
            r#"{"ConsentId": "a", "Consent\u0049d": "b"}"#,
        ] {
            assert!(matches!(parse(text.as_bytes()), Err(StrictJsonError::DuplicateMember(_))), "{text}");
        }
        assert_eq!(parse(br#"{"a":1,"a":2}"#), Err(StrictJsonError::DuplicateMember("a".into())));
    }

    #[test]
    fn refuses_serde_jsons_reserved_member_names() {
        for text in [
            r#"{"$serde_json::private::Number": "1e400"}"#,
            r#"{"Data": {"ConsentId": {"$serde_json::private::RawValue": "\"c1\""}}}"#,
        ] {
            assert!(matches!(parse(text.as_bytes()), Err(StrictJsonError::ReservedMember(_))), "{text}");
        }
        assert!(parse(br#"{"$serde_json": 1, "private::Number": 2}"#).is_ok());
    }

    #[test]
    fn refuses_what_is_not_one_document() {
        for text in ["", "{", r#"{"a":1} {"a":2}"#, "[1,]", "\u{feff}{}", "nul"] {
            assert!(matches!(parse(text.as_bytes()), Err(StrictJsonError::Syntax(_))), "{text:?}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
    }
}
