//! Where verification keys come from: the issuer's JWK Set (RFC 7517 §5),
//! found at the configured `jwks_uri` or through authorization server
//! metadata discovery (RFC 8414 §3, falling back to OpenID Connect Discovery
//! 1.0 §4), cached in isolate memory in front of a shared key-value store in
//! front of the network, with HTTP freshness (RFC 9111 §4.2) bounded by
//! configuration.
//!
//! The policy is written for the two failures edge gates are known for:
//! - key rotation: a token signed with a key the cache has not seen triggers
//!   one refetch, rate-limited per issuer across isolates (the shared store
//!   carries the last attempt), so a storm of forged `kid`s cannot hammer
//!   the authorization server;
//! - a slow or down authorization server: a stale set is served while it is
//!   refreshed in the background (stale-while-revalidate) and kept when the
//!   refresh fails (stale-if-error), up to a maximum stale age, with
//!   exponential backoff between failed attempts.
//!
//! The cache is pure over small ports ([`HttpClient`], [`KvStore`] and the
//! `now` argument), so the Workers runtime supplies only I/O and the policy
//! is tested natively.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use url::Url;

pub use crate::io::{FetchError, FetchLimits, FetchedDocument};
use crate::verify::jwk::{JwksError, KeySet};

/// One trusted authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// The issuer identifier `iss` must equal (RFC 8414 §2).
    pub issuer: String,
    /// The configured JWKS URL, or `None` to discover it (RFC 8414 §3).
    pub jwks_uri: Option<Url>,
}

/// Whether `url` points at this machine (local development only).
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Bounds and lifetimes of the key cache; see the README for each knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Freshness when the JWKS response says nothing (`JWKS_CACHE_TTL_SECONDS`).
    pub default_ttl: i64,
    /// Least freshness, whatever the response says (`JWKS_MIN_TTL_SECONDS`).
    pub min_ttl: i64,
    /// Most freshness, whatever the response says (`JWKS_MAX_TTL_SECONDS`).
    pub max_ttl: i64,
    /// How long past its freshness a set may still be used (`JWKS_MAX_STALE_SECONDS`).
    pub max_stale: i64,
    /// Least time between refetches for unknown `kid`s (`JWKS_REFRESH_COOLDOWN_SECONDS`).
    pub refresh_cooldown: i64,
    /// Outbound fetch limits.
    pub limits: FetchLimits,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            default_ttl: 600,
            min_ttl: 60,
            max_ttl: 86_400,
            max_stale: 86_400,
            refresh_cooldown: 30,
            limits: FetchLimits::default(),
        }
    }
}

/// First wait after a failed fetch; doubles per consecutive failure.
pub const BACKOFF_BASE_SECONDS: i64 = 5;
/// Longest wait between attempts while failing.
pub const BACKOFF_MAX_SECONDS: i64 = 300;
/// Most redirects followed, and only to the same origin.
pub const MAX_REDIRECTS: usize = 3;
/// How often a request waiting on another request's fetch looks again.
pub const JOIN_POLL_MS: u32 = 20;
/// How many fetch timeouts a waiting request gives the fetch it joined
/// (discovery and redirects make one refresh several fetches) before it
/// fetches itself.
pub const JOIN_WAIT_TIMEOUTS: u64 = 3;

/// Outbound HTTP, bounded by `limits`. Must not follow redirects.
#[allow(async_fn_in_trait)]
pub trait HttpClient {
    /// Fetches `url` (a JSON document).
    async fn get(&self, url: &Url, limits: FetchLimits) -> Result<FetchedDocument, FetchError>;

    /// POSTs a form (`application/x-www-form-urlencoded`) to `url`, with an
    /// optional `Authorization` value; answers a JSON document.
    async fn post_form(
        &self,
        url: &Url,
        body: &str,
        authorization: Option<&str>,
        limits: FetchLimits,
    ) -> Result<FetchedDocument, FetchError> {
        let _ = (url, body, authorization, limits);
        Err(FetchError::Network)
    }

    /// Waits about `ms` milliseconds without holding up the isolate, so a
    /// request can wait for another request's fetch of the same key set. A
    /// runtime must really sleep (a timer in the waiting request's own
    /// context); the default only yields once, which is enough where every
    /// future is polled in turn, as in the native tests.
    async fn pause(&self, ms: u32) {
        let _ = ms;
        YieldOnce(false).await;
    }
}

