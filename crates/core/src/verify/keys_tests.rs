//! The key cache's policy, run through its sans-IO machines
//! ([`KeySetLookup`], [`KeySetRefresh`]) by the scripted driver of
//! `key_script.rs`, and the helpers the policy rests on (freshness, HTTP
//! dates, discovery metadata). Each request makes its lookups as the flow
//! machine makes them (a new machine per lookup over the isolate's
//! [`KeyMemory`], the previous lookup's `fetched()` passed to an unknown-kid
//! one, the background refresh run after the answer when `refresh_due()`
//! says so). Where requests overlap, the test steps their machines itself,
//! in the order the interleaving it checks needs.

use super::*;
use crate::io::{Io, IoAnswer};
use crate::testkit::{jwks_json, NOW};
use crate::verify::key_script::{
    current, fetching, issuer, lookup_at, lookup_of, need, read_set, ready, refresh_of, sleep,
    unknown_kid, Driver, ISSUER, JWKS,
};

/// One lookup of [`ISSUER`]'s set at [`JWKS`] by a request that has fetched
/// nothing yet, run to its end.
fn get(driver: &mut Driver, memory: &Rc<KeyMemory>, demand: KeyDemand, now: i64) -> KeySetOutcome {
    driver.run(&mut lookup_at(memory, demand, now, false))
}

/// Runs `lookup` to its end; answers its outcome and the spent machine,
/// which still tells `fetched()` and `refresh_due()`.
fn request(driver: &mut Driver, mut lookup: KeySetLookup) -> (KeySetOutcome, KeySetLookup) {
    let outcome = driver.run(&mut lookup);
    (outcome, lookup)
}

/// The background refresh `served` called for by serving a stale set, if
/// any, run to its end after the request's answer.
fn refresh_pending(driver: &mut Driver, memory: &Rc<KeyMemory>, served: &KeySetLookup, now: i64) {
    if let Some(due) = served.refresh_due() {
        let _ = driver.run(&mut refresh_of(memory, &due, now));
    }
}

#[test]
fn fetches_once_then_serves_from_memory_while_fresh() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let (keys, first) = request(&mut driver, current(&isolate, NOW));
    assert_eq!(keys.unwrap().keys().len(), 3);
    let (keys, again) = request(&mut driver, current(&isolate, NOW + 599));
    keys.unwrap();
    assert_eq!(driver.gets(JWKS), 1);
    assert_eq!(driver.puts(), 1);
    assert_eq!((first.refresh_due(), again.refresh_due()), (None, None));
}

#[test]
fn stale_set_is_served_and_refreshed_off_the_request_path() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let mut pending = Vec::new();
    for now in [NOW, NOW + 600, NOW + 601] {
        let (keys, served) = request(&mut driver, current(&isolate, now));
        keys.unwrap();
        pending.extend(served.refresh_due());
    }
    assert_eq!(
        driver.gets(JWKS),
        1,
        "the request did not wait for the network"
    );
    assert_eq!(
        pending.len(),
        1,
        "one background refresh, however many requests saw the stale set"
    );
    driver
        .run(&mut refresh_of(&isolate, &pending[0], NOW + 601))
        .unwrap();
    assert_eq!(driver.gets(JWKS), 2);
    let (keys, fresh) = request(&mut driver, current(&isolate, NOW + 602));
    keys.unwrap();
    assert_eq!(fresh.refresh_due(), None, "fresh again");
}

#[test]
fn a_new_isolate_reads_the_shared_store_instead_of_the_network() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    get(&mut driver, &Rc::default(), KeyDemand::Current, NOW).unwrap();
    let keys = get(&mut driver, &Rc::default(), KeyDemand::Current, NOW + 100).unwrap();
    assert_eq!(keys.keys().len(), 3);
    assert_eq!(driver.gets(JWKS), 1, "second isolate used the store");
}

#[test]
fn unknown_kid_refetches_at_most_once_per_cooldown_across_isolates() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    // One request: its unknown-kid lookup is told what its first one fetched.
    let (keys, first) = request(&mut driver, current(&isolate, NOW));
    keys.unwrap();
    driver
        .run(&mut unknown_kid(&isolate, NOW, first.fetched()))
        .unwrap();
    assert_eq!(
        driver.gets(JWKS),
        1,
        "the request that just fetched does not refetch"
    );
    // Then one request per token, each over the isolate's memory.
    for offset in 0..30 {
        driver
            .run(&mut unknown_kid(&isolate, NOW + offset, false))
            .unwrap();
    }
    assert_eq!(
        driver.gets(JWKS),
        2,
        "rotation: the first unknown kid refetches at once, then the cooldown holds"
    );
    driver
        .run(&mut unknown_kid(&isolate, NOW + 100, false))
        .unwrap();
    assert_eq!(
        driver.gets(JWKS),
        3,
        "refetched again once the cooldown passed"
    );
    // Other isolates in the storm see the shared attempt and the new set.
    for other in 0..10 {
        let other_isolate = Rc::new(KeyMemory::default());
        let (keys, adopted) = request(&mut driver, current(&other_isolate, NOW + 101));
        keys.unwrap();
        driver
            .run(&mut unknown_kid(
                &other_isolate,
                NOW + 101 + other,
                adopted.fetched(),
            ))
            .unwrap();
    }
    assert_eq!(driver.gets(JWKS), 3);
}

