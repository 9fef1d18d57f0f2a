//! Where verification keys come from: the issuer's JWK Set (RFC 7517 §5),
//! found at the configured `jwks_uri` or through authorization server
//! metadata discovery (RFC 8414 §3, falling back to OpenID Connect Discovery
//! 1.0 §4), cached in isolate memory in front of a shared key-value store in
//! front of the network.
//!
//! The cache logic is pure over three small ports ([`HttpClient`],
//! [`KvStore`] and the `now` argument), so the Workers runtime supplies only
//! the I/O and the policy is tested natively.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::TrustedIssuer;
use crate::jwk::{JwksError, KeySet};

/// Largest JWKS or metadata document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// How long an outbound fetch may take.
pub const FETCH_TIMEOUT_MS: u32 = 5_000;
/// A key set stays usable this long past its freshness when the issuer cannot
/// be reached (stale-if-error).
pub const MAX_STALE_SECONDS: i64 = 24 * 3600;
/// Least time between two refetches triggered by an unknown `kid`.
pub const UNKNOWN_KID_COOLDOWN_SECONDS: i64 = 30;
/// Least time between two attempts after a failed fetch.
pub const FAILURE_BACKOFF_SECONDS: i64 = 10;

/// An HTTP response body and status, read within the size cap.
#[derive(Debug, Clone)]
pub struct FetchedDocument {
    /// HTTP status.
    pub status: u16,
    /// The body, at most [`MAX_DOCUMENT_BYTES`].
    pub body: Vec<u8>,
}

/// Why an outbound fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchError {
    /// Connection refused, DNS failure, TLS failure.
    Network,
    /// No answer within [`FETCH_TIMEOUT_MS`].
    Timeout,
    /// The body exceeded [`MAX_DOCUMENT_BYTES`].
    TooLarge,
}

/// Outbound HTTP GET, bounded in time and size. Redirects are not followed.
#[allow(async_fn_in_trait)]
pub trait HttpClient {
    /// Fetches `url` as JSON.
    async fn get(&self, url: &Url) -> Result<FetchedDocument, FetchError>;
}

/// A shared key-value store (Workers KV).
#[allow(async_fn_in_trait)]
pub trait KvStore {
    /// Reads `key`; errors count as a miss.
    async fn get(&self, key: &str) -> Option<String>;
    /// Writes `key` with an expiry; failures are ignored (the cache is an
    /// optimisation, never a source of truth).
    async fn put(&self, key: &str, value: &str, ttl_seconds: u64);
}

/// Why no key set is available for an issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySourceError {
    /// The fetch failed.
    Fetch(FetchError),
    /// The server answered with a non-success status.
    Status(u16),
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
            Self::InvalidKeySet(_) => "jwks_invalid",
            Self::InvalidMetadata => "discovery_failed",
            Self::BackingOff => "jwks_backing_off",
        }
    }
}

/// Why the caller wants a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDemand {
    /// Any usable set (fresh, or stale within limits if the issuer is down).
    Current,
    /// The token's key is not in the current set: refetch, unless one was
    /// fetched within the cooldown.
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

/// The shared-store form: every isolate reading it agrees on its age.
#[derive(Serialize, Deserialize)]
struct StoredSet {
    fetched_at: i64,
    fresh_for: i64,
    jwks_uri: String,
    jwks: String,
}

/// Per-isolate state of the key cache; lives as long as the isolate.
#[derive(Default)]
pub struct KeyMemory {
    sets: RefCell<HashMap<String, CachedSet>>,
    jwks_uris: RefCell<HashMap<String, Url>>,
    last_failure: RefCell<HashMap<String, i64>>,
}

/// The two-tier JWKS cache over the network.
pub struct JwksCache<'a, H: HttpClient, S: KvStore> {
    /// Isolate memory.
    pub memory: &'a KeyMemory,
    /// Outbound HTTP.
    pub http: &'a H,
    /// The shared store.
    pub store: &'a S,
    /// Freshness lifetime of a fetched set, in seconds.
    pub ttl_seconds: u64,
}

fn store_key(issuer: &str) -> String {
    format!("jwks:v1:{issuer}")
}

