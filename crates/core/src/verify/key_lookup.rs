//! The key cache's policy as sans-IO state machines: where an issuer's JWK
//! Set (RFC 7517 §5) comes from for one request ([`KeySetLookup`]), and the
//! background refresh of a stale one ([`KeySetRefresh`]).
//!
//! The tiers are isolate memory, then the shared store (Workers KV), then the
//! network: the set's `jwks_uri` is configured or discovered from
//! authorization server metadata (RFC 8414 §3, then OpenID Connect Discovery
//! 1.0 §4, the metadata's `issuer` checked per RFC 8414 §3.3), fetched with
//! redirects (RFC 9110 §15.4) followed only within its origin, and kept as
//! long as its HTTP freshness (RFC 9111 §4.2) allows, clamped to
//! configuration. Past freshness a set is served while it is refreshed
//! (stale-while-revalidate, RFC 5861 §3) and kept when the refresh fails
//! (stale-if-error, RFC 5861 §4) up to a maximum stale age, with exponential
//! backoff between failed attempts.
//!
//! A machine does no I/O and holds no futures: its `step` names the next
//! [`Io`] or finishes, the driver performs the I/O and hands the outcome to
//! `resume`, which runs the machine on to its next need, and so on. Time is
//! the `now` passed in.
//!
//! Invariants, which the isolate's concurrency rests on:
//! - a machine reads and writes the isolate's [`KeyMemory`] only in `step`,
//!   `resume` and `drop` (never in `new`), so the interleaving of the
//!   requests of one isolate is exactly the order in which a driver steps,
//!   resumes and drops their machines;
//! - a machine never leaves a claim stuck: the `fetching` mark a
//!   [`KeySetRefresh`] sets (single flight) is cleared however its fetch
//!   ends, with the outcome recorded, or by `drop` when its request went away
//!   mid-fetch. The unknown-kid claim is a timestamp, which expires with the
//!   cooldown. The `refreshing` claim taken when [`KeySetLookup::refresh_due`]
//!   answers is handed to the caller, whose [`KeySetRefresh`] releases it.

use std::rc::Rc;

use url::Url;

use crate::io::{FetchedDocument, Io, IoAnswer, Poll};
use crate::verify::jwk::KeySet;
use crate::verify::keys::{
    discovery_urls, freshness_lifetime, jwks_uri_from_metadata, CacheSettings, CachedSet,
    KeyDemand, KeyMemory, KeySourceError, StoredSet, TrustedIssuer, BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS, JOIN_POLL_MS, JOIN_WAIT_TIMEOUTS, MAX_REDIRECTS,
};

/// What a key set lookup or refresh finishes with.
pub type KeySetOutcome = Result<Rc<KeySet>, KeySourceError>;

/// Where the shared store keeps an issuer's set.
fn set_key(issuer: &str) -> String {
    format!("jwks:v1:{issuer}")
}

/// Where the shared store keeps an issuer's last unknown-kid refetch attempt.
fn attempt_key(issuer: &str) -> String {
    format!("jwks-refetch:v1:{issuer}")
}

/// The shared store's copy of a set, with the URI it was fetched from; an
/// unreadable copy is a miss (the store is never the source of truth).
fn parse_stored(raw: &str) -> Option<(CachedSet, Option<Url>)> {
    let stored: StoredSet = serde_json::from_str(raw).ok()?;
    let keys = KeySet::parse(stored.jwks.as_bytes()).ok()?;
    let set = CachedSet {
        keys: Rc::new(keys),
        fetched_at: stored.fetched_at,
        fresh_for: stored.fresh_for,
    };
    Some((set, crate::io::parse_url(&stored.jwks_uri)))
}

/// One GET with redirects followed only within the first URL's origin, so a
/// compromised path cannot send the gate to another host's keys, and at most
/// [`MAX_REDIRECTS`] of them.
struct SameOriginGet {
    first: Url,
    current: Url,
    redirects: usize,
}

