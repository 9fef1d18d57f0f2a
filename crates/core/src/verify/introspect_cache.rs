//! The introspection port and its cache (RFC 7662 §4: "the protected
//! resource MAY cache the response"): isolate memory in front of the shared
//! KV namespace in front of the authorization server, keyed by a SHA-256 of
//! the token. The endpoint is configured, or discovered from the issuer's
//! metadata (`introspection_endpoint`, RFC 8414 §2). Pure apart from the
//! [`HttpClient`] and [`KvStore`] ports, with `now` passed in.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::Deserialize;
use url::Url;

use crate::config::IntrospectionConfig;
use crate::verify::introspect::{
    build_request, cache_key, cache_lifetime, judge_response, CachedVerdict, IntrospectionPolicy,
    IntrospectionUnavailable, Verdict,
};
use crate::verify::keys::{discovery_urls, FetchError, FetchLimits, HttpClient, KvStore};

/// Most verdicts an isolate keeps; beyond, expired ones are dropped, then all.
pub const MAX_CACHED_VERDICTS: usize = 10_000;
/// Wait after a failed introspection call before the next one.
pub const BACKOFF_SECONDS: i64 = 2;

/// Judges opaque tokens.
#[allow(async_fn_in_trait)]
pub trait Introspector {
    /// The verdict on `token` at `now`, or why none can be had.
    /// `policy` holds the issuers and audiences of the route asking.
    async fn introspect(
        &self,
        token: &str,
        policy: &IntrospectionPolicy<'_>,
        now: i64,
    ) -> Result<Verdict, IntrospectionUnavailable>;
}

/// For gates that only accept JWTs.
pub struct NoIntrospection;

impl Introspector for NoIntrospection {
    async fn introspect(
        &self,
        _: &str,
        _: &IntrospectionPolicy<'_>,
        _: i64,
    ) -> Result<Verdict, IntrospectionUnavailable> {
        Err(IntrospectionUnavailable::NoEndpoint)
    }
}

/// What an isolate keeps between requests.
#[derive(Debug, Default)]
pub struct IntrospectionMemory {
    verdicts: RefCell<HashMap<String, CachedVerdict>>,
    discovered_endpoint: RefCell<Option<Url>>,
    retry_after: RefCell<i64>,
}

/// The cache over the ports, for one request.
pub struct IntrospectionCache<'a, H: HttpClient, S: KvStore> {
    /// The isolate's memory.
    pub memory: &'a IntrospectionMemory,
    /// Outbound HTTP.
    pub http: H,
    /// The shared store.
    pub store: S,
    /// Endpoint, credentials and TTL.
    pub config: &'a IntrospectionConfig,
    /// Fetch limits (shared with the JWKS fetches).
    pub limits: FetchLimits,
}

impl<H: HttpClient, S: KvStore> Introspector for IntrospectionCache<'_, H, S> {
    async fn introspect(
        &self,
        token: &str,
        policy: &IntrospectionPolicy<'_>,
        now: i64,
    ) -> Result<Verdict, IntrospectionUnavailable> {
        let key = cache_key(token, policy);
        let leeway = policy.leeway_seconds;
        let held = self.memory.verdicts.borrow().get(&key).cloned();
        if let Some(verdict) = held.and_then(|cached| cached.verdict_at(now, leeway)) {
            return Ok(verdict);
        }
        if let Some(stored) = self.store.get(&key).await {
            if let Ok(cached) = serde_json::from_str::<CachedVerdict>(&stored) {
                if let Some(verdict) = cached.verdict_at(now, leeway) {
                    self.remember(key, cached, now);
                    return Ok(verdict);
                }
            }
        }
        if now < *self.memory.retry_after.borrow() {
            return Err(IntrospectionUnavailable::BackingOff);
        }
        let result = self.call(token, policy, now).await;
        if result.is_err() {
            *self.memory.retry_after.borrow_mut() = now + BACKOFF_SECONDS;
        }
        let verdict = result?;
        let lifetime = cache_lifetime(&verdict, self.config.ttl_seconds, now);
        if lifetime > 0 {
            let cached = CachedVerdict::new(&verdict, now + lifetime);
            if let Ok(value) = serde_json::to_string(&cached) {
                self.store
                    .put(&key, &value, u64::try_from(lifetime).unwrap_or(60))
                    .await;
            }
            self.remember(key, cached, now);
        }
        Ok(verdict)
    }
}

