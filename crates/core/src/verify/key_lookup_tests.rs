//! The machines driven by hand: each test plays the driver, so the
//! interleavings are explicit rather than left to an executor.

use super::*;
use crate::io::FetchError;
use crate::testkit::{jwks_json, NOW};
use crate::verify::key_script::{
    current, fetching, issuer, need, read_attempt, read_set, ready, sleep, unknown_kid, Driver,
    ISSUER, JWKS,
};

#[test]
fn three_interleaved_lookups_on_a_cold_isolate_share_one_fetch() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let (mut a, mut b, mut c) = (
        current(&isolate, NOW),
        current(&isolate, NOW),
        current(&isolate, NOW),
    );

    // A finds nothing in memory nor in the store: it goes to the network.
    assert_eq!(need(&mut a), read_set());
    a.resume(IoAnswer::Kv(None));
    let get = need(&mut a);
    assert!(matches!(&get, Io::Get { url, .. } if url.as_str() == JWKS));
    assert_eq!(need(&mut a), get, "stepping again asks for the same");
    assert!(fetching(&isolate));

    // B and C find A fetching: they wait for it instead of fetching.
    for waiter in [&mut b, &mut c] {
        assert_eq!(need(waiter), read_set());
        waiter.resume(IoAnswer::Kv(None));
        assert_eq!(need(waiter), sleep());
    }

    // A's fetch answers; it hands the set to the store, then records it.
    let answer = driver.perform(&get);
    a.resume(answer);
    assert!(matches!(need(&mut a), Io::KvPut { .. }));
    b.resume(IoAnswer::Done);
    assert_eq!(need(&mut b), sleep(), "not recorded yet: B keeps waiting");
    a.resume(IoAnswer::Done);
    assert!(!fetching(&isolate));
    let fetched = ready(&mut a).unwrap();
    assert_eq!(fetched.keys().len(), 3);
    assert!(a.fetched());

    // B and C wake to A's set.
    for waiter in [&mut b, &mut c] {
        waiter.resume(IoAnswer::Done);
        let joined = ready(waiter).unwrap();
        assert!(Rc::ptr_eq(&joined, &fetched), "A's set, not a copy");
        assert!(waiter.fetched(), "joining a fetch counts as fetching");
        assert_eq!(waiter.refresh_due(), None);
    }
    assert_eq!(driver.gets(JWKS), 1, "one fetch for the three");
}

#[test]
fn a_dropped_machine_mid_fetch_does_not_hold_up_the_next_lookup() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let mut gone = current(&isolate, NOW);
    assert_eq!(need(&mut gone), read_set());
    gone.resume(IoAnswer::Kv(None));
    assert!(matches!(need(&mut gone), Io::Get { .. }));
    assert!(fetching(&isolate));
    // The client went away: its machine is dropped with the fetch unanswered.
    drop(gone);
    assert!(!fetching(&isolate));

    let mut next = current(&isolate, NOW);
    assert_eq!(need(&mut next), read_set());
    next.resume(IoAnswer::Kv(None));
    assert!(
        matches!(need(&mut next), Io::Get { .. }),
        "fetches at once, no wait"
    );
    assert_eq!(driver.run(&mut next).unwrap().keys().len(), 3);
}

#[test]
fn a_dropped_lookup_that_was_only_waiting_changes_nothing() {
    let isolate = Rc::new(KeyMemory::default());
    let mut fetcher = current(&isolate, NOW);
    fetcher.step();
    fetcher.resume(IoAnswer::Kv(None));
    let mut waiter = current(&isolate, NOW);
    waiter.step();
    waiter.resume(IoAnswer::Kv(None));
    assert_eq!(need(&mut waiter), sleep());
    drop(waiter);
    assert!(
        fetching(&isolate),
        "the fetch it waited on is still running"
    );
}

#[test]
fn a_joiner_gives_up_after_its_patience_and_fetches_itself() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let mut stuck = current(&isolate, NOW);
    stuck.step();
    stuck.resume(IoAnswer::Kv(None));
    assert!(matches!(need(&mut stuck), Io::Get { .. }));

    let mut waiter = current(&isolate, NOW);
    waiter.step();
    waiter.resume(IoAnswer::Kv(None));
    let mut sleeps = 0_u64;
    while need(&mut waiter) == sleep() {
        sleeps += 1;
        waiter.resume(IoAnswer::Done);
    }
    let settings = CacheSettings::default();
    assert_eq!(
        sleeps,
        u64::from(settings.limits.timeout_ms) * JOIN_WAIT_TIMEOUTS / u64::from(JOIN_POLL_MS)
    );
    assert!(matches!(need(&mut waiter), Io::Get { .. }));
    assert!(driver.run(&mut waiter).is_ok());
}