impl SameOriginGet {
    fn new(url: Url) -> Self {
        SameOriginGet {
            current: url.clone(),
            first: url,
            redirects: 0,
        }
    }

    fn io(&self, settings: &CacheSettings) -> Io {
        Io::Get {
            url: self.current.clone(),
            limits: settings.limits,
        }
    }

    /// Takes the answer to [`Self::io`]: the document or why there is none,
    /// or `None` when a redirect was taken (ask [`Self::io`] again).
    fn answer(&mut self, answer: IoAnswer) -> Option<Result<FetchedDocument, KeySourceError>> {
        let document = match answer.into_fetched() {
            Ok(document) => document,
            Err(error) => return Some(Err(KeySourceError::Fetch(error))),
        };
        match document.status {
            200..=299 => Some(Ok(document)),
            301 | 302 | 303 | 307 | 308 if self.redirects < MAX_REDIRECTS => {
                let next = document
                    .location
                    .as_deref()
                    .and_then(|location| crate::io::join_url(&self.current, location))
                    .filter(|next| next.origin() == self.first.origin());
                match next {
                    Some(next) => {
                        self.current = next;
                        self.redirects += 1;
                        None
                    }
                    None => Some(Err(KeySourceError::Redirect)),
                }
            }
            301 | 302 | 303 | 307 | 308 => Some(Err(KeySourceError::Redirect)),
            status => Some(Err(KeySourceError::Status(status))),
        }
    }
}

/// Fetches an issuer's key set from the network now, honouring backoff; on
/// success the set replaces the held one in isolate memory and in the shared
/// store. Run in the background after a stale set was served
/// ([`KeySetLookup::refresh_due`]), and by a [`KeySetLookup`] that must wait
/// for the network.
///
/// While it fetches, the issuer is marked `fetching` in isolate memory, so
/// the other requests of the isolate wait for its outcome instead of
/// fetching too (single flight). The mark is cleared when the outcome is
/// recorded, or when the machine is dropped mid-fetch: a fetch nobody drives
/// holds nobody up.
pub struct KeySetRefresh {
    memory: Rc<KeyMemory>,
    settings: CacheSettings,
    issuer: TrustedIssuer,
    now: i64,
    /// `None` until the first step.
    stage: Option<Refresh>,
    /// This machine marked the issuer `fetching` and has not recorded its
    /// outcome yet: dropping it must clear the mark.
    in_flight: bool,
}

/// Where a [`KeySetRefresh`] is.
enum Refresh {
    /// Reading the issuer's metadata for its `jwks_uri`: `get` is one
    /// candidate location, `rest` the ones to try if it fails.
    Discovering {
        get: SameOriginGet,
        rest: std::vec::IntoIter<Url>,
    },
    /// Fetching the JWK Set.
    FetchingSet { get: SameOriginGet },
    /// Handing the fetched set to the shared store for the other isolates.
    StoringSet { set: CachedSet, put: Io },
    /// Finished, outcome recorded.
    Done(KeySetOutcome),
}

impl KeySetRefresh {
    /// A refresh of `issuer`'s set at `now`. Touches nothing until stepped.
    pub fn new(
        memory: Rc<KeyMemory>,
        settings: CacheSettings,
        issuer: TrustedIssuer,
        now: i64,
    ) -> Self {
        KeySetRefresh {
            memory,
            settings,
            issuer,
            now,
            stage: None,
            in_flight: false,
        }
    }

    /// The next piece of I/O, or the outcome (then the machine is spent, and
    /// stepping again answers the same).
    pub fn step(&mut self) -> Poll<KeySetOutcome> {
        let stage = match self.stage.take() {
            Some(stage) => stage,
            None => self.begin(),
        };
        let poll = match &stage {
            Refresh::Discovering { get, .. } | Refresh::FetchingSet { get } => {
                Poll::Need(get.io(&self.settings))
            }
            Refresh::StoringSet { put, .. } => Poll::Need(put.clone()),
            Refresh::Done(outcome) => Poll::Ready(outcome.clone()),
        };
        self.stage = Some(stage);
        poll
    }

