use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::*;
use crate::testkit::{jwks_json, NOW};

/// Scripted HTTP: a response per URL, and a count of calls per URL.
#[derive(Default)]
struct FakeHttp {
    routes: RefCell<HashMap<String, Result<FetchedDocument, FetchError>>>,
    calls: RefCell<Vec<String>>,
}

impl FakeHttp {
    fn serve(&self, url: &str, status: u16, body: &str) {
        self.routes.borrow_mut().insert(
            url.to_owned(),
            Ok(FetchedDocument {
                status,
                body: body.as_bytes().to_vec(),
            }),
        );
    }
    fn fail(&self, url: &str, error: FetchError) {
        self.routes.borrow_mut().insert(url.to_owned(), Err(error));
    }
    fn count(&self, url: &str) -> usize {
        self.calls
            .borrow()
            .iter()
            .filter(|called| called.as_str() == url)
            .count()
    }
}

impl HttpClient for FakeHttp {
    async fn get(&self, url: &Url) -> Result<FetchedDocument, FetchError> {
        self.calls.borrow_mut().push(url.to_string());
        self.routes
            .borrow()
            .get(url.as_str())
            .cloned()
            .unwrap_or(Ok(FetchedDocument {
                status: 404,
                body: Vec::new(),
            }))
    }
}

#[derive(Default)]
struct FakeKv {
    entries: RefCell<HashMap<String, String>>,
    puts: Cell<usize>,
}

impl KvStore for FakeKv {
    async fn get(&self, key: &str) -> Option<String> {
        self.entries.borrow().get(key).cloned()
    }
    async fn put(&self, key: &str, value: &str, _ttl_seconds: u64) {
        self.puts.set(self.puts.get() + 1);
        self.entries
            .borrow_mut()
            .insert(key.to_owned(), value.to_owned());
    }
}

const ISSUER: &str = "https://auth.example.com";
const JWKS: &str = "https://auth.example.com/jwks";

fn issuer(jwks_uri: Option<&str>) -> TrustedIssuer {
    TrustedIssuer {
        issuer: ISSUER.to_owned(),
        jwks_uri: jwks_uri.map(|u| Url::parse(u).unwrap()),
    }
}

fn get(
    cache: &JwksCache<'_, FakeHttp, FakeKv>,
    issuer: &TrustedIssuer,
    demand: KeyDemand,
    now: i64,
) -> Result<Rc<KeySet>, KeySourceError> {
    pollster::block_on(cache.key_set(issuer, demand, now))
}

#[test]
fn fetches_once_then_serves_from_memory_until_stale() {
    let (http, kv, memory) = (FakeHttp::default(), FakeKv::default(), KeyMemory::default());
    http.serve(JWKS, 200, &jwks_json());
    let cache = JwksCache {
        memory: &memory,
        http: &http,
        store: &kv,
        ttl_seconds: 600,
    };
    let trusted = issuer(Some(JWKS));
    assert_eq!(
        get(&cache, &trusted, KeyDemand::Current, NOW)
            .unwrap()
            .keys()
            .len(),
        3
    );
    get(&cache, &trusted, KeyDemand::Current, NOW + 599).unwrap();
    assert_eq!(http.count(JWKS), 1);
    assert_eq!(kv.puts.get(), 1);
    get(&cache, &trusted, KeyDemand::Current, NOW + 600).unwrap();
    assert_eq!(http.count(JWKS), 2);
}

#[test]
fn a_new_isolate_reads_the_shared_store_instead_of_the_network() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    let trusted = issuer(Some(JWKS));
    let first = KeyMemory::default();
    get(
        &JwksCache {
            memory: &first,
            http: &http,
            store: &kv,
            ttl_seconds: 600,
        },
        &trusted,
        KeyDemand::Current,
        NOW,
    )
    .unwrap();
    let second = KeyMemory::default();
    let keys = get(
        &JwksCache {
            memory: &second,
            http: &http,
            store: &kv,
            ttl_seconds: 600,
        },
        &trusted,
        KeyDemand::Current,
        NOW + 100,
    )
    .unwrap();
    assert_eq!(keys.keys().len(), 3);
    assert_eq!(http.count(JWKS), 1, "second isolate used the store");
}

#[test]
fn unknown_kid_refetches_at_most_once_per_cooldown() {
    let (http, kv, memory) = (FakeHttp::default(), FakeKv::default(), KeyMemory::default());
    http.serve(JWKS, 200, &jwks_json());
    let cache = JwksCache {
        memory: &memory,
        http: &http,
        store: &kv,
        ttl_seconds: 600,
    };
    let trusted = issuer(Some(JWKS));
    get(&cache, &trusted, KeyDemand::Current, NOW).unwrap();
    for offset in 0..UNKNOWN_KID_COOLDOWN_SECONDS {
        get(&cache, &trusted, KeyDemand::UnknownKid, NOW + offset).unwrap();
    }
    assert_eq!(
        http.count(JWKS),
        1,
        "within the cooldown the held set answers"
    );
    get(
        &cache,
        &trusted,
        KeyDemand::UnknownKid,
        NOW + UNKNOWN_KID_COOLDOWN_SECONDS,
    )
    .unwrap();
    assert_eq!(http.count(JWKS), 2);
}