#[test]
fn a_stale_set_is_served_at_once_then_a_key_set_refresh_fetches() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    driver.run(&mut current(&isolate, NOW)).unwrap();

    // Past freshness: the store is read (another isolate may hold a newer
    // set), then the stale set is served without waiting for the network.
    let mut stale = current(&isolate, NOW + 601);
    assert_eq!(need(&mut stale), read_set());
    let answer = driver.perform(&read_set());
    stale.resume(answer);
    assert_eq!(ready(&mut stale).unwrap().keys().len(), 3);
    assert_eq!(stale.refresh_due(), Some(issuer(Some(JWKS))));
    assert!(!stale.fetched());
    assert_eq!(driver.gets(JWKS), 1);

    // One background refresh per isolate, however many requests saw it stale.
    let mut also_stale = current(&isolate, NOW + 601);
    assert!(driver.run(&mut also_stale).is_ok());
    assert_eq!(also_stale.refresh_due(), None);

    let mut refresh = KeySetRefresh::new(
        Rc::clone(&isolate),
        CacheSettings::default(),
        issuer(Some(JWKS)),
        NOW + 601,
    );
    assert!(matches!(need(&mut refresh), Io::Get { .. }));
    assert!(driver.run(&mut refresh).is_ok());
    assert_eq!(driver.gets(JWKS), 2);

    // Fresh again: memory answers at the first step, with no I/O at all.
    let mut fresh = current(&isolate, NOW + 602);
    assert!(matches!(fresh.step(), Poll::Ready(Ok(_))));
    assert_eq!(fresh.refresh_due(), None);
}

#[test]
fn a_dropped_refresh_releases_the_refresh_claim() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    driver.run(&mut current(&isolate, NOW)).unwrap();
    let mut stale = current(&isolate, NOW + 601);
    driver.run(&mut stale).unwrap();
    let due = stale.refresh_due().unwrap();
    let mut refresh = KeySetRefresh::new(
        Rc::clone(&isolate),
        CacheSettings::default(),
        due,
        NOW + 601,
    );
    assert!(matches!(need(&mut refresh), Io::Get { .. }));
    drop(refresh);
    let mut again = current(&isolate, NOW + 602);
    driver.run(&mut again).unwrap();
    assert!(
        again.refresh_due().is_some(),
        "the next stale hit claims it"
    );
}

#[test]
fn unknown_kid_refetches_at_most_once_per_cooldown() {
    let mut driver = Driver::default();
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let mut first = current(&isolate, NOW);
    driver.run(&mut first).unwrap();
    assert!(first.fetched());

    // The same request's unknown kid: its set cannot be fresher.
    let mut same_request = unknown_kid(&isolate, NOW, first.fetched());
    assert!(matches!(same_request.step(), Poll::Ready(Ok(_))));

    // A storm: the first unknown kid claims the refetch in memory before any
    // I/O, so the next one, interleaved, does not even read the store.
    let mut claimer = unknown_kid(&isolate, NOW + 1, false);
    assert_eq!(need(&mut claimer), read_set());
    let answer = driver.perform(&read_set());
    claimer.resume(answer);
    assert_eq!(need(&mut claimer), read_attempt());
    let mut storm = unknown_kid(&isolate, NOW + 1, false);
    assert!(matches!(storm.step(), Poll::Ready(Ok(_))));
    driver.run(&mut claimer).unwrap();
    assert!(claimer.fetched());
    assert_eq!(driver.gets(JWKS), 2, "rotation: refetched at once");
    assert_eq!(
        driver.kv.get(&format!("jwks-refetch:v1:{ISSUER}")),
        Some(&(NOW + 1).to_string()),
        "the attempt is shared"
    );

    // Another isolate adopts the stored set and sees the shared attempt.
    let elsewhere = Rc::new(KeyMemory::default());
    let mut adopted = current(&elsewhere, NOW + 2);
    driver.run(&mut adopted).unwrap();
    assert!(!adopted.fetched(), "adopted from the store, not fetched");
    let mut other_storm = unknown_kid(&elsewhere, NOW + 2, adopted.fetched());
    driver.run(&mut other_storm).unwrap();
    assert!(!other_storm.fetched());
    assert_eq!(driver.gets(JWKS), 2);

    // The cooldown passed: refetched again.
    driver
        .run(&mut unknown_kid(&isolate, NOW + 31, false))
        .unwrap();
    assert_eq!(driver.gets(JWKS), 3);
}