    /// The answer to the [`Io`] the last step asked for; runs the machine on
    /// to its next need. An answer when none was asked for is ignored.
    pub fn resume(&mut self, answer: IoAnswer) {
        if let Some(stage) = self.stage.take() {
            self.stage = Some(self.advance(stage, answer));
        }
    }

    fn begin(&mut self) -> Refresh {
        let id = self.issuer.issuer.as_str();
        let now = self.now;
        if self.memory.with(id, |state| now < state.retry_after) {
            // Releases the claim of the lookup that asked for this refresh.
            self.memory.with(id, |state| state.refreshing = false);
            return Refresh::Done(Err(KeySourceError::BackingOff));
        }
        self.memory.with(id, |state| state.fetching = true);
        self.in_flight = true;
        let known = self
            .issuer
            .jwks_uri
            .clone()
            .or_else(|| self.memory.with(id, |state| state.jwks_uri.clone()));
        if let Some(uri) = known {
            return Refresh::FetchingSet {
                get: SameOriginGet::new(uri),
            };
        }
        let mut candidates = discovery_urls(id).into_iter();
        match candidates.next() {
            Some(first) => Refresh::Discovering {
                get: SameOriginGet::new(first),
                rest: candidates,
            },
            None => self.finish(Err(KeySourceError::InvalidMetadata)),
        }
    }

    fn advance(&mut self, stage: Refresh, answer: IoAnswer) -> Refresh {
        match stage {
            Refresh::Discovering { mut get, mut rest } => match get.answer(answer) {
                None => Refresh::Discovering { get, rest },
                Some(Ok(document)) => {
                    match jwks_uri_from_metadata(&document.body, &self.issuer.issuer) {
                        Ok(uri) => {
                            self.memory.with(&self.issuer.issuer, |state| {
                                state.jwks_uri = Some(uri.clone());
                            });
                            Refresh::FetchingSet {
                                get: SameOriginGet::new(uri),
                            }
                        }
                        // A metadata document that answers but is unusable
                        // ends discovery: it is the server's word.
                        Err(error) => self.finish(Err(error)),
                    }
                }
                // The last candidate's failure is the one reported.
                Some(Err(error)) => match rest.next() {
                    Some(next) => Refresh::Discovering {
                        get: SameOriginGet::new(next),
                        rest,
                    },
                    None => self.finish(Err(error)),
                },
            },
            Refresh::FetchingSet { mut get } => match get.answer(answer) {
                None => Refresh::FetchingSet { get },
                Some(Ok(document)) => self.keep(&get.first, &document),
                Some(Err(error)) => self.finish(Err(error)),
            },
            // Whatever the driver says of a write, nothing waits on it.
            Refresh::StoringSet { set, .. } => self.finish(Ok(set)),
            done @ Refresh::Done(_) => done,
        }
    }

    /// Parses the fetched document and asks to store it; the outcome is
    /// recorded once the write is handed over.
    fn keep(&mut self, jwks_uri: &Url, document: &FetchedDocument) -> Refresh {
        let keys = match KeySet::parse(&document.body) {
            Ok(keys) => keys,
            Err(error) => return self.finish(Err(KeySourceError::InvalidKeySet(error))),
        };
        let fresh_for = freshness_lifetime(document, &self.settings);
        let set = CachedSet {
            keys: Rc::new(keys),
            fetched_at: self.now,
            fresh_for,
        };
        let stored = StoredSet {
            fetched_at: self.now,
            fresh_for,
            jwks_uri: jwks_uri.to_string(),
            jwks: String::from_utf8_lossy(&document.body).into_owned(),
        };
        match serde_json::to_string(&stored) {
            Ok(value) => {
                // Kept as long as any isolate may use it.
                let ttl = u64::try_from(fresh_for.saturating_add(self.settings.max_stale))
                    .unwrap_or(u64::MAX);
                let put = Io::KvPut {
                    key: set_key(&self.issuer.issuer),
                    value,
                    ttl_seconds: ttl,
                };
                Refresh::StoringSet { set, put }
            }
            Err(_) => self.finish(Ok(set)),
        }
    }

