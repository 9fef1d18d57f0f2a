use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::testkit::{jwks_json, NOW};

/// Scripted HTTP: a response per URL, and a log of calls.
#[derive(Default)]
struct FakeHttp {
    routes: RefCell<HashMap<String, Result<FetchedDocument, FetchError>>>,
    calls: RefCell<Vec<String>>,
    /// How many times each fetch yields before it answers, so concurrent
    /// requests can overlap with it.
    yields: Cell<u32>,
}

impl FakeHttp {
    fn serve(&self, url: &str, status: u16, body: &str) {
        self.respond(
            url,
            FetchedDocument {
                status,
                body: body.as_bytes().to_vec(),
                ..Default::default()
            },
        );
    }
    fn respond(&self, url: &str, document: FetchedDocument) {
        self.routes
            .borrow_mut()
            .insert(url.to_owned(), Ok(document));
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
    async fn get(&self, url: &Url, _limits: FetchLimits) -> Result<FetchedDocument, FetchError> {
        self.calls.borrow_mut().push(url.to_string());
        for _ in 0..self.yields.get() {
            YieldOnce(false).await;
        }
        self.routes
            .borrow()
            .get(url.as_str())
            .cloned()
            .unwrap_or(Ok(FetchedDocument {
                status: 404,
                ..Default::default()
            }))
    }
}

#[derive(Default)]
struct FakeKv {
    entries: RefCell<HashMap<String, String>>,
    puts: Cell<usize>,
    /// How many times each read yields after taking its value, as a Workers
    /// KV read answers later with what the store held when it was made.
    read_yields: Cell<u32>,
}

impl KvStore for FakeKv {
    async fn get(&self, key: &str) -> Option<String> {
        let value = self.entries.borrow().get(key).cloned();
        for _ in 0..self.read_yields.get() {
            YieldOnce(false).await;
        }
        value
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

type Cache<'a> = JwksCache<&'a FakeHttp, &'a FakeKv>;

fn cache<'a>(http: &'a FakeHttp, kv: &'a FakeKv) -> Cache<'a> {
    JwksCache::new(
        Rc::new(KeyMemory::default()),
        http,
        kv,
        CacheSettings::default(),
    )
}

fn cache_in<'a>(memory: &Rc<KeyMemory>, http: &'a FakeHttp, kv: &'a FakeKv) -> Cache<'a> {
    JwksCache::new(Rc::clone(memory), http, kv, CacheSettings::default())
}

fn get(cache: &Cache<'_>, demand: KeyDemand, now: i64) -> Result<Rc<KeySet>, KeySourceError> {
    pollster::block_on(cache.key_set(&issuer(Some(JWKS)), demand, now))
}

fn refresh_pending(cache: &Cache<'_>, now: i64) {
    for pending in cache.take_pending_refreshes() {
        let _ = pollster::block_on(cache.refresh(&pending, now));
    }
}

/// One request's pending answer.
type KeyFuture<'a> = Pin<Box<dyn Future<Output = Result<Rc<KeySet>, KeySourceError>> + 'a>>;

/// Drives `futures` concurrently on this thread, polling each in turn, as
/// the Workers runtime interleaves the requests of one isolate.
fn run_together<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>) -> Vec<T> {
    let mut pending: Vec<Option<Pin<Box<dyn Future<Output = T> + 'a>>>> =
        futures.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    pollster::block_on(std::future::poll_fn(|cx| {
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                if let Poll::Ready(value) = future.as_mut().poll(cx) {
                    *result = Some(value);
                    *slot = None;
                }
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    results.into_iter().map(Option::unwrap).collect()
}

#[test]
fn fetches_once_then_serves_from_memory_while_fresh() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    let cache = cache(&http, &kv);
    assert_eq!(
        get(&cache, KeyDemand::Current, NOW).unwrap().keys().len(),
        3
    );
    get(&cache, KeyDemand::Current, NOW + 599).unwrap();
    assert_eq!(http.count(JWKS), 1);
    assert_eq!(kv.puts.get(), 1);
    assert!(cache.take_pending_refreshes().is_empty());
}

#[test]
fn stale_set_is_served_and_refreshed_off_the_request_path() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    let cache = cache(&http, &kv);
    get(&cache, KeyDemand::Current, NOW).unwrap();
    get(&cache, KeyDemand::Current, NOW + 600).unwrap();
    get(&cache, KeyDemand::Current, NOW + 601).unwrap();
    assert_eq!(
        http.count(JWKS),
        1,
        "the request did not wait for the network"
    );
    let pending = cache.take_pending_refreshes();
    assert_eq!(
        pending.len(),
        1,
        "one background refresh, however many requests saw the stale set"
    );
    pollster::block_on(cache.refresh(&pending[0], NOW + 601)).unwrap();
    assert_eq!(http.count(JWKS), 2);
    get(&cache, KeyDemand::Current, NOW + 602).unwrap();
    assert!(cache.take_pending_refreshes().is_empty(), "fresh again");
}

#[test]
fn a_new_isolate_reads_the_shared_store_instead_of_the_network() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    get(&cache(&http, &kv), KeyDemand::Current, NOW).unwrap();
    let keys = get(&cache(&http, &kv), KeyDemand::Current, NOW + 100).unwrap();
    assert_eq!(keys.keys().len(), 3);
    assert_eq!(http.count(JWKS), 1, "second isolate used the store");
}

#[test]
fn unknown_kid_refetches_at_most_once_per_cooldown_across_isolates() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    // One cache per request, as in the worker, over the isolate's memory.
    let request = || cache_in(&isolate, &http, &kv);
    let first = request();
    get(&first, KeyDemand::Current, NOW).unwrap();
    get(&first, KeyDemand::UnknownKid, NOW).unwrap();
    assert_eq!(
        http.count(JWKS),
        1,
        "the request that just fetched does not refetch"
    );
    for offset in 0..30 {
        get(&request(), KeyDemand::UnknownKid, NOW + offset).unwrap();
    }
    assert_eq!(
        http.count(JWKS),
        2,
        "rotation: the first unknown kid refetches at once, then the cooldown holds"
    );
    get(&request(), KeyDemand::UnknownKid, NOW + 100).unwrap();
    assert_eq!(
        http.count(JWKS),
        3,
        "refetched again once the cooldown passed"
    );
    // Other isolates in the storm see the shared attempt and the new set.
    for other in 0..10 {
        let other_isolate = cache(&http, &kv);
        get(&other_isolate, KeyDemand::Current, NOW + 101).unwrap();
        get(&other_isolate, KeyDemand::UnknownKid, NOW + 101 + other).unwrap();
    }
    assert_eq!(http.count(JWKS), 3);
}

#[test]
fn failed_refetch_attempts_are_shared_too() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    get(&cache(&http, &kv), KeyDemand::Current, NOW).unwrap();
    http.fail(JWKS, FetchError::Timeout);
    for isolate in 0..10 {
        let other = cache(&http, &kv);
        assert!(
            get(&other, KeyDemand::UnknownKid, NOW + 100 + isolate).is_ok(),
            "stale set kept"
        );
    }
    assert_eq!(http.count(JWKS), 2, "one attempt, then the shared cooldown");
}

