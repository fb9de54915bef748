//! JSON request bodies (payments): `strict_json::parse` on arbitrary bytes, and a
//! differential with serde_json: whatever the strict parser accepts, serde_json reads as
//! the same value; whatever serde_json reads and the strict parser refuses names a member
//! twice, names a member serde_json reserves, or nests deeper than the strict limit.
#![no_main]

use fapi_enforcement::strict_json::{self, StrictJsonError};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let strict = strict_json::parse(data);
    let loose = serde_json::from_slice::<Value>(data);
    match (&strict, &loose) {
        (Ok(s), Ok(l)) => assert_eq!(s, l),
        (Ok(s), Err(e)) => panic!("strict accepted what serde_json refuses ({e}): {s}"),
        (Err(StrictJsonError::DuplicateMember(_) | StrictJsonError::ReservedMember(_)), Ok(_)) | (Err(_), Err(_)) => {}
        (Err(StrictJsonError::Syntax(m)), Ok(_)) => {
            assert!(m.contains("nested too deeply"), "strict refused what serde_json reads: {m}")
        }
    }
});