    /// Records the outcome in isolate memory and only then clears the
    /// `fetching` mark, so waiting requests find the outcome when they look.
    fn finish(&mut self, outcome: Result<CachedSet, KeySourceError>) -> Refresh {
        let configured_uri = self.issuer.jwks_uri.is_some();
        let now = self.now;
        self.memory.with(&self.issuer.issuer, |state| {
            state.refreshing = false;
            match &outcome {
                Ok(set) => {
                    state.set = Some(set.clone());
                    state.consecutive_failures = 0;
                    state.retry_after = 0;
                }
                Err(_) => {
                    // A discovered URI may be what failed (the server moved
                    // its keys): the next attempt reads the metadata again.
                    if !configured_uri {
                        state.jwks_uri = None;
                    }
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    let exponent = state.consecutive_failures.saturating_sub(1).min(16);
                    let wait = BACKOFF_BASE_SECONDS
                        .saturating_mul(1 << exponent)
                        .min(BACKOFF_MAX_SECONDS);
                    state.retry_after = now.saturating_add(wait);
                }
            }
            state.fetching = false;
        });
        self.in_flight = false;
        Refresh::Done(outcome.map(|set| set.keys))
    }
}

impl Drop for KeySetRefresh {
    /// A request that went away mid-fetch (its machine dropped) must not hold
    /// up the requests waiting on its fetch, nor block the next background
    /// refresh.
    fn drop(&mut self) {
        if self.in_flight {
            self.memory.with(&self.issuer.issuer, |state| {
                state.fetching = false;
                state.refreshing = false;
            });
        }
    }
}

/// One request's lookup of an issuer's key set: memory, else the shared
/// store, else the network (or another request's fetch of it).
///
/// A request makes at most a [`KeyDemand::Current`] lookup and then, when
/// the token's key is not in that set, a [`KeyDemand::UnknownKid`] lookup of
/// the same issuer, passing the first one's [`Self::fetched`] as the second
/// one's `fetched_here`.
///
/// Dropping the machine mid-fetch clears the isolate's `fetching` mark (its
/// inner [`KeySetRefresh`] does), so a client that went away holds nobody up.
pub struct KeySetLookup {
    memory: Rc<KeyMemory>,
    settings: CacheSettings,
    issuer: TrustedIssuer,
    demand: KeyDemand,
    now: i64,
    /// This request fetched the set (or joined a fetch of it, or adopted one
    /// fetched during it): no set can be fresher, so an unknown kid is not
    /// worth another fetch.
    fetched: bool,
    /// A stale set was served and this lookup took the `refreshing` claim.
    refresh_due: bool,
    /// `None` until the first step.
    stage: Option<Lookup>,
}

/// Where a [`KeySetLookup`] is.
enum Lookup {
    /// Memory could not answer: reading the shared store, where another
    /// isolate may have put a newer set. `held` is memory's set, if any.
    ReadingStore { held: Option<CachedSet> },
    /// Unknown kid: this isolate's refetch claim is taken; asking the shared
    /// store whether another isolate refetched within the cooldown.
    ClaimingRefetch { held: CachedSet },
    /// The refetch is ours: telling the other isolates before fetching.
    SharingClaim { held: CachedSet },
    /// Another request of this isolate is fetching the set: polling for its
    /// outcome, `waited_ms` so far.
    Joining { waited_ms: u64 },
    /// Fetching the set, `need` being the refresh's pending I/O. If it
    /// fails, `fallback` is served while usable (stale-if-error).
    Fetching {
        /// Boxed: the cold path alone pays for its size.
        refresh: Box<KeySetRefresh>,
        fallback: Option<CachedSet>,
        need: Io,
    },
    /// Finished.
    Done(KeySetOutcome),
}