/// Returns `Pending` once (asking to be polled again), then `Ready`.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// A shared key-value store (Workers KV). Errors count as misses and lost
/// writes: the store is an optimisation, never the source of truth.
#[allow(async_fn_in_trait)]
pub trait KvStore {
    /// Reads `key`.
    async fn get(&self, key: &str) -> Option<String>;
    /// Writes `key` with an expiry (at least 60 s, as Workers KV requires).
    async fn put(&self, key: &str, value: &str, ttl_seconds: u64);
}

impl<T: HttpClient> HttpClient for &T {
    async fn get(&self, url: &Url, limits: FetchLimits) -> Result<FetchedDocument, FetchError> {
        (**self).get(url, limits).await
    }
    async fn post_form(
        &self,
        url: &Url,
        body: &str,
        authorization: Option<&str>,
        limits: FetchLimits,
    ) -> Result<FetchedDocument, FetchError> {
        (**self).post_form(url, body, authorization, limits).await
    }
    async fn pause(&self, ms: u32) {
        (**self).pause(ms).await
    }
}

impl<T: KvStore> KvStore for &T {
    async fn get(&self, key: &str) -> Option<String> {
        (**self).get(key).await
    }
    async fn put(&self, key: &str, value: &str, ttl_seconds: u64) {
        (**self).put(key, value, ttl_seconds).await
    }
}

/// Why no key set is available for an issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySourceError {
    /// The fetch failed.
    Fetch(FetchError),
    /// The server answered with a non-success status.
    Status(u16),
    /// A redirect to another origin, or too many redirects.
    Redirect,
    /// The JWKS document is unusable.
    InvalidKeySet(JwksError),
    /// Discovery metadata was unusable: not JSON, no `jwks_uri`, a `jwks_uri`
    /// that is not https, or an `issuer` that differs from the configured one.
    InvalidMetadata,
    /// A recent attempt failed; waiting before the next one.
    BackingOff,
}

impl KeySourceError {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Fetch(FetchError::Network) => "jwks_fetch_failed",
            Self::Fetch(FetchError::Timeout) => "jwks_fetch_timeout",
            Self::Fetch(FetchError::TooLarge) => "jwks_too_large",
            Self::Status(_) => "jwks_bad_status",
            Self::Redirect => "jwks_redirect_refused",
            Self::InvalidKeySet(_) => "jwks_invalid",
            Self::InvalidMetadata => "discovery_failed",
            Self::BackingOff => "jwks_backing_off",
        }
    }
}

/// Why the caller wants a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDemand {
    /// Any usable set.
    Current,
    /// The token's key is not in the current set: refetch, unless the set
    /// (or an attempt) is younger than the cooldown.
    UnknownKid,
}

/// Supplies the key set of a trusted issuer.
#[allow(async_fn_in_trait)]
pub trait KeySource {
    /// The key set for `issuer`.
    async fn key_set(
        &self,
        issuer: &TrustedIssuer,
        demand: KeyDemand,
        now: i64,
    ) -> Result<Rc<KeySet>, KeySourceError>;
}

/// A key set as the caches hold it.
#[derive(Clone)]
struct CachedSet {
    keys: Rc<KeySet>,
    fetched_at: i64,
    fresh_for: i64,
}

impl CachedSet {
    fn age(&self, now: i64) -> i64 {
        now.saturating_sub(self.fetched_at).max(0)
    }
    fn is_fresh(&self, now: i64) -> bool {
        self.age(now) < self.fresh_for
    }
    fn is_usable(&self, now: i64, max_stale: i64) -> bool {
        self.age(now) < self.fresh_for.saturating_add(max_stale)
    }
}

/// The shared-store form: every isolate reading it agrees on its age.
#[derive(Serialize, Deserialize)]
struct StoredSet {
    fetched_at: i64,
    fresh_for: i64,
    jwks_uri: String,
    jwks: String,
}