#[test]
fn a_confused_driver_fails_closed() {
    let isolate = Rc::new(KeyMemory::default());
    let mut lookup = current(&isolate, NOW);
    let jwks = FetchedDocument {
        status: 200,
        body: jwks_json().into_bytes(),
        ..Default::default()
    };
    // An answer before any question is ignored.
    lookup.resume(IoAnswer::Fetched(Ok(jwks.clone())));
    assert_eq!(need(&mut lookup), read_set());
    // A fetch outcome for a store read is a miss, however good it looks.
    lookup.resume(IoAnswer::Fetched(Ok(jwks)));
    assert!(matches!(need(&mut lookup), Io::Get { .. }));
    // A store value for a fetch is a network failure.
    lookup.resume(IoAnswer::Kv(Some(jwks_json())));
    assert_eq!(
        ready(&mut lookup).unwrap_err(),
        KeySourceError::Fetch(FetchError::Network)
    );
    assert!(!fetching(&isolate));
    lookup.resume(IoAnswer::Done);
    assert_eq!(
        ready(&mut lookup).unwrap_err(),
        KeySourceError::Fetch(FetchError::Network),
        "spent: answers the same"
    );

    // The failure counts: the next lookup meets the backoff.
    let mut next = current(&isolate, NOW + 1);
    next.step();
    next.resume(IoAnswer::Done);
    assert_eq!(ready(&mut next).unwrap_err(), KeySourceError::BackingOff);

    // A refresh told "done" for a fetch fails the same way.
    let mut refresh = KeySetRefresh::new(
        Rc::clone(&isolate),
        CacheSettings::default(),
        issuer(Some(JWKS)),
        NOW + 5,
    );
    assert!(matches!(need(&mut refresh), Io::Get { .. }));
    refresh.resume(IoAnswer::Done);
    assert_eq!(
        ready(&mut refresh).unwrap_err(),
        KeySourceError::Fetch(FetchError::Network)
    );
    assert!(!fetching(&isolate));
}

#[test]
fn a_cold_discovering_lookup_asks_in_policy_order() {
    let mut driver = Driver::default();
    let metadata = |url: &str| format!(r#"{{"issuer":"{ISSUER}","jwks_uri":"{url}"}}"#);
    driver.serve(
        "https://auth.example.com/.well-known/openid-configuration",
        200,
        &metadata(JWKS),
    );
    driver.serve(JWKS, 200, &jwks_json());
    let isolate = Rc::new(KeyMemory::default());
    let mut lookup = KeySetLookup::new(
        Rc::clone(&isolate),
        CacheSettings::default(),
        issuer(None),
        KeyDemand::Current,
        NOW,
        false,
    );
    assert_eq!(driver.run(&mut lookup).unwrap().keys().len(), 3);
    let asked: Vec<String> = driver
        .log
        .iter()
        .map(|io| match io {
            Io::Get { url, .. } => format!("GET {url}"),
            Io::KvGet { key } => format!("KV GET {key}"),
            Io::KvPut { key, .. } => format!("KV PUT {key}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        asked,
        [
            format!("KV GET jwks:v1:{ISSUER}"),
            // RFC 8414 first, then OpenID Connect Discovery.
            "GET https://auth.example.com/.well-known/oauth-authorization-server".to_owned(),
            "GET https://auth.example.com/.well-known/openid-configuration".to_owned(),
            format!("GET {JWKS}"),
            format!("KV PUT jwks:v1:{ISSUER}"),
        ]
    );
    let stored = driver.kv.get(&format!("jwks:v1:{ISSUER}")).unwrap();
    let (set, uri) = parse_stored(stored).unwrap();
    assert_eq!((set.fetched_at, set.fresh_for), (NOW, 600));
    assert_eq!(uri.unwrap().as_str(), JWKS, "the discovered URI is stored");
}