impl KeySetLookup {
    /// A lookup of `issuer`'s set for `demand` at `now`; `fetched_here` says
    /// whether this request already fetched it (the previous lookup's
    /// [`Self::fetched`]). Touches nothing until stepped.
    pub fn new(
        memory: Rc<KeyMemory>,
        settings: CacheSettings,
        issuer: TrustedIssuer,
        demand: KeyDemand,
        now: i64,
        fetched_here: bool,
    ) -> Self {
        KeySetLookup {
            memory,
            settings,
            issuer,
            demand,
            now,
            fetched: fetched_here,
            refresh_due: false,
            stage: None,
        }
    }

    /// The next piece of I/O, or the key set (then the machine is spent, and
    /// stepping again answers the same).
    pub fn step(&mut self) -> Poll<KeySetOutcome> {
        let stage = match self.stage.take() {
            Some(stage) => stage,
            None => self.begin(),
        };
        let id = self.issuer.issuer.as_str();
        let poll = match &stage {
            Lookup::ReadingStore { .. } => Poll::Need(Io::KvGet { key: set_key(id) }),
            Lookup::ClaimingRefetch { .. } => Poll::Need(Io::KvGet {
                key: attempt_key(id),
            }),
            Lookup::SharingClaim { .. } => Poll::Need(Io::KvPut {
                key: attempt_key(id),
                value: self.now.to_string(),
                // Workers KV keeps nothing for less than a minute.
                ttl_seconds: u64::try_from(self.settings.refresh_cooldown)
                    .unwrap_or(60)
                    .max(60),
            }),
            Lookup::Joining { .. } => Poll::Need(Io::Sleep { ms: JOIN_POLL_MS }),
            Lookup::Fetching { need, .. } => Poll::Need(need.clone()),
            Lookup::Done(outcome) => Poll::Ready(outcome.clone()),
        };
        self.stage = Some(stage);
        poll
    }

    /// The answer to the [`Io`] the last step asked for; runs the machine on
    /// to its next need. An answer when none was asked for is ignored.
    pub fn resume(&mut self, answer: IoAnswer) {
        if let Some(stage) = self.stage.take() {
            self.stage = Some(self.advance(stage, answer));
        }
    }

    /// After `Ready`: whether this request fetched the set, joined another
    /// request's fetch of it, or adopted one fetched during it. Pass it to
    /// the request's next lookup of the same issuer.
    pub fn fetched(&self) -> bool {
        self.fetched
    }

    /// After `Ready`: a stale set was served and a background refresh is
    /// due (stale-while-revalidate). The caller runs a [`KeySetRefresh`] for
    /// the issuer after answering; it releases the claim this lookup took,
    /// which keeps the other requests of the isolate from asking for another.
    pub fn refresh_due(&self) -> Option<TrustedIssuer> {
        self.refresh_due.then(|| self.issuer.clone())
    }

    /// Memory answers when its set is fresh or, for an unknown kid, when a
    /// refetch would be wasted (this request fetched, or this isolate
    /// refetched within the cooldown: a storm costs no store reads).
    fn begin(&mut self) -> Lookup {
        let id = self.issuer.issuer.as_str();
        let held = self.memory.with(id, |state| state.set.clone());
        let memory_answers = |set: &CachedSet| match self.demand {
            KeyDemand::Current => set.is_fresh(self.now),
            KeyDemand::UnknownKid => self.fetched || self.refetched_recently_here(),
        };
        match held {
            Some(set) if memory_answers(&set) => Lookup::Done(Ok(set.keys)),
            held => Lookup::ReadingStore { held },
        }
    }