#[test]
fn first_fetch_failure_is_an_error_and_backs_off() {
    let (http, kv, memory) = (FakeHttp::default(), FakeKv::default(), KeyMemory::default());
    http.fail(JWKS, FetchError::Network);
    let cache = JwksCache {
        memory: &memory,
        http: &http,
        store: &kv,
        ttl_seconds: 600,
    };
    let trusted = issuer(Some(JWKS));
    assert_eq!(
        get(&cache, &trusted, KeyDemand::Current, NOW).unwrap_err(),
        KeySourceError::Fetch(FetchError::Network)
    );
    assert_eq!(
        get(&cache, &trusted, KeyDemand::Current, NOW + 1).unwrap_err(),
        KeySourceError::BackingOff
    );
    assert_eq!(http.count(JWKS), 1);
    http.serve(JWKS, 200, &jwks_json());
    assert!(get(
        &cache,
        &trusted,
        KeyDemand::Current,
        NOW + FAILURE_BACKOFF_SECONDS
    )
    .is_ok());
}

#[test]
fn stale_set_is_used_while_the_issuer_is_down() {
    let (http, kv, memory) = (FakeHttp::default(), FakeKv::default(), KeyMemory::default());
    http.serve(JWKS, 200, &jwks_json());
    let cache = JwksCache {
        memory: &memory,
        http: &http,
        store: &kv,
        ttl_seconds: 600,
    };
    let trusted = issuer(Some(JWKS));
    get(&cache, &trusted, KeyDemand::Current, NOW).unwrap();
    http.serve(JWKS, 500, "oops");
    assert!(get(&cache, &trusted, KeyDemand::Current, NOW + 601).is_ok());
    assert!(get(
        &cache,
        &trusted,
        KeyDemand::Current,
        NOW + 600 + MAX_STALE_SECONDS - 1
    )
    .is_ok());
    assert_eq!(
        get(
            &cache,
            &trusted,
            KeyDemand::Current,
            NOW + 600 + MAX_STALE_SECONDS + FAILURE_BACKOFF_SECONDS
        )
        .unwrap_err(),
        KeySourceError::Status(500)
    );
}

#[test]
fn invalid_documents_are_errors() {
    for (status, body, expected) in [
        (
            200,
            "not json",
            KeySourceError::InvalidKeySet(JwksError::NotAKeySet),
        ),
        (404, "", KeySourceError::Status(404)),
    ] {
        let (http, kv, memory) = (FakeHttp::default(), FakeKv::default(), KeyMemory::default());
        http.serve(JWKS, status, body);
        let cache = JwksCache {
            memory: &memory,
            http: &http,
            store: &kv,
            ttl_seconds: 600,
        };
        assert_eq!(
            get(&cache, &issuer(Some(JWKS)), KeyDemand::Current, NOW).unwrap_err(),
            expected
        );
    }
}

#[test]
fn discovers_jwks_uri_from_rfc8414_metadata_then_openid_configuration() {
    let (http, kv, memory) = (FakeHttp::default(), FakeKv::default(), KeyMemory::default());
    let issuer_id = "https://auth.example.com/tenant";
    let trusted = TrustedIssuer {
        issuer: issuer_id.to_owned(),
        jwks_uri: None,
    };
    assert_eq!(
        discovery_urls(issuer_id)
            .iter()
            .map(Url::as_str)
            .collect::<Vec<_>>(),
        [
            "https://auth.example.com/.well-known/oauth-authorization-server/tenant",
            "https://auth.example.com/tenant/.well-known/openid-configuration"
        ]
    );
    http.serve(
        "https://auth.example.com/tenant/.well-known/openid-configuration",
        200,
        &format!(r#"{{"issuer":"{issuer_id}","jwks_uri":"https://keys.example.com/t"}}"#),
    );
    http.serve("https://keys.example.com/t", 200, &jwks_json());
    let cache = JwksCache {
        memory: &memory,
        http: &http,
        store: &kv,
        ttl_seconds: 600,
    };
    get(&cache, &trusted, KeyDemand::Current, NOW).unwrap();
    get(&cache, &trusted, KeyDemand::Current, NOW + 601).unwrap();
    assert_eq!(
        http.count("https://auth.example.com/.well-known/oauth-authorization-server/tenant"),
        1,
        "discovered once"
    );
    assert_eq!(http.count("https://keys.example.com/t"), 2);
}

#[test]
fn metadata_for_another_issuer_is_refused() {
    let doc = br#"{"issuer":"https://evil.example","jwks_uri":"https://evil.example/jwks"}"#;
    assert_eq!(
        jwks_uri_from_metadata(doc, ISSUER).unwrap_err(),
        KeySourceError::InvalidMetadata
    );
    let insecure =
        br#"{"issuer":"https://auth.example.com","jwks_uri":"http://auth.example.com/jwks"}"#;
    assert_eq!(
        jwks_uri_from_metadata(insecure, ISSUER).unwrap_err(),
        KeySourceError::InvalidMetadata
    );
    let ok = br#"{"issuer":"https://auth.example.com","jwks_uri":"https://auth.example.com/jwks"}"#;
    assert!(jwks_uri_from_metadata(ok, ISSUER).is_ok());
    let local = br#"{"issuer":"http://127.0.0.1:9000","jwks_uri":"http://127.0.0.1:9000/jwks"}"#;
    assert!(jwks_uri_from_metadata(local, "http://127.0.0.1:9000").is_ok());
    let escape = br#"{"issuer":"http://127.0.0.1:9000","jwks_uri":"http://10.0.0.1/jwks"}"#;
    assert!(jwks_uri_from_metadata(escape, "http://127.0.0.1:9000").is_err());
}