impl<H: HttpClient, S: KvStore> IntrospectionCache<'_, H, S> {
    fn remember(&self, key: String, cached: CachedVerdict, now: i64) {
        let mut verdicts = self.memory.verdicts.borrow_mut();
        if verdicts.len() >= MAX_CACHED_VERDICTS {
            verdicts.retain(|_, entry| entry.until > now);
            if verdicts.len() >= MAX_CACHED_VERDICTS {
                verdicts.clear();
            }
        }
        verdicts.insert(key, cached);
    }

    async fn call(
        &self,
        token: &str,
        policy: &IntrospectionPolicy<'_>,
        now: i64,
    ) -> Result<Verdict, IntrospectionUnavailable> {
        let endpoint = self.endpoint(policy).await?;
        let client = self
            .config
            .client
            .as_ref()
            .ok_or(IntrospectionUnavailable::NoEndpoint)?;
        let request = build_request(token, client);
        let document = self
            .http
            .post_form(
                &endpoint,
                &request.body,
                request.authorization.as_deref(),
                self.limits,
            )
            .await
            .map_err(|error| match error {
                FetchError::Network => IntrospectionUnavailable::Network,
                FetchError::Timeout => IntrospectionUnavailable::Timeout,
                FetchError::TooLarge => IntrospectionUnavailable::TooLarge,
            })?;
        if document.status != 200 {
            return Err(IntrospectionUnavailable::Status(document.status));
        }
        judge_response(&document.body, policy, now)
    }

    async fn endpoint(
        &self,
        policy: &IntrospectionPolicy<'_>,
    ) -> Result<Url, IntrospectionUnavailable> {
        if let Some(endpoint) = &self.config.endpoint {
            return Ok(endpoint.clone());
        }
        if let Some(found) = self.memory.discovered_endpoint.borrow().clone() {
            return Ok(found);
        }
        let [issuer] = policy.issuers else {
            return Err(IntrospectionUnavailable::NoEndpoint);
        };
        for candidate in discovery_urls(issuer) {
            let Ok(document) = self.http.get(&candidate, self.limits).await else {
                continue;
            };
            if document.status != 200 {
                continue;
            }
            if let Some(endpoint) = introspection_endpoint_from_metadata(&document.body, issuer) {
                *self.memory.discovered_endpoint.borrow_mut() = Some(endpoint.clone());
                return Ok(endpoint);
            }
        }
        Err(IntrospectionUnavailable::NoEndpoint)
    }
}