    fn advance(&mut self, stage: Lookup, answer: IoAnswer) -> Lookup {
        match stage {
            Lookup::ReadingStore { held } => {
                let stored = answer.into_kv().as_deref().and_then(parse_stored);
                self.after_store_read(held, stored)
            }
            Lookup::ClaimingRefetch { held } => {
                let shared = answer.into_kv().and_then(|at| at.parse::<i64>().ok());
                self.after_shared_attempt(held, shared)
            }
            Lookup::SharingClaim { held } => self.fetch(Some(held)),
            Lookup::Joining { waited_ms } => {
                self.wait_or_fetch(waited_ms.saturating_add(u64::from(JOIN_POLL_MS)))
            }
            Lookup::Fetching {
                mut refresh,
                fallback,
                ..
            } => {
                refresh.resume(answer);
                self.follow(refresh, fallback)
            }
            done @ Lookup::Done(_) => done,
        }
    }

    fn after_store_read(
        &mut self,
        mut held: Option<CachedSet>,
        stored: Option<(CachedSet, Option<Url>)>,
    ) -> Lookup {
        let id = self.issuer.issuer.as_str();
        // Another isolate may have fetched more recently.
        if let Some((set, uri)) = stored {
            if held
                .as_ref()
                .is_none_or(|held| set.fetched_at > held.fetched_at)
            {
                self.memory.with(id, |state| {
                    state.set = Some(set.clone());
                    // The URI the adopted set came from, unless one is known already.
                    if let Some(uri) = uri {
                        state.jwks_uri.get_or_insert(uri);
                    }
                });
                held = Some(set);
            }
        }
        // While the store was read, another request of this isolate may have
        // fetched the set or adopted a newer one: use it. One fetched from
        // the network during this request is as fresh as a set gets, so it
        // counts as this request's own fetch (an unknown kid does not
        // refetch it).
        let newer_in_memory = self.memory.with(id, |state| {
            state.set.clone().filter(|set| {
                held.as_ref()
                    .is_none_or(|held| set.fetched_at > held.fetched_at)
            })
        });
        if let Some(set) = newer_in_memory {
            if set.fetched_at >= self.now {
                self.fetched = true;
            }
            held = Some(set);
        }
        self.decide(held)
    }

    /// The policy once memory and the store have been consulted.
    fn decide(&mut self, held: Option<CachedSet>) -> Lookup {
        let (now, max_stale) = (self.now, self.settings.max_stale);
        match (held, self.demand) {
            (Some(set), KeyDemand::Current) if set.is_fresh(now) => Lookup::Done(Ok(set.keys)),
            (Some(set), KeyDemand::Current) if set.is_usable(now, max_stale) => {
                // Stale-while-revalidate: answer now, refresh off the request path.
                self.claim_refresh();
                Lookup::Done(Ok(set.keys))
            }
            (Some(set), KeyDemand::UnknownKid) => {
                if self.fetched || !self.claim_refetch_here() {
                    Lookup::Done(Ok(set.keys))
                } else {
                    Lookup::ClaimingRefetch { held: set }
                }
            }
            // Nothing usable held: the request must wait for the network.
            (_, KeyDemand::Current) | (None, KeyDemand::UnknownKid) => self.fetch_or_join(),
        }
    }

    /// One background refresh per isolate at a time, and none while backing
    /// off: the first request to serve the stale set claims it.
    fn claim_refresh(&mut self) {
        let now = self.now;
        self.refresh_due = self.memory.with(&self.issuer.issuer, |state| {
            let due = !state.refreshing && now >= state.retry_after;
            state.refreshing |= due;
            due
        });
    }

    /// Whether this isolate itself refetched for an unknown kid within the
    /// cooldown.
    fn refetched_recently_here(&self) -> bool {
        let local = self
            .memory
            .with(&self.issuer.issuer, |state| state.last_refetch_attempt);
        local.is_some_and(|at| self.now - at < self.settings.refresh_cooldown)
    }

