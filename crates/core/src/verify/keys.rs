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
//! The policy lives in the sans-IO machines of
//! [`crate::verify::key_lookup`] ([`KeySetLookup`], [`KeySetRefresh`]):
//! no futures, no I/O, `now` passed in. This module holds their vocabulary
//! and the isolate's memory. The request machine
//! ([`crate::flow::machine`]) drives them; the Workers runtime supplies only
//! I/O and the policy is tested natively.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use url::Url;

pub use crate::io::{FetchError, FetchLimits, FetchedDocument};
use crate::verify::jwk::{JwksError, KeySet};
pub use crate::verify::key_lookup::{KeySetLookup, KeySetOutcome, KeySetRefresh};

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

/// A key set as the caches hold it.
#[derive(Clone)]
pub(super) struct CachedSet {
    pub(super) keys: Rc<KeySet>,
    pub(super) fetched_at: i64,
    pub(super) fresh_for: i64,
}

impl CachedSet {
    fn age(&self, now: i64) -> i64 {
        now.saturating_sub(self.fetched_at).max(0)
    }
    pub(super) fn is_fresh(&self, now: i64) -> bool {
        self.age(now) < self.fresh_for
    }
    pub(super) fn is_usable(&self, now: i64, max_stale: i64) -> bool {
        self.age(now) < self.fresh_for.saturating_add(max_stale)
    }
}

/// The shared-store form: every isolate reading it agrees on its age.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSet {
    pub(super) fetched_at: i64,
    pub(super) fresh_for: i64,
    pub(super) jwks_uri: String,
    pub(super) jwks: String,
}

/// What an isolate remembers about one issuer. Read and written only by the
/// machines of [`crate::verify::key_lookup`].
#[derive(Default)]
pub(super) struct IssuerState {
    pub(super) set: Option<CachedSet>,
    pub(super) jwks_uri: Option<Url>,
    pub(super) consecutive_failures: u32,
    pub(super) retry_after: i64,
    pub(super) last_refetch_attempt: Option<i64>,
    /// A background refresh is claimed (scheduled or running).
    pub(super) refreshing: bool,
    /// A request of this isolate is fetching the set right now; cleared by
    /// its [`KeySetRefresh`] however that fetch ends.
    pub(super) fetching: bool,
}

/// Per-isolate state of the key cache; lives as long as the isolate.
#[derive(Default)]
pub struct KeyMemory {
    issuers: RefCell<HashMap<String, IssuerState>>,
}

impl KeyMemory {
    /// How many issuers' key sets (and their fetch state) are remembered:
    /// only configured issuers are ever looked up, so at most their number.
    pub fn len(&self) -> usize {
        self.issuers.borrow().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn with<T>(&self, issuer: &str, f: impl FnOnce(&mut IssuerState) -> T) -> T {
        f(self
            .issuers
            .borrow_mut()
            .entry(issuer.to_owned())
            .or_default())
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
    let (issuer, jwks_uri) =
        issuer_and(document, "jwks_uri").ok_or(KeySourceError::InvalidMetadata)?;
    if issuer != expected_issuer {
        return Err(KeySourceError::InvalidMetadata);
    }
    let uri = crate::io::parse_url(&jwks_uri).ok_or(KeySourceError::InvalidMetadata)?;
    let issuer_is_local = Url::parse(expected_issuer).is_ok_and(|issuer| issuer.scheme() == "http");
    match uri.scheme() {
        "https" => Ok(uri),
        // An http issuer passed configuration only because it is loopback.
        "http" if issuer_is_local && is_loopback_host(&uri) => Ok(uri),
        _ => Err(KeySourceError::InvalidMetadata),
    }
}

/// `issuer` and the text member `member` of an authorization server
/// metadata document (RFC 8414 §2), read as serde's derive of
/// `struct { issuer: String, <member>: String }` reads them with
/// `serde_json::from_slice`: an object with both members as strings, each
/// at most once, any others ignored; or an array of exactly those two
/// strings; nothing after it. One reader for the `jwks_uri` of key discovery
/// and the `introspection_endpoint` of introspection, where a derive each
/// brought a copy of the JSON parser's struct code.
pub(crate) fn issuer_and(document: &[u8], member: &'static str) -> Option<(String, String)> {
    use serde::de::{Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

    struct IssuerAnd(&'static str);

    impl<'de> Visitor<'de> for IssuerAnd {
        type Value = (String, String);

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("authorization server metadata")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut issuer, mut other) = (None, None);
            while let Some(key) = map.next_key::<String>()? {
                let (slot, name) = if key == "issuer" {
                    (&mut issuer, "issuer")
                } else if key == self.0 {
                    (&mut other, self.0)
                } else {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                };
                if slot.is_some() {
                    return Err(A::Error::duplicate_field(name));
                }
                *slot = Some(map.next_value::<String>()?);
            }
            let issuer = issuer.ok_or_else(|| A::Error::missing_field("issuer"))?;
            let other = other.ok_or_else(|| A::Error::missing_field(self.0))?;
            Ok((issuer, other))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let issuer = seq
                .next_element::<String>()?
                .ok_or_else(|| A::Error::invalid_length(0, &self))?;
            let other = seq
                .next_element::<String>()?
                .ok_or_else(|| A::Error::invalid_length(1, &self))?;
            Ok((issuer, other))
        }
    }

    let mut deserializer = serde_json::Deserializer::from_slice(document);
    let pair = serde::Deserializer::deserialize_struct(
        &mut deserializer,
        "Metadata",
        &[],
        IssuerAnd(member),
    )
    .ok()?;
    deserializer.end().ok()?;
    Some(pair)
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