/// What an isolate remembers about one issuer.
#[derive(Default)]
struct IssuerState {
    set: Option<CachedSet>,
    jwks_uri: Option<Url>,
    consecutive_failures: u32,
    retry_after: i64,
    last_refetch_attempt: Option<i64>,
    refreshing: bool,
    /// A request of this isolate is fetching the set right now; cleared by
    /// [`FetchInFlight`] however that fetch ends.
    fetching: bool,
}

/// Per-isolate state of the key cache; lives as long as the isolate.
#[derive(Default)]
pub struct KeyMemory {
    issuers: RefCell<HashMap<String, IssuerState>>,
}

impl KeyMemory {
    fn with<T>(&self, issuer: &str, f: impl FnOnce(&mut IssuerState) -> T) -> T {
        f(self
            .issuers
            .borrow_mut()
            .entry(issuer.to_owned())
            .or_default())
    }
}

/// Marks a fetch in flight for the lifetime of the fetching future: cleared
/// when the fetch ends or when its future is dropped, so waiting requests
/// never wait on a fetch nobody is driving.
struct FetchInFlight<'a> {
    memory: &'a KeyMemory,
    issuer: &'a str,
}

impl Drop for FetchInFlight<'_> {
    fn drop(&mut self) {
        self.memory.with(self.issuer, |state| {
            state.fetching = false;
            // A dropped background refresh must not block the next one.
            state.refreshing = false;
        });
    }
}

/// The two-tier JWKS cache over the network.
pub struct JwksCache<H: HttpClient, S: KvStore> {
    memory: Rc<KeyMemory>,
    http: H,
    store: S,
    settings: CacheSettings,
    pending_refresh: RefCell<Vec<TrustedIssuer>>,
    /// Issuers whose set this request fetched.
    fetched: RefCell<Vec<String>>,
}

fn set_key(issuer: &str) -> String {
    format!("jwks:v1:{issuer}")
}

fn attempt_key(issuer: &str) -> String {
    format!("jwks-refetch:v1:{issuer}")
}