#[test]
fn failed_refetch_attempts_are_shared_too() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    get(&mut driver, &Rc::default(), KeyDemand::Current, NOW).unwrap();
    driver.fail(JWKS, FetchError::Timeout);
    for isolate in 0..10 {
        let other = Rc::new(KeyMemory::default());
        assert!(
            get(
                &mut driver,
                &other,
                KeyDemand::UnknownKid,
                NOW + 100 + isolate
            )
            .is_ok(),
            "stale set kept"
        );
    }
    assert_eq!(
        driver.gets(JWKS),
        2,
        "one attempt, then the shared cooldown"
    );
}

#[test]
fn first_fetch_failure_is_an_error_and_backs_off_exponentially() {
    let mut driver = Driver::default();
    driver.fail(JWKS, FetchError::Network);
    let isolate = Rc::new(KeyMemory::default());
    let get = |driver: &mut Driver, now| get(driver, &isolate, KeyDemand::Current, now);
    assert_eq!(
        get(&mut driver, NOW).unwrap_err(),
        KeySourceError::Fetch(FetchError::Network)
    );
    assert_eq!(
        get(&mut driver, NOW + 4).unwrap_err(),
        KeySourceError::BackingOff
    );
    assert_eq!(
        get(&mut driver, NOW + 5).unwrap_err(),
        KeySourceError::Fetch(FetchError::Network)
    );
    assert_eq!(
        get(&mut driver, NOW + 14).unwrap_err(),
        KeySourceError::BackingOff,
        "second wait is 10 s"
    );
    assert_eq!(driver.gets(JWKS), 2);
    driver.serve(JWKS, 200, &jwks_json());
    assert!(get(&mut driver, NOW + 15).is_ok());
}

#[test]
fn stale_set_survives_an_outage_up_to_the_maximum_stale_age() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    get(&mut driver, &isolate, KeyDemand::Current, NOW).unwrap();
    driver.serve(JWKS, 500, "oops");
    let stale_limit = NOW + 600 + 86_400;
    for now in [NOW + 601, NOW + 5000, stale_limit - 1] {
        let (keys, served) = request(&mut driver, current(&isolate, now));
        assert!(keys.is_ok());
        refresh_pending(&mut driver, &isolate, &served, now);
    }
    assert_eq!(
        get(&mut driver, &isolate, KeyDemand::Current, stale_limit + 400).unwrap_err(),
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
        let mut driver = Driver::default();
        driver.serve(JWKS, status, body);
        assert_eq!(
            get(&mut driver, &Rc::default(), KeyDemand::Current, NOW).unwrap_err(),
            expected
        );
    }
}

