//! Fuzzes bearer credential extraction (RFC 6750 §2.1, §2.2, §2.3, §3.1,
//! crates/core/src/parse/bearer.rs). Input: line 1 the Content-Type, line 2 the query string,
//! each further line one Authorization header value (empty lines 1–2 mean
//! absent). No input may panic; a token it returns is inside the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::parse::bearer::{
    extract_bearer, CredentialCarriers, DEFAULT_MAX_AUTHORIZATION_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let content_type = lines.next().filter(|line| !line.is_empty());
    let query = lines.next().filter(|line| !line.is_empty());
    let authorization: Vec<&str> = lines.collect();
    let carriers = CredentialCarriers {
        authorization: &authorization,
        query,
        content_type,
        max_authorization_bytes: DEFAULT_MAX_AUTHORIZATION_BYTES,
    };
    if let Ok(Some(token)) = extract_bearer(&carriers) {
        assert!(!token.is_empty());
        assert!(authorization.len() == 1 && authorization[0].contains(token));
        assert!(authorization[0].len() <= DEFAULT_MAX_AUTHORIZATION_BYTES);
    }
});
