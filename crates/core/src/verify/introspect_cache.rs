//! The introspection port and its cache (RFC 7662 §4: "the protected
//! resource MAY cache the response"): isolate memory in front of the shared
//! KV namespace in front of the authorization server, keyed by a SHA-256 of
//! the token. The endpoint is configured, or discovered from the issuer's
//! metadata (`introspection_endpoint`, RFC 8414 §2, fetched per RFC 8414 §3
//! then OpenID Connect Discovery 1.0 §4).
//!
//! The logic is a sans-IO machine, [`IntrospectionLookup`]: it holds no
//! futures and performs no I/O, `now` is passed in, and each `step` either
//! answers or names the one [`Io`] it needs next (the vocabulary of
//! [`crate::io`]). The request machine ([`crate::flow::machine`]) drives it.

use std::cell::RefCell;
use std::collections::HashMap;

use url::Url;

use crate::config::IntrospectionConfig;
use crate::io::{FetchError, FetchLimits, FetchedDocument, Io, IoAnswer, Poll};
use crate::verify::introspect::{
    build_request, cache_key, cache_lifetime, judge_response, CachedVerdict, IntrospectionPolicy,
    IntrospectionUnavailable, Verdict,
};
use crate::verify::keys::discovery_urls;

/// Most verdicts an isolate keeps; beyond, expired ones are dropped, then all.
pub const MAX_CACHED_VERDICTS: usize = 10_000;
/// Wait after a failed introspection call before the next one.
pub const BACKOFF_SECONDS: i64 = 2;

/// What an isolate keeps between requests.
#[derive(Debug, Default)]
pub struct IntrospectionMemory {
    verdicts: RefCell<HashMap<String, CachedVerdict>>,
    discovered_endpoint: RefCell<Option<Url>>,
    retry_after: RefCell<i64>,
}