#[test]
fn redirects_are_followed_only_within_the_origin() {
    let redirect = |to: &str| FetchedDocument {
        status: 302,
        location: Some(to.to_owned()),
        ..Default::default()
    };
    let mut driver = Driver::default();
    driver.respond(JWKS, redirect("/keys/v2"));
    driver.serve("https://auth.example.com/keys/v2", 200, &jwks_json());
    assert!(get(&mut driver, &Rc::default(), KeyDemand::Current, NOW).is_ok());

    let mut driver = Driver::default();
    driver.respond(JWKS, redirect("https://evil.example/jwks"));
    driver.serve("https://evil.example/jwks", 200, &jwks_json());
    assert_eq!(
        get(&mut driver, &Rc::default(), KeyDemand::Current, NOW).unwrap_err(),
        KeySourceError::Redirect
    );
    assert_eq!(driver.gets("https://evil.example/jwks"), 0);

    let mut driver = Driver::default();
    driver.respond(JWKS, redirect("/jwks"));
    assert_eq!(
        get(&mut driver, &Rc::default(), KeyDemand::Current, NOW).unwrap_err(),
        KeySourceError::Redirect
    );
    assert_eq!(driver.gets(JWKS), MAX_REDIRECTS + 1);
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
    let mut driver = Driver::default();
    driver.respond(
        JWKS,
        FetchedDocument {
            status: 200,
            body: jwks_json().into_bytes(),
            cache_control: Some("max-age=120".into()),
            ..Default::default()
        },
    );
    let isolate = Rc::new(KeyMemory::default());
    let (keys, first) = request(&mut driver, current(&isolate, NOW));
    keys.unwrap();
    let (keys, fresh) = request(&mut driver, current(&isolate, NOW + 119));
    keys.unwrap();
    assert_eq!((first.refresh_due(), fresh.refresh_due()), (None, None));
    let (keys, stale) = request(&mut driver, current(&isolate, NOW + 120));
    keys.unwrap();
    assert_eq!(stale.refresh_due(), Some(issuer(Some(JWKS))));
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
    let mut driver = Driver::default();
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
    driver.serve(
        "https://auth.example.com/tenant/.well-known/openid-configuration",
        200,
        &format!(r#"{{"issuer":"{issuer_id}","jwks_uri":"https://keys.example.com/t"}}"#),
    );
    driver.serve("https://keys.example.com/t", 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    driver
        .run(&mut lookup_of(
            &isolate,
            &trusted,
            KeyDemand::Current,
            NOW,
            false,
        ))
        .unwrap();
    driver
        .run(&mut refresh_of(&isolate, &trusted, NOW + 601))
        .unwrap();
    assert_eq!(
        driver.gets("https://auth.example.com/.well-known/oauth-authorization-server/tenant"),
        1,
        "discovered once"
    );
    assert_eq!(driver.gets("https://keys.example.com/t"), 2);
}

#[test]
fn each_issuer_has_its_own_set() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    driver.serve("https://other.example/jwks", 200, r#"{"keys":[]}"#);
    let isolate = Rc::new(KeyMemory::default());
    let other = TrustedIssuer {
        issuer: "https://other.example".into(),
        jwks_uri: Some(Url::parse("https://other.example/jwks").unwrap()),
    };
    assert_eq!(
        get(&mut driver, &isolate, KeyDemand::Current, NOW)
            .unwrap()
            .keys()
            .len(),
        3
    );
    assert_eq!(
        driver
            .run(&mut lookup_of(
                &isolate,
                &other,
                KeyDemand::Current,
                NOW,
                false
            ))
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

/// A burst of `n` requests reaching a cold isolate together, each asking for
/// the current set at [`NOW`], interleaved as the isolate interleaves them:
/// 1. the first reads the store, misses, and sends its fetch out;
/// 2. while that fetch is out, every other one reads the store, misses,
///    finds the fetch under way and waits; each wait ends before the fetch
///    does, and each waits again;
/// 3. the fetch answers, and the first request records its outcome (storing
///    the set, if there is one);
/// 4. the others wake, and must finish with no I/O of their own.
///
/// Answers each request's outcome, with its spent lookup, in order.
fn cold_burst(
    driver: &mut Driver,
    isolate: &Rc<KeyMemory>,
    n: usize,
) -> Vec<(KeySetOutcome, KeySetLookup)> {
    let mut requests: Vec<KeySetLookup> = (0..n).map(|_| current(isolate, NOW)).collect();
    let (first, others) = requests.split_first_mut().unwrap();
    // 1.
    assert_eq!(need(first), read_set());
    let answer = driver.perform(&read_set());
    first.resume(answer);
    let fetch = need(first);
    assert!(matches!(&fetch, Io::Get { url, .. } if url.as_str() == JWKS));
    assert!(fetching(isolate));
    // 2.
    for waiter in others.iter_mut() {
        assert_eq!(need(waiter), read_set());
        let answer = driver.perform(&read_set());
        waiter.resume(answer);
        assert_eq!(need(waiter), sleep(), "joins the fetch under way");
    }
    for waiter in others.iter_mut() {
        let answer = driver.perform(&sleep());
        waiter.resume(answer);
        assert_eq!(need(waiter), sleep(), "the fetch is still out");
    }
    // 3.
    let answer = driver.perform(&fetch);
    first.resume(answer);
    driver.run(first).ok();
    assert!(!fetching(isolate));
    // 4.
    for waiter in others.iter_mut() {
        let answer = driver.perform(&sleep());
        waiter.resume(answer);
    }
    requests
        .into_iter()
        .map(|mut request| (ready(&mut request), request))
        .collect()
}

#[test]
fn concurrent_requests_on_a_cold_isolate_share_one_fetch() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let results = cold_burst(&mut driver, &isolate, 20);
    assert!(results
        .iter()
        .all(|(r, _)| r.as_ref().unwrap().keys().len() == 3));
    assert_eq!(driver.gets(JWKS), 1, "one fetch for the whole burst");
    // A request that joined the fetch holds the newest set: its unknown kid
    // (a forged token in a cold storm) is not worth another fetch.
    driver
        .run(&mut unknown_kid(&isolate, NOW, results[7].1.fetched()))
        .unwrap();
    assert_eq!(driver.gets(JWKS), 1);
}

/// A cold request whose KV read was still out while another request of the
/// isolate fetched the set: when the read comes back empty, the set in
/// memory is used, not fetched again, and counts as this request's own fetch
/// (an unknown kid is not worth another).
#[test]
fn a_set_fetched_while_the_store_was_read_is_not_fetched_again() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let (mut early, mut late) = (current(&isolate, NOW), current(&isolate, NOW));
    // Both read the empty store; the late one's answer is held back...
    assert_eq!(need(&mut early), read_set());
    assert_eq!(need(&mut late), read_set());
    let early_read = driver.perform(&read_set());
    let late_read = driver.perform(&read_set());
    assert!(matches!(late_read, IoAnswer::Kv(None)));
    // ...while the early one fetches and records the set...
    early.resume(early_read);
    assert_eq!(driver.run(&mut early).unwrap().keys().len(), 3);
    // ...then the late read comes back empty: no further I/O.
    late.resume(late_read);
    assert_eq!(ready(&mut late).unwrap().keys().len(), 3);
    assert_eq!(driver.gets(JWKS), 1, "the late reader fetched again");
    driver
        .run(&mut unknown_kid(&isolate, NOW, late.fetched()))
        .unwrap();
    assert_eq!(
        driver.gets(JWKS),
        1,
        "an unknown kid refetched a set fetched during the request"
    );
}

#[test]
fn concurrent_requests_on_a_cold_isolate_share_a_failure() {
    let mut driver = Driver::default();
    driver.fail(JWKS, FetchError::Timeout);
    let isolate = Rc::new(KeyMemory::default());
    let results = cold_burst(&mut driver, &isolate, 10);
    assert_eq!(
        driver.gets(JWKS),
        1,
        "the others waited, then met the backoff"
    );
    assert_eq!(
        results[0].0.as_ref().unwrap_err(),
        &KeySourceError::Fetch(FetchError::Timeout)
    );
    assert!(results[1..]
        .iter()
        .all(|(r, _)| r.as_ref().unwrap_err() == &KeySourceError::BackingOff));
}

#[test]
fn a_fetch_whose_request_went_away_does_not_hold_up_the_next() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let mut abandoned = current(&isolate, NOW);
    assert_eq!(need(&mut abandoned), read_set());
    let answer = driver.perform(&read_set());
    abandoned.resume(answer);
    // The fetch goes out...
    let fetch = need(&mut abandoned);
    let _never_handed_back = driver.perform(&fetch);
    assert!(fetching(&isolate));
    // ...and its request goes away before the answer is handed back.
    drop(abandoned);
    assert!(!fetching(&isolate));
    let keys = get(&mut driver, &isolate, KeyDemand::Current, NOW).unwrap();
    assert_eq!(keys.keys().len(), 3);
    assert_eq!(driver.gets(JWKS), 2, "the next request fetched at once");
    assert!(!driver.log.contains(&sleep()), "nobody waited");
}

#[test]
fn a_set_withdrawing_every_key_replaces_the_held_one() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    assert_eq!(
        get(&mut driver, &isolate, KeyDemand::Current, NOW)
            .unwrap()
            .keys()
            .len(),
        3
    );
    // A valid set without keys is not an error to ride out: a deliberate
    // withdrawal of every key (a compromise) must take effect.
    driver.serve(JWKS, 200, r#"{"keys":[]}"#);
    let (keys, stale) = request(&mut driver, current(&isolate, NOW + 601));
    keys.unwrap();
    refresh_pending(&mut driver, &isolate, &stale, NOW + 601);
    assert!(get(&mut driver, &isolate, KeyDemand::Current, NOW + 602)
        .unwrap()
        .keys()
        .is_empty());
}

#[test]
fn a_discovered_jwks_uri_that_fails_is_discovered_again() {
    let mut driver = Driver::default();
    let metadata = "https://auth.example.com/.well-known/oauth-authorization-server";
    let trusted = issuer(None);
    let points_to = |uri: &str| format!(r#"{{"issuer":"{ISSUER}","jwks_uri":"{uri}"}}"#);
    driver.serve(
        metadata,
        200,
        &points_to("https://auth.example.com/keys-2024"),
    );
    driver.serve("https://auth.example.com/keys-2024", 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let discovering = |now| lookup_of(&isolate, &trusted, KeyDemand::Current, now, false);
    driver.run(&mut discovering(NOW)).unwrap();
    // The server moves its keys and updates its metadata.
    driver.serve("https://auth.example.com/keys-2024", 404, "gone");
    driver.serve(
        metadata,
        200,
        &points_to("https://auth.example.com/keys-2025"),
    );
    driver.serve("https://auth.example.com/keys-2025", 200, &jwks_json());
    // A request is served the stale set, then refreshes it from the old path.
    driver.run(&mut discovering(NOW + 601)).unwrap();
    assert_eq!(
        driver
            .run(&mut refresh_of(&isolate, &trusted, NOW + 601))
            .unwrap_err(),
        KeySourceError::Status(404)
    );
    // Neither memory nor the shared copy's URI keeps the gate on the old path.
    let (keys, later) = request(&mut driver, discovering(NOW + 610));
    keys.unwrap();
    refresh_pending(&mut driver, &isolate, &later, NOW + 610);
    assert_eq!(driver.gets(metadata), 2, "metadata read again");
    assert_eq!(driver.gets("https://auth.example.com/keys-2025"), 1);
    let (keys, fresh) = request(&mut driver, current(&isolate, NOW + 611));
    assert!(keys.is_ok());
    assert_eq!(fresh.refresh_due(), None, "fresh again");
}

/// What `issuer_and` replaced: serde's derive of each metadata struct.
#[derive(serde::Deserialize, Debug)]
struct JwksMetadata {
    issuer: String,
    jwks_uri: String,
}

#[derive(serde::Deserialize, Debug)]
struct IntrospectionMetadata {
    issuer: String,
    introspection_endpoint: String,
}

#[test]
fn metadata_members_are_read_as_the_derived_structs_read_them() {
    let documents = [
        r#"{"issuer": "i", "jwks_uri": "j"}"#,
        r#"{"jwks_uri": "j", "issuer": "i", "other": [1, {"x": null}]}"#,
        r#"{"issuer": "i", "introspection_endpoint": "e", "jwks_uri": "j"}"#,
        r#"{"iss\u0075er": "i", "jwks_uri": "j\n"}"#,
        r#"{"issuer": "i"}"#,
        r#"{"jwks_uri": "j"}"#,
        r#"{"issuer": "i", "jwks_uri": 5}"#,
        r#"{"issuer": null, "jwks_uri": "j"}"#,
        r#"{"issuer": "i", "jwks_uri": "j", "issuer": "k"}"#,
        r#"{"issuer": "i", "jwks_uri": "j", "jwks_uri": "k"}"#,
        r#"{"issuer": "i", "jwks_uri": "j", "x": 1, "x": 2}"#,
        r#"{"issuer": "i", "jwks_uri": "j"} "#,
        r#"{"issuer": "i", "jwks_uri": "j"} x"#,
        r#"{"issuer": "i", "jwks_uri": "j",}"#,
        r#"{"issuer": "i", "jwks_uri": "j", "x": }"#,
        r#"["i", "j"]"#,
        r#"["i", "j", "k"]"#,
        r#"["i"]"#,
        r#"["i", 5]"#,
        r#"[]"#,
        r#"["i", "j",]"#,
        r#""i""#,
        "null",
        "5",
        "",
        "{",
        "{}",
        "\u{feff}{}",
    ];
    for document in documents {
        let bytes = document.as_bytes();
        let jwks = serde_json::from_slice::<JwksMetadata>(bytes)
            .ok()
            .map(|m| (m.issuer, m.jwks_uri));
        assert_eq!(issuer_and(bytes, "jwks_uri"), jwks, "{document}");
        let introspection = serde_json::from_slice::<IntrospectionMetadata>(bytes)
            .ok()
            .map(|m| (m.issuer, m.introspection_endpoint));
        assert_eq!(
            issuer_and(bytes, "introspection_endpoint"),
            introspection,
            "{document}"
        );
    }
    // Not UTF-8 inside a string, or outside one.
    for bytes in [
        &b"{\"issuer\": \"\xff\", \"jwks_uri\": \"j\"}"[..],
        &b"{\"issuer\": \"i\", \"jwks_uri\": \"j\"}\xff"[..],
        &b"{\"x\": \"\xff\", \"issuer\": \"i\", \"jwks_uri\": \"j\"}"[..],
    ] {
        let jwks = serde_json::from_slice::<JwksMetadata>(bytes)
            .ok()
            .map(|m| (m.issuer, m.jwks_uri));
        assert_eq!(issuer_and(bytes, "jwks_uri"), jwks, "{bytes:?}");
    }
}