    /// Claims the issuer's unknown-kid refetch in this isolate's memory
    /// unless it refetched within the cooldown. Taken before any I/O, so the
    /// other requests of a storm in this isolate see it at once; the shared
    /// store then settles it with the other isolates.
    fn claim_refetch_here(&mut self) -> bool {
        let (now, cooldown) = (self.now, self.settings.refresh_cooldown);
        self.memory.with(&self.issuer.issuer, |state| {
            let recent = state
                .last_refetch_attempt
                .is_some_and(|at| now - at < cooldown);
            if !recent {
                state.last_refetch_attempt = Some(now);
            }
            !recent
        })
    }

    fn after_shared_attempt(&mut self, held: CachedSet, shared: Option<i64>) -> Lookup {
        let (now, cooldown) = (self.now, self.settings.refresh_cooldown);
        if let Some(at) = shared.filter(|at| now - at < cooldown) {
            // Another isolate refetched: remember its attempt, keep our set.
            self.memory.with(&self.issuer.issuer, |state| {
                state.last_refetch_attempt = Some(at);
            });
            return Lookup::Done(Ok(held.keys));
        }
        Lookup::SharingClaim { held }
    }

    /// The cold path. When another request of this isolate is already
    /// fetching the issuer's set, wait for that fetch and use its outcome,
    /// so a burst of requests reaching a cold isolate (a deployment, a set
    /// past its maximum stale age, a storm of forged tokens) costs one
    /// fetch, not one each.
    fn fetch_or_join(&mut self) -> Lookup {
        if self
            .memory
            .with(&self.issuer.issuer, |state| state.fetching)
        {
            self.wait_or_fetch(0)
        } else {
            self.fetch(None)
        }
    }

    /// Keeps waiting while the other request fetches, up to
    /// [`JOIN_WAIT_TIMEOUTS`] fetch timeouts (discovery and redirects make
    /// one refresh several fetches); then takes its set, or fetches.
    fn wait_or_fetch(&mut self, waited_ms: u64) -> Lookup {
        let patience = u64::from(self.settings.limits.timeout_ms) * JOIN_WAIT_TIMEOUTS;
        let (now, max_stale) = (self.now, self.settings.max_stale);
        let id = self.issuer.issuer.as_str();
        if self.memory.with(id, |state| state.fetching) && waited_ms < patience {
            return Lookup::Joining { waited_ms };
        }
        let joined = self.memory.with(id, |state| {
            state
                .set
                .clone()
                .filter(|set| !state.fetching && set.is_usable(now, max_stale))
        });
        if let Some(set) = joined {
            // As fresh as a set can be: an unknown kid is not worth another fetch.
            self.fetched = true;
            return Lookup::Done(Ok(set.keys));
        }
        // The fetch failed (its backoff now answers) or outlasted our patience.
        self.fetch(None)
    }

    fn fetch(&mut self, fallback: Option<CachedSet>) -> Lookup {
        let refresh = KeySetRefresh::new(
            Rc::clone(&self.memory),
            self.settings,
            self.issuer.clone(),
            self.now,
        );
        self.follow(Box::new(refresh), fallback)
    }

    /// Steps the inner refresh: its need is ours, its outcome settles ours.
    fn follow(&mut self, mut refresh: Box<KeySetRefresh>, fallback: Option<CachedSet>) -> Lookup {
        match refresh.step() {
            Poll::Need(need) => Lookup::Fetching {
                refresh,
                fallback,
                need,
            },
            Poll::Ready(Ok(keys)) => {
                self.fetched = true;
                Lookup::Done(Ok(keys))
            }
            // Stale-if-error: the held set rides out the failure while usable.
            Poll::Ready(Err(error)) => {
                let (now, max_stale) = (self.now, self.settings.max_stale);
                match fallback.filter(|set| set.is_usable(now, max_stale)) {
                    Some(set) => Lookup::Done(Ok(set.keys)),
                    None => Lookup::Done(Err(error)),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "key_lookup_tests.rs"]
mod tests;