#[test]
fn first_fetch_failure_is_an_error_and_backs_off_exponentially() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.fail(JWKS, FetchError::Network);
    let cache = cache(&http, &kv);
    assert_eq!(
        get(&cache, KeyDemand::Current, NOW).unwrap_err(),
        KeySourceError::Fetch(FetchError::Network)
    );
    assert_eq!(
        get(&cache, KeyDemand::Current, NOW + 4).unwrap_err(),
        KeySourceError::BackingOff
    );
    assert_eq!(
        get(&cache, KeyDemand::Current, NOW + 5).unwrap_err(),
        KeySourceError::Fetch(FetchError::Network)
    );
    assert_eq!(
        get(&cache, KeyDemand::Current, NOW + 14).unwrap_err(),
        KeySourceError::BackingOff,
        "second wait is 10 s"
    );
    assert_eq!(http.count(JWKS), 2);
    http.serve(JWKS, 200, &jwks_json());
    assert!(get(&cache, KeyDemand::Current, NOW + 15).is_ok());
}

#[test]
fn stale_set_survives_an_outage_up_to_the_maximum_stale_age() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    let cache = cache(&http, &kv);
    get(&cache, KeyDemand::Current, NOW).unwrap();
    http.serve(JWKS, 500, "oops");
    let stale_limit = NOW + 600 + 86_400;
    for now in [NOW + 601, NOW + 5000, stale_limit - 1] {
        assert!(get(&cache, KeyDemand::Current, now).is_ok());
        refresh_pending(&cache, now);
    }
    assert_eq!(
        get(&cache, KeyDemand::Current, stale_limit + 400).unwrap_err(),
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
        let (http, kv) = (FakeHttp::default(), FakeKv::default());
        http.serve(JWKS, status, body);
        assert_eq!(
            get(&cache(&http, &kv), KeyDemand::Current, NOW).unwrap_err(),
            expected
        );
    }
}