/// Reads `introspection_endpoint` from authorization server metadata whose
/// `issuer` is the configured one (RFC 8414 §3.3); `https`, or `http` for a
/// loopback issuer in local development.
pub fn introspection_endpoint_from_metadata(document: &[u8], issuer: &str) -> Option<Url> {
    #[derive(Deserialize)]
    struct Metadata {
        issuer: String,
        introspection_endpoint: String,
    }
    let metadata: Metadata = serde_json::from_slice(document).ok()?;
    if metadata.issuer != issuer {
        return None;
    }
    let url = Url::parse(&metadata.introspection_endpoint).ok()?;
    let local = Url::parse(issuer).is_ok_and(|i| i.scheme() == "http");
    match url.scheme() {
        "https" => Some(url),
        "http" if local && crate::verify::keys::is_loopback_host(&url) => Some(url),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::verify::introspect::{ClientAuthMethod, IntrospectionClient, IntrospectionRefusal};
    use crate::verify::keys::FetchedDocument;

    const NOW: i64 = 1_800_000_000;

    #[derive(Default)]
    struct FakeAs {
        calls: Cell<usize>,
        answer: RefCell<Option<(u16, String)>>,
    }

    impl HttpClient for FakeAs {
        async fn get(&self, _: &Url, _: FetchLimits) -> Result<FetchedDocument, FetchError> {
            Ok(FetchedDocument {
                status: 200,
                body: br#"{"issuer":"https://as.example","introspection_endpoint":"https://as.example/introspect"}"#.to_vec(),
                ..FetchedDocument::default()
            })
        }
        async fn post_form(
            &self,
            url: &Url,
            body: &str,
            authorization: Option<&str>,
            _: FetchLimits,
        ) -> Result<FetchedDocument, FetchError> {
            assert_eq!(url.as_str(), "https://as.example/introspect");
            assert!(body.starts_with("token="));
            assert!(authorization.is_some_and(|a| a.starts_with("Basic ")));
            self.calls.set(self.calls.get() + 1);
            match self.answer.borrow().clone() {
                Some((status, body)) => Ok(FetchedDocument {
                    status,
                    body: body.into_bytes(),
                    ..FetchedDocument::default()
                }),
                None => Err(FetchError::Timeout),
            }
        }
    }

    #[derive(Default)]
    struct FakeKv(RefCell<HashMap<String, String>>);

    impl KvStore for FakeKv {
        async fn get(&self, key: &str) -> Option<String> {
            self.0.borrow().get(key).cloned()
        }
        async fn put(&self, key: &str, value: &str, _: u64) {
            self.0.borrow_mut().insert(key.to_owned(), value.to_owned());
        }
    }

    fn settings(endpoint: Option<&str>) -> IntrospectionConfig {
        IntrospectionConfig {
            format: crate::config::TokenFormat::Opaque,
            endpoint: endpoint.map(|e| Url::parse(e).unwrap()),
            client: Some(IntrospectionClient {
                client_id: "gate".into(),
                client_secret: "secret".into(),
                method: ClientAuthMethod::ClientSecretBasic,
            }),
            ttl_seconds: 60,
        }
    }

    fn run(
        memory: &IntrospectionMemory,
        http: &FakeAs,
        kv: &FakeKv,
        config: &IntrospectionConfig,
        now: i64,
    ) -> Result<Verdict, IntrospectionUnavailable> {
        let issuers = ["https://as.example".to_owned()];
        let audiences = ["https://mcp.example/mcp".to_owned()];
        let cache = IntrospectionCache {
            memory,
            http,
            store: kv,
            config,
            limits: FetchLimits::default(),
        };
        let policy = IntrospectionPolicy {
            issuers: &issuers,
            audiences: &audiences,
            leeway_seconds: 0,
        };
        pollster::block_on(cache.introspect("opaque-token", &policy, now))
    }

    fn active(exp: i64) -> (u16, String) {
        (
            200,
            format!(r#"{{"active":true,"aud":"https://mcp.example/mcp","sub":"u","exp":{exp}}}"#),
        )
    }

    #[test]
    fn one_call_serves_many_requests_until_the_ttl() {
        let (http, kv, memory) = (
            FakeAs::default(),
            FakeKv::default(),
            IntrospectionMemory::default(),
        );
        let config = settings(Some("https://as.example/introspect"));
        *http.answer.borrow_mut() = Some(active(NOW + 3600));
        for offset in 0..60 {
            assert!(run(&memory, &http, &kv, &config, NOW + offset)
                .unwrap()
                .is_ok());
        }
        assert_eq!(http.calls.get(), 1);
        // Revoked at the authorization server: seen once the cached verdict expires.
        *http.answer.borrow_mut() = Some((200, r#"{"active":false}"#.into()));
        assert_eq!(
            run(&memory, &http, &kv, &config, NOW + 60).unwrap(),
            Err(IntrospectionRefusal::Inactive)
        );
        assert_eq!(http.calls.get(), 2);
        // Another isolate reads the shared store instead of calling.
        let other = IntrospectionMemory::default();
        assert!(run(&other, &http, &kv, &config, NOW + 61).unwrap().is_err());
        assert_eq!(http.calls.get(), 2);
    }

    #[test]
    fn cached_tokens_never_outlive_their_exp() {
        let (http, kv, memory) = (
            FakeAs::default(),
            FakeKv::default(),
            IntrospectionMemory::default(),
        );
        let config = settings(Some("https://as.example/introspect"));
        *http.answer.borrow_mut() = Some(active(NOW + 10));
        assert!(run(&memory, &http, &kv, &config, NOW).unwrap().is_ok());
        *http.answer.borrow_mut() = Some((200, r#"{"active":false}"#.into()));
        assert!(run(&memory, &http, &kv, &config, NOW + 10)
            .unwrap()
            .is_err());
    }

    #[test]
    fn failures_are_unavailable_not_refusals_and_back_off() {
        let (http, kv, memory) = (
            FakeAs::default(),
            FakeKv::default(),
            IntrospectionMemory::default(),
        );
        let config = settings(Some("https://as.example/introspect"));
        assert_eq!(
            run(&memory, &http, &kv, &config, NOW),
            Err(IntrospectionUnavailable::Timeout)
        );
        assert_eq!(
            run(&memory, &http, &kv, &config, NOW + 1),
            Err(IntrospectionUnavailable::BackingOff)
        );
        *http.answer.borrow_mut() = Some((500, "{}".into()));
        assert_eq!(
            run(&memory, &http, &kv, &config, NOW + 2),
            Err(IntrospectionUnavailable::Status(500))
        );
        *http.answer.borrow_mut() = Some((200, "<html>".into()));
        assert_eq!(
            run(&memory, &http, &kv, &config, NOW + 4),
            Err(IntrospectionUnavailable::Invalid)
        );
        assert!(kv.0.borrow().is_empty(), "failures are not cached");
    }

    #[test]
    fn the_endpoint_is_discovered_from_the_issuer_metadata() {
        let (http, kv, memory) = (
            FakeAs::default(),
            FakeKv::default(),
            IntrospectionMemory::default(),
        );
        *http.answer.borrow_mut() = Some(active(NOW + 100));
        assert!(run(&memory, &http, &kv, &settings(None), NOW)
            .unwrap()
            .is_ok());
        assert!(kv.0.borrow().keys().all(|k| !k.contains("opaque-token")));
        assert_eq!(
            introspection_endpoint_from_metadata(
                br#"{"issuer":"https://other.example","introspection_endpoint":"https://as.example/i"}"#,
                "https://as.example"
            ),
            None
        );
    }
}