impl<H: HttpClient, S: KvStore> KeySource for JwksCache<'_, H, S> {
    async fn key_set(
        &self,
        issuer: &TrustedIssuer,
        demand: KeyDemand,
        now: i64,
    ) -> Result<Rc<KeySet>, KeySourceError> {
        let id = issuer.issuer.as_str();
        let mut best = self.memory.sets.borrow().get(id).cloned();
        if best.as_ref().is_none_or(|set| !is_fresh(set, now)) {
            if let Some(stored) = self.load_stored(id).await {
                if best
                    .as_ref()
                    .is_none_or(|held| stored.fetched_at > held.fetched_at)
                {
                    self.memory
                        .sets
                        .borrow_mut()
                        .insert(id.to_owned(), stored.clone());
                    best = Some(stored);
                }
            }
        }
        let must_fetch = match (&best, demand) {
            (None, _) => true,
            (Some(set), KeyDemand::Current) => !is_fresh(set, now),
            (Some(set), KeyDemand::UnknownKid) => {
                now - set.fetched_at >= UNKNOWN_KID_COOLDOWN_SECONDS
            }
        };
        if !must_fetch {
            return Ok(best.expect("checked above").keys);
        }
        let backing_off = self
            .memory
            .last_failure
            .borrow()
            .get(id)
            .is_some_and(|failed_at| now - failed_at < FAILURE_BACKOFF_SECONDS);
        let fetched = if backing_off {
            Err(KeySourceError::BackingOff)
        } else {
            self.fetch(issuer, now).await
        };
        match fetched {
            Ok(set) => {
                self.memory.last_failure.borrow_mut().remove(id);
                Ok(set.keys)
            }
            Err(error) => {
                if error != KeySourceError::BackingOff {
                    self.memory
                        .last_failure
                        .borrow_mut()
                        .insert(id.to_owned(), now);
                }
                // Stale-if-error: a set that was good recently beats refusing everyone.
                match best {
                    Some(set) if now - set.fetched_at < set.fresh_for + MAX_STALE_SECONDS => {
                        Ok(set.keys)
                    }
                    _ => Err(error),
                }
            }
        }
    }
}

fn is_fresh(set: &CachedSet, now: i64) -> bool {
    now >= set.fetched_at && now - set.fetched_at < set.fresh_for
}

impl<H: HttpClient, S: KvStore> JwksCache<'_, H, S> {
    async fn load_stored(&self, issuer: &str) -> Option<CachedSet> {
        let raw = self.store.get(&store_key(issuer)).await?;
        let stored: StoredSet = serde_json::from_str(&raw).ok()?;
        let keys = KeySet::parse(stored.jwks.as_bytes()).ok()?;
        if let Ok(uri) = Url::parse(&stored.jwks_uri) {
            self.memory
                .jwks_uris
                .borrow_mut()
                .entry(issuer.to_owned())
                .or_insert(uri);
        }
        Some(CachedSet {
            keys: Rc::new(keys),
            fetched_at: stored.fetched_at,
            fresh_for: stored.fresh_for,
        })
    }

    async fn fetch(&self, issuer: &TrustedIssuer, now: i64) -> Result<CachedSet, KeySourceError> {
        let jwks_uri = self.jwks_uri(issuer).await?;
        let document = self
            .http
            .get(&jwks_uri)
            .await
            .map_err(KeySourceError::Fetch)?;
        if !(200..300).contains(&document.status) {
            return Err(KeySourceError::Status(document.status));
        }
        let keys = KeySet::parse(&document.body).map_err(KeySourceError::InvalidKeySet)?;
        let fresh_for = i64::try_from(self.ttl_seconds).unwrap_or(i64::MAX);
        let set = CachedSet {
            keys: Rc::new(keys),
            fetched_at: now,
            fresh_for,
        };
        self.memory
            .sets
            .borrow_mut()
            .insert(issuer.issuer.clone(), set.clone());
        let stored = StoredSet {
            fetched_at: now,
            fresh_for,
            jwks_uri: jwks_uri.to_string(),
            jwks: String::from_utf8_lossy(&document.body).into_owned(),
        };
        if let Ok(value) = serde_json::to_string(&stored) {
            let ttl = self.ttl_seconds.saturating_add(MAX_STALE_SECONDS as u64);
            self.store
                .put(&store_key(&issuer.issuer), &value, ttl)
                .await;
        }
        Ok(set)
    }

    async fn jwks_uri(&self, issuer: &TrustedIssuer) -> Result<Url, KeySourceError> {
        if let Some(uri) = &issuer.jwks_uri {
            return Ok(uri.clone());
        }
        if let Some(uri) = self.memory.jwks_uris.borrow().get(&issuer.issuer) {
            return Ok(uri.clone());
        }
        let mut last_error = KeySourceError::InvalidMetadata;
        for metadata_url in discovery_urls(&issuer.issuer) {
            match self.http.get(&metadata_url).await {
                Ok(document) if (200..300).contains(&document.status) => {
                    let uri = jwks_uri_from_metadata(&document.body, &issuer.issuer)?;
                    self.memory
                        .jwks_uris
                        .borrow_mut()
                        .insert(issuer.issuer.clone(), uri.clone());
                    return Ok(uri);
                }
                Ok(document) => last_error = KeySourceError::Status(document.status),
                Err(error) => last_error = KeySourceError::Fetch(error),
            }
        }
        Err(last_error)
    }
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
        "http" if issuer_is_local && crate::config::is_loopback_host(&uri) => Ok(uri),
        _ => Err(KeySourceError::InvalidMetadata),
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