#[test]
fn redirects_are_followed_only_within_the_origin() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    let redirect = |to: &str| FetchedDocument {
        status: 302,
        location: Some(to.to_owned()),
        ..Default::default()
    };
    http.respond(JWKS, redirect("/keys/v2"));
    http.serve("https://auth.example.com/keys/v2", 200, &jwks_json());
    assert!(get(&cache(&http, &kv), KeyDemand::Current, NOW).is_ok());

    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.respond(JWKS, redirect("https://evil.example/jwks"));
    http.serve("https://evil.example/jwks", 200, &jwks_json());
    assert_eq!(
        get(&cache(&http, &kv), KeyDemand::Current, NOW).unwrap_err(),
        KeySourceError::Redirect
    );
    assert_eq!(http.count("https://evil.example/jwks"), 0);

    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.respond(JWKS, redirect("/jwks"));
    assert_eq!(
        get(&cache(&http, &kv), KeyDemand::Current, NOW).unwrap_err(),
        KeySourceError::Redirect
    );
    assert_eq!(http.count(JWKS), MAX_REDIRECTS + 1);
}

#[test]
fn freshness_follows_cache_control_within_bounds() {
    let settings = CacheSettings::default();
    let doc =
        |cache_control: Option<&str>, expires: Option<&str>, date: Option<&str>| FetchedDocument {
            status: 200,
            cache_control: cache_control.map(str::to_owned),
            expires: expires.map(str::to_owned),
            date: date.map(str::to_owned),
            ..Default::default()
        };
    assert_eq!(freshness_lifetime(&doc(None, None, None), &settings), 600);
    assert_eq!(
        freshness_lifetime(&doc(Some("public, max-age=3600"), None, None), &settings),
        3600
    );
    assert_eq!(
        freshness_lifetime(&doc(Some("max-age=5"), None, None), &settings),
        60,
        "clamped up"
    );
    assert_eq!(
        freshness_lifetime(&doc(Some("max-age=9999999"), None, None), &settings),
        86_400,
        "clamped down"
    );
    assert_eq!(
        freshness_lifetime(&doc(Some("no-cache"), None, None), &settings),
        60
    );
    assert_eq!(
        freshness_lifetime(&doc(Some("max-age=oops"), None, None), &settings),
        600
    );
    let expires = doc(
        None,
        Some("Sun, 06 Nov 1994 10:49:37 GMT"),
        Some("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
    assert_eq!(freshness_lifetime(&expires, &settings), 7200);
    let both = doc(
        Some("max-age=120"),
        Some("Sun, 06 Nov 1994 10:49:37 GMT"),
        Some("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
    assert_eq!(
        freshness_lifetime(&both, &settings),
        120,
        "max-age wins over Expires"
    );
}

#[test]
fn max_age_sets_how_long_the_set_is_fresh() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    let body = jwks_json().into_bytes();
    http.respond(
        JWKS,
        FetchedDocument {
            status: 200,
            body,
            cache_control: Some("max-age=120".into()),
            ..Default::default()
        },
    );
    let cache = cache(&http, &kv);
    get(&cache, KeyDemand::Current, NOW).unwrap();
    get(&cache, KeyDemand::Current, NOW + 119).unwrap();
    assert!(cache.take_pending_refreshes().is_empty());
    get(&cache, KeyDemand::Current, NOW + 120).unwrap();
    assert_eq!(cache.take_pending_refreshes().len(), 1);
}

#[test]
fn parses_imf_fixdate() {
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
    assert_eq!(parse_http_date("garbage"), None);
}

#[test]
fn discovers_jwks_uri_from_rfc8414_metadata_then_openid_configuration() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
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
    let cache = cache(&http, &kv);
    pollster::block_on(cache.key_set(&trusted, KeyDemand::Current, NOW)).unwrap();
    pollster::block_on(cache.refresh(&trusted, NOW + 601)).unwrap();
    assert_eq!(
        http.count("https://auth.example.com/.well-known/oauth-authorization-server/tenant"),
        1,
        "discovered once"
    );
    assert_eq!(http.count("https://keys.example.com/t"), 2);
}

#[test]
fn each_issuer_has_its_own_set() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    http.serve("https://other.example/jwks", 200, r#"{"keys":[]}"#);
    let cache = cache(&http, &kv);
    let other = TrustedIssuer {
        issuer: "https://other.example".into(),
        jwks_uri: Some(Url::parse("https://other.example/jwks").unwrap()),
    };
    assert_eq!(
        get(&cache, KeyDemand::Current, NOW).unwrap().keys().len(),
        3
    );
    assert_eq!(
        pollster::block_on(cache.key_set(&other, KeyDemand::Current, NOW))
            .unwrap()
            .keys()
            .len(),
        0
    );
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

/// Each request asks for the current set at [`NOW`], all interleaved.
fn first_requests_together<'a>(
    requests: &'a [Cache<'a>],
) -> Vec<Result<Rc<KeySet>, KeySourceError>> {
    let trusted = issuer(Some(JWKS));
    let trusted = &trusted;
    run_together(
        requests
            .iter()
            .map(|request| {
                Box::pin(request.key_set(trusted, KeyDemand::Current, NOW)) as KeyFuture<'_>
            })
            .collect(),
    )
}

#[test]
fn concurrent_requests_on_a_cold_isolate_share_one_fetch() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    http.yields.set(5);
    let isolate = Rc::new(KeyMemory::default());
    let requests: Vec<Cache<'_>> = (0..20).map(|_| cache_in(&isolate, &http, &kv)).collect();
    let results = first_requests_together(&requests);
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap().keys().len() == 3));
    assert_eq!(http.count(JWKS), 1, "one fetch for the whole burst");
    // A request that joined the fetch holds the newest set: its unknown kid
    // (a forged token in a cold storm) is not worth another fetch.
    get(&requests[7], KeyDemand::UnknownKid, NOW).unwrap();
    assert_eq!(http.count(JWKS), 1);
}