impl<H: HttpClient, S: KvStore> KeySource for JwksCache<H, S> {
    async fn key_set(
        &self,
        issuer: &TrustedIssuer,
        demand: KeyDemand,
        now: i64,
    ) -> Result<Rc<KeySet>, KeySourceError> {
        let id = issuer.issuer.as_str();
        let settings = self.settings;
        let mut held = self.memory.with(id, |state| state.set.clone());
        let memory_answers = match (&held, demand) {
            (Some(set), KeyDemand::Current) => set.is_fresh(now),
            (Some(_), KeyDemand::UnknownKid) => {
                self.fetched_here(id) || self.refetched_recently_here(id, now)
            }
            (None, _) => false,
        };
        if memory_answers {
            return Ok(held.expect("memory answers only with a set").keys);
        }
        // Another isolate may have fetched more recently.
        if let Some(stored) = self.load_stored(id).await {
            if held
                .as_ref()
                .is_none_or(|set| stored.0.fetched_at > set.fetched_at)
            {
                let (set, uri) = stored;
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
        // fetched the set or adopted a newer one: use it. One fetched from the
        // network during this request is as fresh as a set gets, so it counts
        // as this request's own fetch (an unknown kid does not refetch it).
        let newer_in_memory = self.memory.with(id, |state| {
            state.set.clone().filter(|set| {
                held.as_ref()
                    .is_none_or(|held| set.fetched_at > held.fetched_at)
            })
        });
        if let Some(set) = newer_in_memory {
            if set.fetched_at >= now {
                self.fetched.borrow_mut().push(id.to_owned());
            }
            held = Some(set);
        }
        match (held, demand) {
            (Some(set), KeyDemand::Current) if set.is_fresh(now) => Ok(set.keys),
            (Some(set), KeyDemand::Current) if set.is_usable(now, settings.max_stale) => {
                // Stale-while-revalidate: answer now, refresh off the request path.
                self.schedule_refresh(issuer, now);
                Ok(set.keys)
            }
            (Some(set), KeyDemand::UnknownKid) => {
                if self.fetched_here(id) || !self.claim_refetch(id, now).await {
                    return Ok(set.keys);
                }
                match self.refresh(issuer, now).await {
                    Ok(fresh) => Ok(fresh),
                    Err(_) if set.is_usable(now, settings.max_stale) => Ok(set.keys),
                    Err(error) => Err(error),
                }
            }
            // Nothing usable held: the request must wait for the network.
            (_, KeyDemand::Current) | (None, KeyDemand::UnknownKid) => {
                self.fetch_or_join(issuer, now).await
            }
        }
    }
}

impl<H: HttpClient, S: KvStore> JwksCache<H, S> {
    /// A cache over `memory` (kept by the isolate), outbound HTTP and the store.
    pub fn new(memory: Rc<KeyMemory>, http: H, store: S, settings: CacheSettings) -> Self {
        JwksCache {
            memory,
            http,
            store,
            settings,
            pending_refresh: RefCell::new(Vec::new()),
            fetched: RefCell::new(Vec::new()),
        }
    }

    /// Issuers whose stale set was served and should be refreshed after the
    /// response, off the request path (`ctx.waitUntil`).
    pub fn take_pending_refreshes(&self) -> Vec<TrustedIssuer> {
        std::mem::take(&mut self.pending_refresh.borrow_mut())
    }

    fn schedule_refresh(&self, issuer: &TrustedIssuer, now: i64) {
        let due = self.memory.with(&issuer.issuer, |state| {
            let due = !state.refreshing && now >= state.retry_after;
            state.refreshing |= due;
            due
        });
        if due {
            self.pending_refresh.borrow_mut().push(issuer.clone());
        }
    }

    /// Fetches the issuer's key set now, honouring backoff; on success the set
    /// replaces the held one in memory and the store.
    pub async fn refresh(
        &self,
        issuer: &TrustedIssuer,
        now: i64,
    ) -> Result<Rc<KeySet>, KeySourceError> {
        let id = issuer.issuer.as_str();
        if self.memory.with(id, |state| now < state.retry_after) {
            self.memory.with(id, |state| state.refreshing = false);
            return Err(KeySourceError::BackingOff);
        }
        self.memory.with(id, |state| state.fetching = true);
        let in_flight = FetchInFlight {
            memory: &self.memory,
            issuer: id,
        };
        let result = self.fetch(issuer, now).await;
        self.memory.with(id, |state| {
            state.refreshing = false;
            match &result {
                Ok(set) => {
                    self.fetched.borrow_mut().push(id.to_owned());
                    state.set = Some(set.clone());
                    state.consecutive_failures = 0;
                    state.retry_after = 0;
                }
                Err(_) => {
                    // A discovered URI may be what failed (the server moved its keys):
                    // the next attempt reads the metadata again.
                    if issuer.jwks_uri.is_none() {
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
        });
        // Only now, with the outcome recorded, may waiting requests look.
        drop(in_flight);
        result.map(|set| set.keys)
    }

    /// The cold path: no usable set is held, so this request needs the
    /// network. When another request of this isolate is already fetching the
    /// issuer's set, wait for that fetch and use its outcome, so a burst of
    /// requests reaching a cold isolate (a deployment, a set past its maximum
    /// stale age, a storm of forged tokens) costs one fetch, not one each.
    async fn fetch_or_join(
        &self,
        issuer: &TrustedIssuer,
        now: i64,
    ) -> Result<Rc<KeySet>, KeySourceError> {
        let id = issuer.issuer.as_str();
        if self.memory.with(id, |state| state.fetching) {
            let patience = u64::from(self.settings.limits.timeout_ms) * JOIN_WAIT_TIMEOUTS;
            let mut waited = 0_u64;
            while self.memory.with(id, |state| state.fetching) && waited < patience {
                self.http.pause(JOIN_POLL_MS).await;
                waited += u64::from(JOIN_POLL_MS);
            }
            let joined = self.memory.with(id, |state| {
                state
                    .set
                    .clone()
                    .filter(|set| !state.fetching && set.is_usable(now, self.settings.max_stale))
            });
            if let Some(set) = joined {
                // As fresh as a set can be: an unknown kid is not worth another fetch.
                self.fetched.borrow_mut().push(id.to_owned());
                return Ok(set.keys);
            }
            // The fetch failed (its backoff now answers) or outlasted our patience.
        }
        self.refresh(issuer, now).await
    }

    /// Whether this isolate itself refetched for an unknown kid within the
    /// cooldown: answered from memory, so a storm costs no KV reads.
    fn refetched_recently_here(&self, issuer: &str, now: i64) -> bool {
        let local = self.memory.with(issuer, |state| state.last_refetch_attempt);
        local.is_some_and(|at| now - at < self.settings.refresh_cooldown)
    }

    /// Whether this request already fetched the issuer's set: it cannot be
    /// fresher, so an unknown kid is not worth a second fetch.
    fn fetched_here(&self, issuer: &str) -> bool {
        self.fetched.borrow().iter().any(|id| id == issuer)
    }

    /// Claims the issuer's unknown-kid refetch unless any isolate made one
    /// within the cooldown. The claim is taken in memory before the first
    /// await, so concurrent requests of a storm in this isolate see it, and
    /// then shared through the store with the other isolates.
    async fn claim_refetch(&self, issuer: &str, now: i64) -> bool {
        let cooldown = self.settings.refresh_cooldown;
        let claimed = self.memory.with(issuer, |state| {
            let recent = state
                .last_refetch_attempt
                .is_some_and(|at| now - at < cooldown);
            if !recent {
                state.last_refetch_attempt = Some(now);
            }
            !recent
        });
        if !claimed {
            return false;
        }
        let shared = self
            .store
            .get(&attempt_key(issuer))
            .await
            .and_then(|at| at.parse::<i64>().ok());
        if let Some(at) = shared.filter(|at| now - at < cooldown) {
            self.memory
                .with(issuer, |state| state.last_refetch_attempt = Some(at));
            return false;
        }
        let ttl = u64::try_from(cooldown).unwrap_or(60).max(60);
        self.store
            .put(&attempt_key(issuer), &now.to_string(), ttl)
            .await;
        true
    }

    /// The shared store's copy of the issuer's set, with the URI it was
    /// fetched from.
    async fn load_stored(&self, issuer: &str) -> Option<(CachedSet, Option<Url>)> {
        let raw = self.store.get(&set_key(issuer)).await?;
        let stored: StoredSet = serde_json::from_str(&raw).ok()?;
        let keys = KeySet::parse(stored.jwks.as_bytes()).ok()?;
        let set = CachedSet {
            keys: Rc::new(keys),
            fetched_at: stored.fetched_at,
            fresh_for: stored.fresh_for,
        };
        Some((set, Url::parse(&stored.jwks_uri).ok()))
    }

    async fn fetch(&self, issuer: &TrustedIssuer, now: i64) -> Result<CachedSet, KeySourceError> {
        let jwks_uri = self.jwks_uri(issuer).await?;
        let document = self.get_following_same_origin(&jwks_uri).await?;
        let keys = KeySet::parse(&document.body).map_err(KeySourceError::InvalidKeySet)?;
        let fresh_for = freshness_lifetime(&document, &self.settings);
        let set = CachedSet {
            keys: Rc::new(keys),
            fetched_at: now,
            fresh_for,
        };
        let stored = StoredSet {
            fetched_at: now,
            fresh_for,
            jwks_uri: jwks_uri.to_string(),
            jwks: String::from_utf8_lossy(&document.body).into_owned(),
        };
        if let Ok(value) = serde_json::to_string(&stored) {
            let ttl = u64::try_from(fresh_for.saturating_add(self.settings.max_stale))
                .unwrap_or(u64::MAX);
            self.store.put(&set_key(&issuer.issuer), &value, ttl).await;
        }
        Ok(set)
    }

    /// GET with redirects followed only within the same origin, so a
    /// compromised path cannot send the gate to another host's keys.
    async fn get_following_same_origin(
        &self,
        url: &Url,
    ) -> Result<FetchedDocument, KeySourceError> {
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let document = self
                .http
                .get(&current, self.settings.limits)
                .await
                .map_err(KeySourceError::Fetch)?;
            match document.status {
                200..=299 => return Ok(document),
                301 | 302 | 303 | 307 | 308 => {
                    let next = document
                        .location
                        .as_deref()
                        .and_then(|location| current.join(location).ok())
                        .filter(|next| next.origin() == url.origin())
                        .ok_or(KeySourceError::Redirect)?;
                    current = next;
                }
                status => return Err(KeySourceError::Status(status)),
            }
        }
        Err(KeySourceError::Redirect)
    }

    async fn jwks_uri(&self, issuer: &TrustedIssuer) -> Result<Url, KeySourceError> {
        if let Some(uri) = &issuer.jwks_uri {
            return Ok(uri.clone());
        }
        if let Some(uri) = self
            .memory
            .with(&issuer.issuer, |state| state.jwks_uri.clone())
        {
            return Ok(uri);
        }
        let mut last_error = KeySourceError::InvalidMetadata;
        for metadata_url in discovery_urls(&issuer.issuer) {
            match self.get_following_same_origin(&metadata_url).await {
                Ok(document) => {
                    let uri = jwks_uri_from_metadata(&document.body, &issuer.issuer)?;
                    self.memory
                        .with(&issuer.issuer, |state| state.jwks_uri = Some(uri.clone()));
                    return Ok(uri);
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

/// How long a fetched set is fresh: `Cache-Control: max-age` (RFC 9111
/// §5.2.2.1), else `Expires` minus `Date` (§5.3), else the configured
/// default; `no-store`/`no-cache` mean the minimum. Always clamped to the
/// configured bounds, so a server cannot make the gate refetch on every
/// request nor pin a key set for weeks.
pub fn freshness_lifetime(document: &FetchedDocument, settings: &CacheSettings) -> i64 {
    let directives: Vec<String> = document
        .cache_control
        .as_deref()
        .map(|value| {
            value
                .split(',')
                .map(|d| d.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let from_cache_control = if directives
        .iter()
        .any(|d| d == "no-store" || d == "no-cache")
    {
        Some(settings.min_ttl)
    } else {
        directives
            .iter()
            .find_map(|d| d.strip_prefix("max-age="))
            .and_then(|value| value.trim_matches('"').parse::<i64>().ok())
    };
    let from_expires = || {
        let expires = parse_http_date(document.expires.as_deref()?)?;
        let date = parse_http_date(document.date.as_deref()?)?;
        Some(expires - date)
    };
    from_cache_control
        .or_else(from_expires)
        .unwrap_or(settings.default_ttl)
        .clamp(settings.min_ttl, settings.max_ttl.max(settings.min_ttl))
}

/// Parses an IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`,
/// into seconds since the epoch. The obsolete forms are not accepted: a
/// header that cannot be read simply does not count.
pub fn parse_http_date(value: &str) -> Option<i64> {
    let mut parts = value.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: i64 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month_name)? as i64
        + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60
    {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Where to look for an issuer's metadata: RFC 8414 §3.1 inserts the
/// well-known segment before the issuer's path; OpenID Connect Discovery
/// appends it after.
pub fn discovery_urls(issuer: &str) -> Vec<Url> {
    let Ok(url) = Url::parse(issuer) else {
        return Vec::new();
    };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}{path}/.well-known/openid-configuration"),
    ]
    .iter()
    .filter_map(|candidate| Url::parse(candidate).ok())
    .collect()
}

/// Reads `jwks_uri` from authorization server metadata, requiring `issuer`
/// to equal the configured issuer exactly (RFC 8414 §3.3) so a metadata
/// document cannot redirect trust to another issuer's keys.
pub fn jwks_uri_from_metadata(
    document: &[u8],
    expected_issuer: &str,
) -> Result<Url, KeySourceError> {
    #[derive(Deserialize)]
    struct Metadata {
        issuer: String,
        jwks_uri: String,
    }
    let metadata: Metadata =
        serde_json::from_slice(document).map_err(|_| KeySourceError::InvalidMetadata)?;
    if metadata.issuer != expected_issuer {
        return Err(KeySourceError::InvalidMetadata);
    }
    let uri = Url::parse(&metadata.jwks_uri).map_err(|_| KeySourceError::InvalidMetadata)?;
    let issuer_is_local = Url::parse(expected_issuer).is_ok_and(|issuer| issuer.scheme() == "http");
    match uri.scheme() {
        "https" => Ok(uri),
        // An http issuer passed configuration only because it is loopback.
        "http" if issuer_is_local && is_loopback_host(&uri) => Ok(uri),
        _ => Err(KeySourceError::InvalidMetadata),
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