impl IntrospectionMemory {
    /// How many verdicts are remembered.
    pub fn len(&self) -> usize {
        self.verdicts.borrow().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `cached` under `key`, within [`MAX_CACHED_VERDICTS`].
    fn remember(&self, key: String, cached: CachedVerdict, now: i64) {
        let mut verdicts = self.verdicts.borrow_mut();
        if verdicts.len() >= MAX_CACHED_VERDICTS {
            verdicts.retain(|_, entry| entry.until > now);
            if verdicts.len() >= MAX_CACHED_VERDICTS {
                verdicts.clear();
            }
        }
        verdicts.insert(key, cached);
    }
}

/// The way one opaque token reaches its verdict, as a sans-IO machine: the
/// isolate's memory first, then the shared store, then (unless a recent
/// failure is being waited out) the authorization server's introspection
/// endpoint, whose verdict is written back to both caches.
///
/// Drive it by calling [`step`](Self::step) until it is
/// [`Poll::Ready`]; on [`Poll::Need`], perform the [`Io`] and hand its
/// outcome to [`resume`](Self::resume) before stepping again. The machine
/// owns everything it keeps (`'static`), so a driver may hold it across
/// awaits; the context it reads and updates is passed to every step.
///
/// The token leaves the machine only in the body of the [`Io::PostForm`];
/// store keys are a hash of it, and it is never printed.
pub struct IntrospectionLookup {
    /// The raw token, until it has been posted; emptied after.
    token: String,
    /// The store key: a SHA-256 over the token and the route's policy.
    key: String,
    /// The only trusted issuer, whose metadata names the endpoint; `None`
    /// with several, as then no one issuer speaks for the endpoint.
    issuer: Option<String>,
    leeway_seconds: i64,
    now: i64,
    stage: Stage,
    /// The driver's answer to the outstanding [`Io`], until the next step.
    answer: Option<IoAnswer>,
}

/// Where a lookup stands. All stages but [`Stage::MemoryFirst`],
/// [`Stage::FindEndpoint`] and [`Stage::Spent`] wait for the driver's answer
/// to the [`Io`] they asked for.
#[derive(Debug)]
enum Stage {
    /// Nothing consulted yet: a verdict still alive in memory needs no I/O.
    MemoryFirst,
    /// Asked the shared store, as another isolate may already have called.
    ReadStore,
    /// Both caches missed and no backoff holds: the endpoint is configured,
    /// remembered, or to be discovered.
    FindEndpoint,
    /// Asked for the issuer's metadata at one discovery URL; `untried` are
    /// the ones left should it not name an endpoint.
    DiscoverEndpoint { untried: std::vec::IntoIter<Url> },
    /// Posted the token to the endpoint.
    Introspect,
    /// Handed the fresh verdict to the store; it is remembered and returned
    /// once the write is handed over. Boxed: the other stages are small.
    RecordVerdict(Box<(Verdict, CachedVerdict)>),
    /// Answered. Further steps fail closed.
    Spent,
}

impl Stage {
    fn awaits_answer(&self) -> bool {
        !matches!(
            self,
            Stage::MemoryFirst | Stage::FindEndpoint | Stage::Spent
        )
    }
}

impl std::fmt::Debug for IntrospectionLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionLookup")
            .field("token", &"<redacted>")
            .field("key", &self.key)
            .field("issuer", &self.issuer)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("now", &self.now)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl IntrospectionLookup {
    /// A lookup of `token` (the raw opaque token) for the route whose rules
    /// are `policy`, at `now`. Keeps owned copies of what it needs from
    /// `policy`; the same `policy` must be passed to every step.
    pub fn new(token: &str, policy: &IntrospectionPolicy<'_>, now: i64) -> Self {
        let issuer = match policy.issuers {
            [issuer] => Some(issuer.clone()),
            _ => None,
        };
        IntrospectionLookup {
            token: token.to_owned(),
            key: cache_key(token, policy),
            issuer,
            leeway_seconds: policy.leeway_seconds,
            now,
            stage: Stage::MemoryFirst,
            answer: None,
        }
    }

    /// Advances as far as possible without I/O: the verdict (or why none can
    /// be had), or the next [`Io`] to perform. `memory` is the isolate's,
    /// read and updated here; `config` and `limits` shape the calls.
    ///
    /// Stepping while an [`Io`] is outstanding and unanswered takes the
    /// missing answer as a confused one (fail closed); stepping once
    /// [`Poll::Ready`] has been returned answers
    /// [`IntrospectionUnavailable::Network`].
    pub fn step(
        &mut self,
        memory: &IntrospectionMemory,
        config: &IntrospectionConfig,
        policy: &IntrospectionPolicy<'_>,
        limits: FetchLimits,
    ) -> Poll<Result<Verdict, IntrospectionUnavailable>> {
        loop {
            let answer = self.answer.take().unwrap_or(IoAnswer::Done);
            match std::mem::replace(&mut self.stage, Stage::Spent) {
                Stage::MemoryFirst => {
                    let held = memory.verdicts.borrow().get(&self.key).cloned();
                    if let Some(verdict) =
                        held.and_then(|cached| cached.verdict_at(self.now, self.leeway_seconds))
                    {
                        return Poll::Ready(Ok(verdict));
                    }
                    return self.ask(
                        Stage::ReadStore,
                        Io::KvGet {
                            key: self.key.clone(),
                        },
                    );
                }
                Stage::ReadStore => {
                    let adopted = answer
                        .into_kv()
                        .and_then(|stored| serde_json::from_str::<CachedVerdict>(&stored).ok())
                        .and_then(|cached| {
                            let verdict = cached.verdict_at(self.now, self.leeway_seconds)?;
                            Some((cached, verdict))
                        });
                    if let Some((cached, verdict)) = adopted {
                        memory.remember(self.key.clone(), cached, self.now);
                        return Poll::Ready(Ok(verdict));
                    }
                    // Only calls back off: the caches above stay open.
                    if self.now < *memory.retry_after.borrow() {
                        return Poll::Ready(Err(IntrospectionUnavailable::BackingOff));
                    }
                    self.stage = Stage::FindEndpoint;
                }
                Stage::FindEndpoint => {
                    if let Some(endpoint) = &config.endpoint {
                        return self.post(endpoint.clone(), memory, config, limits);
                    }
                    let remembered = memory.discovered_endpoint.borrow().clone();
                    if let Some(endpoint) = remembered {
                        return self.post(endpoint, memory, config, limits);
                    }
                    let Some(issuer) = &self.issuer else {
                        return self.fail(memory, IntrospectionUnavailable::NoEndpoint);
                    };
                    let untried = discovery_urls(issuer).into_iter();
                    match self.next_discovery(untried, limits) {
                        Some(poll) => return poll,
                        None => return self.fail(memory, IntrospectionUnavailable::NoEndpoint),
                    }
                }
                Stage::DiscoverEndpoint { untried } => {
                    let found = match (answer.into_fetched(), &self.issuer) {
                        (Ok(document), Some(issuer)) if document.status == 200 => {
                            introspection_endpoint_from_metadata(&document.body, issuer)
                        }
                        // A failed or refused candidate: try the next.
                        _ => None,
                    };
                    if let Some(endpoint) = found {
                        *memory.discovered_endpoint.borrow_mut() = Some(endpoint.clone());
                        return self.post(endpoint, memory, config, limits);
                    }
                    match self.next_discovery(untried, limits) {
                        Some(poll) => return poll,
                        None => return self.fail(memory, IntrospectionUnavailable::NoEndpoint),
                    }
                }
                Stage::Introspect => {
                    let judged = answer
                        .into_fetched()
                        .map_err(|error| match error {
                            FetchError::Network => IntrospectionUnavailable::Network,
                            FetchError::Timeout => IntrospectionUnavailable::Timeout,
                            FetchError::TooLarge => IntrospectionUnavailable::TooLarge,
                        })
                        .and_then(|document| judge(&document, policy, self.now));
                    let verdict = match judged {
                        Ok(verdict) => verdict,
                        Err(error) => return self.fail(memory, error),
                    };
                    let lifetime = cache_lifetime(&verdict, config.ttl_seconds, self.now);
                    if lifetime <= 0 {
                        return Poll::Ready(Ok(verdict));
                    }
                    let cached = CachedVerdict::new(&verdict, self.now + lifetime);
                    let Ok(value) = serde_json::to_string(&cached) else {
                        memory.remember(self.key.clone(), cached, self.now);
                        return Poll::Ready(Ok(verdict));
                    };
                    return self.ask(
                        Stage::RecordVerdict(Box::new((verdict, cached))),
                        Io::KvPut {
                            key: self.key.clone(),
                            value,
                            ttl_seconds: u64::try_from(lifetime).unwrap_or(60),
                        },
                    );
                }
                Stage::RecordVerdict(fresh) => {
                    let (verdict, cached) = *fresh;
                    // Whatever the driver says, the write is its business now.
                    memory.remember(self.key.clone(), cached, self.now);
                    return Poll::Ready(Ok(verdict));
                }
                Stage::Spent => return Poll::Ready(Err(IntrospectionUnavailable::Network)),
            }
        }
    }

    /// Hands the machine the outcome of the [`Io`] its last step asked for.
    /// An answer nobody asked for is ignored.
    pub fn resume(&mut self, answer: IoAnswer) {
        if self.stage.awaits_answer() {
            self.answer = Some(answer);
        }
    }

    fn ask(&mut self, stage: Stage, io: Io) -> Poll<Result<Verdict, IntrospectionUnavailable>> {
        self.stage = stage;
        Poll::Need(io)
    }

    /// A failed call: answered as unavailable, never cached, and no call is
    /// made for [`BACKOFF_SECONDS`] so a struggling server is not hammered.
    fn fail(
        &mut self,
        memory: &IntrospectionMemory,
        error: IntrospectionUnavailable,
    ) -> Poll<Result<Verdict, IntrospectionUnavailable>> {
        *memory.retry_after.borrow_mut() = self.now + BACKOFF_SECONDS;
        self.stage = Stage::Spent;
        Poll::Ready(Err(error))
    }

    fn next_discovery(
        &mut self,
        mut untried: std::vec::IntoIter<Url>,
        limits: FetchLimits,
    ) -> Option<Poll<Result<Verdict, IntrospectionUnavailable>>> {
        let url = untried.next()?;
        Some(self.ask(Stage::DiscoverEndpoint { untried }, Io::Get { url, limits }))
    }

    /// Posts the token with the gate's client authentication (RFC 7662
    /// §2.1). Without credentials there is no call to make.
    fn post(
        &mut self,
        endpoint: Url,
        memory: &IntrospectionMemory,
        config: &IntrospectionConfig,
        limits: FetchLimits,
    ) -> Poll<Result<Verdict, IntrospectionUnavailable>> {
        let Some(client) = &config.client else {
            return self.fail(memory, IntrospectionUnavailable::NoEndpoint);
        };
        let request = build_request(&self.token, client);
        // Posted once, needed no more: the machine keeps no copy.
        self.token = String::new();
        self.ask(
            Stage::Introspect,
            Io::PostForm {
                url: endpoint,
                body: request.body,
                authorization: request.authorization,
                limits,
            },
        )
    }
}

/// The verdict in an introspection response; anything but a 200 is the
/// server failing, not the token.
fn judge(
    document: &FetchedDocument,
    policy: &IntrospectionPolicy<'_>,
    now: i64,
) -> Result<Verdict, IntrospectionUnavailable> {
    if document.status != 200 {
        return Err(IntrospectionUnavailable::Status(document.status));
    }
    judge_response(&document.body, policy, now)
}

/// Reads `introspection_endpoint` from authorization server metadata whose
/// `issuer` is the configured one (RFC 8414 §3.3); `https`, or `http` for a
/// loopback issuer in local development.
pub fn introspection_endpoint_from_metadata(document: &[u8], issuer: &str) -> Option<Url> {
    let (metadata_issuer, endpoint) =
        crate::verify::keys::issuer_and(document, "introspection_endpoint")?;
    if metadata_issuer != issuer {
        return None;
    }
    let url = crate::io::parse_url(&endpoint)?;
    let local = Url::parse(issuer).is_ok_and(|i| i.scheme() == "http");
    match url.scheme() {
        "https" => Some(url),
        "http" if local && crate::verify::keys::is_loopback_host(&url) => Some(url),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::introspect::{ClientAuthMethod, IntrospectionClient, IntrospectionRefusal};

    const NOW: i64 = 1_800_000_000;

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

    /// The token the cache tests introspect.
    const OPAQUE_TOKEN: &str = "opaque-token";

    fn active(exp: i64) -> (u16, String) {
        (
            200,
            format!(r#"{{"active":true,"aud":"https://mcp.example/mcp","sub":"u","exp":{exp}}}"#),
        )
    }

    fn inactive() -> (u16, String) {
        (200, r#"{"active":false}"#.into())
    }

    #[test]
    fn one_call_serves_many_requests_until_the_ttl() {
        let memory = IntrospectionMemory::default();
        let config = settings(Some(ENDPOINT));
        let mut script = answering(active(NOW + 3600));
        for offset in 0..60 {
            assert!(script
                .drive(&memory, &config, OPAQUE_TOKEN, NOW + offset)
                .unwrap()
                .is_ok());
        }
        assert_eq!(script.posts(), 1);
        // Revoked at the authorization server: seen once the cached verdict expires.
        script.post = Some(Ok(document(inactive())));
        assert_eq!(
            script
                .drive(&memory, &config, OPAQUE_TOKEN, NOW + 60)
                .unwrap(),
            Err(IntrospectionRefusal::Inactive)
        );
        assert_eq!(script.posts(), 2);
        // Another isolate reads the shared store instead of calling.
        let other = IntrospectionMemory::default();
        assert!(script
            .drive(&other, &config, OPAQUE_TOKEN, NOW + 61)
            .unwrap()
            .is_err());
        assert_eq!(script.posts(), 2);
    }

    #[test]
    fn cached_tokens_never_outlive_their_exp() {
        let memory = IntrospectionMemory::default();
        let config = settings(Some(ENDPOINT));
        let mut script = answering(active(NOW + 10));
        assert!(script
            .drive(&memory, &config, OPAQUE_TOKEN, NOW)
            .unwrap()
            .is_ok());
        script.post = Some(Ok(document(inactive())));
        assert!(script
            .drive(&memory, &config, OPAQUE_TOKEN, NOW + 10)
            .unwrap()
            .is_err());
        assert_eq!(script.posts(), 2);
    }

    #[test]
    fn failures_are_unavailable_not_refusals_and_back_off() {
        let memory = IntrospectionMemory::default();
        let config = settings(Some(ENDPOINT));
        let mut script = Script {
            post: Some(Err(FetchError::Timeout)),
            ..Script::default()
        };
        assert_eq!(
            script.drive(&memory, &config, OPAQUE_TOKEN, NOW),
            Err(IntrospectionUnavailable::Timeout)
        );
        assert_eq!(
            script.drive(&memory, &config, OPAQUE_TOKEN, NOW + 1),
            Err(IntrospectionUnavailable::BackingOff)
        );
        script.post = Some(Ok(document((500, "{}".into()))));
        assert_eq!(
            script.drive(&memory, &config, OPAQUE_TOKEN, NOW + 2),
            Err(IntrospectionUnavailable::Status(500))
        );
        script.post = Some(Ok(document((200, "<html>".into()))));
        assert_eq!(
            script.drive(&memory, &config, OPAQUE_TOKEN, NOW + 4),
            Err(IntrospectionUnavailable::Invalid)
        );
        assert!(script.kv.is_empty(), "failures are not cached");
        assert_eq!(script.posts(), 3, "none while backing off");
    }

    #[test]
    fn the_endpoint_is_discovered_from_the_issuer_metadata() {
        let memory = IntrospectionMemory::default();
        let mut script = answering(active(NOW + 100));
        script.gets.insert(
            "https://as.example/.well-known/oauth-authorization-server".into(),
            Ok(document((
                200,
                format!(
                    r#"{{"issuer":"https://as.example","introspection_endpoint":"{ENDPOINT}"}}"#
                ),
            ))),
        );
        assert!(script
            .drive(&memory, &settings(None), OPAQUE_TOKEN, NOW)
            .unwrap()
            .is_ok());
        assert_eq!(script.posts(), 1);
        assert!(script.kv.keys().all(|k| !k.contains(OPAQUE_TOKEN)));
        assert_eq!(
            introspection_endpoint_from_metadata(
                br#"{"issuer":"https://other.example","introspection_endpoint":"https://as.example/i"}"#,
                "https://as.example"
            ),
            None
        );
    }

    /// A scripted driver: answers each [`Io`] from fixed maps and records
    /// every call, so the tests see exactly what the machine asked for.
    #[derive(Default)]
    struct Script {
        /// Answers to GETs, by URL; an unlisted URL is a 404.
        gets: HashMap<String, Result<FetchedDocument, FetchError>>,
        /// The answer to every POST.
        post: Option<Result<FetchedDocument, FetchError>>,
        /// The shared store, read and written.
        kv: HashMap<String, String>,
        /// Answer every Io with the wrong kind of answer.
        confused: bool,
        calls: Vec<Io>,
    }

    impl Script {
        fn answer(&mut self, io: &Io) -> IoAnswer {
            if self.confused {
                return match io {
                    Io::Get { .. } | Io::PostForm { .. } => {
                        IoAnswer::Kv(Some(active(NOW + 3600).1))
                    }
                    Io::KvGet { .. } | Io::KvPut { .. } | Io::Sleep { .. } => {
                        IoAnswer::Fetched(Ok(document(active(NOW + 3600))))
                    }
                };
            }
            match io {
                Io::Get { url, .. } => IoAnswer::Fetched(
                    self.gets
                        .get(url.as_str())
                        .cloned()
                        .unwrap_or(Ok(document((404, String::new())))),
                ),
                Io::PostForm { .. } => {
                    IoAnswer::Fetched(self.post.clone().unwrap_or(Err(FetchError::Network)))
                }
                Io::KvGet { key } => IoAnswer::Kv(self.kv.get(key).cloned()),
                Io::KvPut { key, value, .. } => {
                    self.kv.insert(key.clone(), value.clone());
                    IoAnswer::Done
                }
                Io::Sleep { .. } => IoAnswer::Done,
            }
        }

        /// Runs a fresh lookup of `token` to its end; the calls it made are
        /// those added to `self.calls`.
        fn drive(
            &mut self,
            memory: &IntrospectionMemory,
            config: &IntrospectionConfig,
            token: &str,
            now: i64,
        ) -> Result<Verdict, IntrospectionUnavailable> {
            let (issuers, audiences) = route();
            let policy = IntrospectionPolicy {
                issuers: &issuers,
                audiences: &audiences,
                leeway_seconds: 0,
            };
            let mut lookup = IntrospectionLookup::new(token, &policy, now);
            for _ in 0..16 {
                match lookup.step(memory, config, &policy, FetchLimits::default()) {
                    Poll::Ready(result) => return result,
                    Poll::Need(io) => {
                        let answer = self.answer(&io);
                        self.calls.push(io);
                        lookup.resume(answer);
                    }
                }
            }
            panic!("the lookup never finished: {lookup:?}");
        }

        fn kinds(&self) -> Vec<&'static str> {
            self.calls.iter().map(kind).collect()
        }

        /// How many times the token was posted; each post must go to the
        /// configured endpoint, carry the token in its form and the gate's
        /// Basic credentials.
        fn posts(&self) -> usize {
            self.calls
                .iter()
                .filter(|io| match io {
                    Io::PostForm {
                        url,
                        body,
                        authorization,
                        ..
                    } => {
                        assert_eq!(url.as_str(), ENDPOINT);
                        assert!(body.starts_with("token="));
                        assert!(authorization
                            .as_deref()
                            .is_some_and(|a| a.starts_with("Basic ")));
                        true
                    }
                    _ => false,
                })
                .count()
        }
    }

    fn kind(io: &Io) -> &'static str {
        match io {
            Io::Get { .. } => "Get",
            Io::PostForm { .. } => "PostForm",
            Io::KvGet { .. } => "KvGet",
            Io::KvPut { .. } => "KvPut",
            Io::Sleep { .. } => "Sleep",
        }
    }

    fn route() -> ([String; 1], [String; 1]) {
        (
            ["https://as.example".to_owned()],
            ["https://mcp.example/mcp".to_owned()],
        )
    }

    fn document((status, body): (u16, String)) -> FetchedDocument {
        FetchedDocument {
            status,
            body: body.into_bytes(),
            ..FetchedDocument::default()
        }
    }

    fn answering(post: (u16, String)) -> Script {
        Script {
            post: Some(Ok(document(post))),
            ..Script::default()
        }
    }

    const ENDPOINT: &str = "https://as.example/introspect";

    #[test]
    fn a_fresh_verdict_in_memory_needs_no_io() {
        let memory = IntrospectionMemory::default();
        let config = settings(Some(ENDPOINT));
        let mut script = answering(active(NOW + 3600));
        assert!(script.drive(&memory, &config, "t", NOW).unwrap().is_ok());
        assert_eq!(script.kinds(), ["KvGet", "PostForm", "KvPut"]);
        script.calls.clear();
        assert!(script
            .drive(&memory, &config, "t", NOW + 59)
            .unwrap()
            .is_ok());
        assert!(script.calls.is_empty(), "{:?}", script.calls);
        // Past its lifetime the memory is not trusted: the store is asked.
        script.kv.clear();
        assert!(script
            .drive(&memory, &config, "t", NOW + 60)
            .unwrap()
            .is_ok());
        assert_eq!(script.kinds(), ["KvGet", "PostForm", "KvPut"]);
    }

    #[test]
    fn a_store_hit_needs_exactly_one_read_and_is_adopted() {
        let config = settings(Some(ENDPOINT));
        let mut script = answering(active(NOW + 3600));
        script
            .drive(&IntrospectionMemory::default(), &config, "t", NOW)
            .unwrap()
            .unwrap();
        // Another isolate, with empty memory.
        let memory = IntrospectionMemory::default();
        script.calls.clear();
        script.post = None;
        assert!(script
            .drive(&memory, &config, "t", NOW + 1)
            .unwrap()
            .is_ok());
        assert_eq!(script.kinds(), ["KvGet"]);
        script.calls.clear();
        assert!(script
            .drive(&memory, &config, "t", NOW + 2)
            .unwrap()
            .is_ok());
        assert!(script.calls.is_empty(), "adopted into memory");
    }

    #[test]
    fn a_miss_discovers_the_endpoint_then_posts_then_records() {
        let memory = IntrospectionMemory::default();
        let config = settings(None);
        let mut script = answering(active(NOW + 3600));
        // RFC 8414 metadata is missing (404); OpenID Connect Discovery names it.
        script.gets.insert(
            "https://as.example/.well-known/openid-configuration".into(),
            Ok(document((
                200,
                format!(
                    r#"{{"issuer":"https://as.example","introspection_endpoint":"{ENDPOINT}"}}"#
                ),
            ))),
        );
        assert!(script.drive(&memory, &config, "t", NOW).unwrap().is_ok());
        assert_eq!(script.kinds(), ["KvGet", "Get", "Get", "PostForm", "KvPut"]);
        let Io::Get { url, .. } = &script.calls[1] else {
            unreachable!()
        };
        assert_eq!(
            url.as_str(),
            "https://as.example/.well-known/oauth-authorization-server"
        );
        let Io::PostForm {
            url, authorization, ..
        } = &script.calls[3]
        else {
            unreachable!()
        };
        assert_eq!(url.as_str(), ENDPOINT);
        assert!(authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")));
        let Io::KvPut { ttl_seconds, .. } = &script.calls[4] else {
            unreachable!()
        };
        assert_eq!(*ttl_seconds, 60);
        // The discovered endpoint is remembered by the isolate.
        script.calls.clear();
        script.kv.clear();
        assert!(script.drive(&memory, &config, "u", NOW).unwrap().is_ok());
        assert_eq!(script.kinds(), ["KvGet", "PostForm", "KvPut"]);
    }

    #[test]
    fn undiscoverable_endpoints_and_several_issuers_are_no_endpoint() {
        let memory = IntrospectionMemory::default();
        let mut script = answering(active(NOW + 3600));
        assert_eq!(
            script.drive(&memory, &settings(None), "t", NOW),
            Err(IntrospectionUnavailable::NoEndpoint)
        );
        assert_eq!(script.kinds(), ["KvGet", "Get", "Get"]);
        // Several issuers: none speaks for the endpoint, so nothing is fetched.
        let issuers = [
            "https://a.example".to_owned(),
            "https://b.example".to_owned(),
        ];
        let audiences = ["https://mcp.example/mcp".to_owned()];
        let policy = IntrospectionPolicy {
            issuers: &issuers,
            audiences: &audiences,
            leeway_seconds: 0,
        };
        let memory = IntrospectionMemory::default();
        let mut lookup = IntrospectionLookup::new("t", &policy, NOW);
        let config = settings(None);
        let Poll::Need(Io::KvGet { .. }) =
            lookup.step(&memory, &config, &policy, FetchLimits::default())
        else {
            panic!("the store comes first");
        };
        lookup.resume(IoAnswer::Kv(None));
        assert!(matches!(
            lookup.step(&memory, &config, &policy, FetchLimits::default()),
            Poll::Ready(Err(IntrospectionUnavailable::NoEndpoint))
        ));
    }

    #[test]
    fn a_failure_backs_off_and_is_not_recorded() {
        let memory = IntrospectionMemory::default();
        let config = settings(Some(ENDPOINT));
        let mut script = Script {
            post: Some(Err(FetchError::TooLarge)),
            ..Script::default()
        };
        assert_eq!(
            script.drive(&memory, &config, "t", NOW),
            Err(IntrospectionUnavailable::TooLarge)
        );
        assert_eq!(script.kinds(), ["KvGet", "PostForm"]);
        script.calls.clear();
        script.post = Some(Ok(document(active(NOW + 3600))));
        // Within the backoff the store is still read, but no call is made.
        assert_eq!(
            script.drive(&memory, &config, "t", NOW + BACKOFF_SECONDS - 1),
            Err(IntrospectionUnavailable::BackingOff)
        );
        assert_eq!(script.kinds(), ["KvGet"]);
        script.calls.clear();
        assert!(script
            .drive(&memory, &config, "t", NOW + BACKOFF_SECONDS)
            .unwrap()
            .is_ok());
        assert_eq!(script.kinds(), ["KvGet", "PostForm", "KvPut"]);
    }

    #[test]
    fn the_token_appears_only_in_the_posted_body() {
        const TOKEN: &str = "secret-opaque-token-4f1c";
        let memory = IntrospectionMemory::default();
        let mut script = answering(active(NOW + 3600));
        script.gets.insert(
            "https://as.example/.well-known/oauth-authorization-server".into(),
            Ok(document((
                200,
                format!(
                    r#"{{"issuer":"https://as.example","introspection_endpoint":"{ENDPOINT}"}}"#
                ),
            ))),
        );
        let issuers = ["https://as.example".to_owned()];
        let audiences = ["https://mcp.example/mcp".to_owned()];
        let policy = IntrospectionPolicy {
            issuers: &issuers,
            audiences: &audiences,
            leeway_seconds: 0,
        };
        let lookup = IntrospectionLookup::new(TOKEN, &policy, NOW);
        // Held by a JS driver across awaits: it must own all it keeps.
        fn owned<T: 'static>(_: &T) {}
        owned(&lookup);
        assert!(!format!("{lookup:?}").contains(TOKEN));
        assert!(script
            .drive(&memory, &settings(None), TOKEN, NOW)
            .unwrap()
            .is_ok());
        assert_eq!(script.kinds(), ["KvGet", "Get", "PostForm", "KvPut"]);
        for io in &script.calls {
            match io {
                Io::KvGet { key } => assert!(!key.contains(TOKEN)),
                Io::KvPut { key, value, .. } => {
                    assert!(!key.contains(TOKEN) && !value.contains(TOKEN));
                }
                Io::Get { url, .. } => assert!(!url.as_str().contains(TOKEN)),
                Io::PostForm {
                    url,
                    body,
                    authorization,
                    ..
                } => {
                    assert!(body.contains(TOKEN));
                    assert!(!url.as_str().contains(TOKEN));
                    assert!(!authorization.as_deref().unwrap_or_default().contains(TOKEN));
                }
                Io::Sleep { .. } => panic!("nothing to wait for"),
            }
        }
    }

    #[test]
    fn a_confused_driver_fails_closed() {
        // Every answer of the wrong kind: the store read is a miss, the
        // fetches are network failures; never an active verdict.
        let memory = IntrospectionMemory::default();
        let mut script = Script {
            confused: true,
            ..Script::default()
        };
        assert_eq!(
            script.drive(&memory, &settings(Some(ENDPOINT)), "t", NOW),
            Err(IntrospectionUnavailable::Network)
        );
        assert_eq!(script.kinds(), ["KvGet", "PostForm"]);
        let memory = IntrospectionMemory::default();
        assert_eq!(
            script.drive(&memory, &settings(None), "t", NOW),
            Err(IntrospectionUnavailable::NoEndpoint)
        );
        // Steps without answers, and steps after the end, fail closed too.
        let (issuers, audiences) = route();
        let policy = IntrospectionPolicy {
            issuers: &issuers,
            audiences: &audiences,
            leeway_seconds: 0,
        };
        let (memory, config) = (IntrospectionMemory::default(), settings(Some(ENDPOINT)));
        let limits = FetchLimits::default();
        let mut lookup = IntrospectionLookup::new("t", &policy, NOW);
        assert!(matches!(
            lookup.step(&memory, &config, &policy, limits),
            Poll::Need(Io::KvGet { .. })
        ));
        assert!(matches!(
            lookup.step(&memory, &config, &policy, limits),
            Poll::Need(Io::PostForm { .. })
        ));
        assert!(matches!(
            lookup.step(&memory, &config, &policy, limits),
            Poll::Ready(Err(IntrospectionUnavailable::Network))
        ));
        lookup.resume(IoAnswer::Fetched(Ok(document(active(NOW + 3600)))));
        assert!(matches!(
            lookup.step(&memory, &config, &policy, limits),
            Poll::Ready(Err(IntrospectionUnavailable::Network))
        ));
        assert!(memory.verdicts.borrow().is_empty());
    }
}