/// A cold request whose KV read was still out while another request of the
/// isolate fetched the set: when the read comes back empty, the set in
/// memory is used, not fetched again, and counts as this request's own fetch
/// (an unknown kid is not worth another).
#[test]
fn a_set_fetched_while_the_store_was_read_is_not_fetched_again() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    kv.read_yields.set(3);
    let isolate = Rc::new(KeyMemory::default());
    let requests: Vec<Cache<'_>> = (0..2).map(|_| cache_in(&isolate, &http, &kv)).collect();
    let results = first_requests_together(&requests);
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap().keys().len() == 3));
    assert_eq!(http.count(JWKS), 1, "the late reader fetched again");
    get(&requests[1], KeyDemand::UnknownKid, NOW).unwrap();
    assert_eq!(
        http.count(JWKS),
        1,
        "an unknown kid refetched a set fetched during the request"
    );
}

#[test]
fn concurrent_requests_on_a_cold_isolate_share_a_failure() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.fail(JWKS, FetchError::Timeout);
    http.yields.set(5);
    let isolate = Rc::new(KeyMemory::default());
    let requests: Vec<Cache<'_>> = (0..10).map(|_| cache_in(&isolate, &http, &kv)).collect();
    let results = first_requests_together(&requests);
    assert_eq!(
        http.count(JWKS),
        1,
        "the others waited, then met the backoff"
    );
    assert_eq!(
        results[0].as_ref().unwrap_err(),
        &KeySourceError::Fetch(FetchError::Timeout)
    );
    assert!(results[1..]
        .iter()
        .all(|r| r.as_ref().unwrap_err() == &KeySourceError::BackingOff));
}

#[test]
fn a_fetch_whose_request_went_away_does_not_hold_up_the_next() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    http.yields.set(5);
    let isolate = Rc::new(KeyMemory::default());
    let trusted = issuer(Some(JWKS));
    let abandoned = cache_in(&isolate, &http, &kv);
    {
        let mut fetch = Box::pin(abandoned.key_set(&trusted, KeyDemand::Current, NOW));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fetch.as_mut().poll(&mut cx).is_pending());
        assert!(isolate.with(ISSUER, |state| state.fetching));
    }
    assert!(!isolate.with(ISSUER, |state| state.fetching));
    http.yields.set(0);
    let next = cache_in(&isolate, &http, &kv);
    assert_eq!(get(&next, KeyDemand::Current, NOW).unwrap().keys().len(), 3);
    assert_eq!(http.count(JWKS), 2, "the next request fetched at once");
}

#[test]
fn a_set_withdrawing_every_key_replaces_the_held_one() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    http.serve(JWKS, 200, &jwks_json());
    let cache = cache(&http, &kv);
    assert_eq!(
        get(&cache, KeyDemand::Current, NOW).unwrap().keys().len(),
        3
    );
    // A valid set without keys is not an error to ride out: a deliberate
    // withdrawal of every key (a compromise) must take effect.
    http.serve(JWKS, 200, r#"{"keys":[]}"#);
    get(&cache, KeyDemand::Current, NOW + 601).unwrap();
    refresh_pending(&cache, NOW + 601);
    assert!(get(&cache, KeyDemand::Current, NOW + 602)
        .unwrap()
        .keys()
        .is_empty());
}

#[test]
fn a_discovered_jwks_uri_that_fails_is_discovered_again() {
    let (http, kv) = (FakeHttp::default(), FakeKv::default());
    let metadata = "https://auth.example.com/.well-known/oauth-authorization-server";
    let trusted = issuer(None);
    let points_to = |uri: &str| format!(r#"{{"issuer":"{ISSUER}","jwks_uri":"{uri}"}}"#);
    http.serve(
        metadata,
        200,
        &points_to("https://auth.example.com/keys-2024"),
    );
    http.serve("https://auth.example.com/keys-2024", 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let request = || cache_in(&isolate, &http, &kv);
    pollster::block_on(request().key_set(&trusted, KeyDemand::Current, NOW)).unwrap();
    // The server moves its keys and updates its metadata.
    http.serve("https://auth.example.com/keys-2024", 404, "gone");
    http.serve(
        metadata,
        200,
        &points_to("https://auth.example.com/keys-2025"),
    );
    http.serve("https://auth.example.com/keys-2025", 200, &jwks_json());
    let stale = request();
    pollster::block_on(stale.key_set(&trusted, KeyDemand::Current, NOW + 601)).unwrap();
    assert_eq!(
        pollster::block_on(stale.refresh(&trusted, NOW + 601)).unwrap_err(),
        KeySourceError::Status(404)
    );
    // Neither memory nor the shared copy's URI keeps the gate on the old path.
    let later = request();
    pollster::block_on(later.key_set(&trusted, KeyDemand::Current, NOW + 610)).unwrap();
    refresh_pending(&later, NOW + 610);
    assert_eq!(http.count(metadata), 2, "metadata read again");
    assert_eq!(http.count("https://auth.example.com/keys-2025"), 1);
    assert!(get(&later, KeyDemand::Current, NOW + 611).is_ok());
    assert!(later.take_pending_refreshes().is_empty(), "fresh again");
}
