//! The gate's decision in synchronous passes, for a runtime where awaiting
//! is what costs (the Workers fast path, `src/fast.rs`).
//!
//! A pass makes the same decision as [`crate::flow::gate::decide`] followed by the
//! session and JSON-RPC checks (MCP authorization 2025-06-18 §Token
//! Handling; MCP transports §Session Management), but never waits: the core
//! is polled once with ports that answer from isolate memory or never. If it
//! completes, that is the decision the full path would make from the same
//! state. If it waits, the pass says for what: a signature check, the owner
//! of a session, the request body (steps the caller performs and answers in
//! the next pass), or anything else (a key set or introspection fetch, a key
//! not yet imported, a stale key set to refresh, a `tools/list` answer to
//! filter), which is the full path's to do.
//!
//! Nothing here forwards anything: a [`Step::Forward`] describes the one
//! request the caller may send, with the headers [`crate::forward::origin`] built
//! (the client's token removed, the identity set by the gate).
//!
//! A new token costs one pass, not two: the first pass decides as if its
//! signature were good and hands the check out together with what that
//! decision needs next ([`AfterVerify`]). Nothing decided that way is
//! remembered or sent until the caller has the verdict: the token cache's
//! writes are held back ([`Remember`]), and a forward is only described to
//! the caller through [`AfterVerify::Forward`], which it may act on after a
//! good verdict alone (`src/fast.rs` keeps it out of JavaScript's reach
//! until then). A bad verdict goes through another pass, which refuses.

use std::cell::RefCell;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

use crate::authorize::sessions::{is_valid_session_id, may_use_session, session_key, SessionOwner};
use crate::config::{Config, Route};
use crate::flow::gate::{authorize_rpc, decide, Decision, GateRequest, Outcome};
use crate::forward::origin::OriginRequest;
use crate::forward::reply::{with_cors, Denial};
use crate::verify::introspect_cache::{IntrospectionCache, IntrospectionMemory};
use crate::verify::jwk::{JwsAlgorithm, PublicKey};
use crate::verify::jwt::{AccessToken, TokenError};
use crate::verify::keys::{
    FetchError, FetchLimits, FetchedDocument, HttpClient, JwksCache, KeyMemory, KvStore,
};
use crate::verify::signature::SignatureVerifier;
use crate::verify::token_cache::{TokenKey, TokenMemory, VerifiedTokens};
use futures_util::FutureExt;

/// What the isolate keeps that a pass may read.
pub struct Memory<'a> {
    /// Key sets.
    pub keys: &'a Rc<KeyMemory>,
    /// Introspection verdicts.
    pub introspection: &'a IntrospectionMemory,
    /// Verified tokens and remembered refusals.
    pub tokens: &'a VerifiedTokens,
}

/// Whether the signature backend can check a key now, without waiting.
pub trait ImportedKeys {
    /// `Some(true)`: ready; `Some(false)`: the backend refused the key (it
    /// never verifies); `None`: not prepared yet.
    fn readiness(&self, alg: JwsAlgorithm, key: &PublicKey) -> Option<bool>;
}

/// What the caller learned for earlier passes of the same request.
#[derive(Debug, Default)]
pub struct Answers {
    /// The fingerprint of the check a [`Step::Verify`] asked for, and whether
    /// the signature verified.
    pub verdict: Option<(u32, bool)>,
    /// Once read for a [`Step::Session`]: the stored owner, if any.
    pub session: Option<Option<String>>,
    /// The body, once read for a [`Step::Body`].
    pub body: Option<Vec<u8>>,
    /// Sending the described request to the origin failed.
    pub origin_failed: bool,
    /// The session id the origin's answer carries.
    pub origin_session: Option<String>,
}

/// What to do next.
#[derive(Debug)]
pub enum Step {
    /// Serve the request with the full path (with the body, if read).
    Full,
    /// Send `request` to the origin and stream its answer back.
    Forward {
        /// For the log.
        decision: Decision,
        /// What to send.
        request: OriginRequest,
    },
    /// Answer with this.
    Reply {
        /// For the log.
        decision: Decision,
        /// Status code.
        status: u16,
        /// Header fields, CORS included.
        headers: Vec<(String, String)>,
        /// Body (may be empty).
        body: String,
    },
    /// Check this signature; then what `then` says.
    Verify {
        /// The check.
        check: Check,
        /// What a good verdict leads to.
        then: AfterVerify,
    },
    /// Read the store at `key`, then pass again with what it holds.
    Session {
        /// Store key.
        key: String,
    },
    /// Record the owner of the session the origin's answer issued, then
    /// pass the answer on.
    Bind {
        /// Where to record the owner; `None` when the id is not one the gate tracks.
        record: Option<SessionRecord>,
    },
    /// Read the body (its declared length is within the limit), then pass
    /// again with it.
    Body,
}

/// A signature to check.
#[derive(Debug, Clone)]
pub struct Check {
    /// Algorithm.
    pub alg: JwsAlgorithm,
    /// The key the key set and the allow-list chose.
    pub key: PublicKey,
    /// The JWS signing input.
    pub message: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
    /// Names this check in [`Answers::verdict`].
    pub fingerprint: u32,
}

/// What the decision made as if the signature were good asks for next.
#[derive(Debug)]
pub enum AfterVerify {
    /// Pass again with the verdict.
    PassAgain,
    /// Read the body as well (its declared length is within the limit),
    /// then pass again with both.
    ReadBody,
    /// Read the store at `key` as well, then pass again with both.
    ReadSession {
        /// Store key.
        key: String,
    },
    /// If, and only if, the signature verifies: remember the token, then
    /// send the request to the origin. Otherwise pass again with the verdict.
    Forward(Box<ProvisionalForward>),
}

/// A forward decided as if the signature were good.
#[derive(Debug)]
pub struct ProvisionalForward {
    /// For the log.
    pub decision: Decision,
    /// What to send.
    pub request: OriginRequest,
    /// The verification to remember (`None`: a token without `kid`, which
    /// is never remembered).
    pub remember: Option<Remember>,
}

/// A verification the token cache takes once its signature is known good.
#[derive(Debug, Clone)]
pub struct Remember {
    key: TokenKey,
    token: AccessToken,
    kid: Option<String>,
    at: i64,
}

impl Remember {
    /// Remembers the verification in `tokens`. Call only after the
    /// signature verified.
    pub fn commit(self, tokens: &VerifiedTokens) {
        tokens.insert(&self.key, &self.token, self.kid.as_deref(), self.at);
    }
}

/// The owner of a session the origin just issued, to store unless one is
/// stored already (first owner wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRecord {
    /// Store key.
    pub key: String,
    /// The owner, as JSON.
    pub owner: String,
    /// How long to keep it.
    pub ttl_seconds: u64,
}

/// One pass over `request` at `now`.
pub fn pass<R: ImportedKeys>(
    config: &Config,
    memory: &Memory<'_>,
    request: &GateRequest<'_>,
    answers: &Answers,
    imported: &R,
    now: i64,
) -> Step {
    let keys = JwksCache::new(
        Rc::clone(memory.keys),
        Unavailable,
        Unavailable,
        config.key_cache,
    );
    let introspector = IntrospectionCache {
        memory: memory.introspection,
        http: Unavailable,
        store: Unavailable,
        config: &config.introspection,
        limits: config.key_cache.limits,
    };
    let verifier = Deferred {
        known: answers.verdict,
        imported,
        asked: RefCell::new(None),
    };
    let held = HeldWrites {
        tokens: memory.tokens,
        insert: RefCell::new(None),
        refusals: RefCell::new(Vec::new()),
    };
    let decided =
        decide(config, request, &keys, &introspector, &verifier, &held, now).now_or_never();
    let Some(decision) = decided else {
        // Waiting for a check the backend cannot make yet, or for the network.
        return Step::Full;
    };
    // A stale key set was served: the full path refreshes it after answering.
    if !keys.take_pending_refreshes().is_empty() {
        return Step::Full;
    }
    let step = next_step(config, request, answers, decision);
    let Some(check) = verifier.asked.take() else {
        // Every verdict this decision rests on is known: keep what it learned.
        held.commit();
        return step;
    };
    // Decided as if the signature were good: nothing of it is kept yet.
    let then = match step {
        // The full path checks the signature itself: checking it here first
        // would only do it twice.
        Step::Full => return Step::Full,
        Step::Forward { decision, request } => AfterVerify::Forward(Box::new(ProvisionalForward {
            decision,
            request,
            remember: held.insert.take(),
        })),
        Step::Body => AfterVerify::ReadBody,
        Step::Session { key } => AfterVerify::ReadSession { key },
        _ => AfterVerify::PassAgain,
    };
    Step::Verify { check, then }
}

/// What follows a completed decision: the answer, or the session and body
/// checks and then the forward (or the binding of the session it opened).
fn next_step(
    config: &Config,
    request: &GateRequest<'_>,
    answers: &Answers,
    mut decision: Decision,
) -> Step {
    let route = decision.route.and_then(|index| config.routes.get(index));
    let (forward, route) = match (&decision.outcome, route) {
        (Outcome::Reply(_), _) => return reply(decision),
        (Outcome::Forward(forward), Some(route)) => (forward.clone(), route),
        (Outcome::Forward(_), None) => return Step::Full,
    };
    match admit(config, route, request, answers, &mut decision) {
        Admission::Forward => {}
        Admission::ReadSession(key) => return Step::Session { key },
        Admission::ReadBody => return Step::Body,
        Admission::Full => return Step::Full,
        Admission::Refuse(denial) => {
            decision.refuse(&denial, route);
            return reply(decision);
        }
    }
    if let Some(session_id) = &answers.origin_session {
        let record = decision
            .token
            .as_ref()
            .filter(|_| is_valid_session_id(session_id))
            .map(|token| SessionRecord {
                key: session_key(&route.resource.uri, session_id),
                owner: SessionOwner::of(token).to_json(),
                ttl_seconds: config.session_ttl_seconds.max(60),
            });
        return Step::Bind { record };
    }
    Step::Forward {
        decision,
        request: forward,
    }
}

fn reply(decision: Decision) -> Step {
    let Outcome::Reply(reply) = &decision.outcome else {
        return Step::Full;
    };
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    if let Some(origin) = &decision.cors_origin {
        with_cors(&mut headers, origin);
    }
    let (status, body) = (reply.status, reply.body.clone());
    Step::Reply {
        decision,
        status,
        headers,
        body,
    }
}

/// Whether an authorized request may be forwarded yet.
enum Admission {
    Forward,
    /// The session's owner must be read first, from this store key.
    ReadSession(String),
    /// The body must be read first.
    ReadBody,
    /// The full path must serve it.
    Full,
    /// Refused after all.
    Refuse(Denial),
}

/// The checks after the token (the full path's `prepare_forward`): the
/// session belongs to the token's owner; a POST's body is JSON-RPC the token
/// may send; and the origin was reached.
fn admit(
    config: &Config,
    route: &Route,
    request: &GateRequest<'_>,
    answers: &Answers,
    decision: &mut Decision,
) -> Admission {
    let Some(token) = decision.token.as_ref() else {
        return Admission::Refuse(Denial::Misconfigured);
    };
    if let Some(session_id) = header(request, "mcp-session-id") {
        if !is_valid_session_id(session_id) {
            return Admission::Refuse(Denial::ForeignSession);
        }
        let Some(stored) = &answers.session else {
            let key = session_key(&route.resource.uri, session_id);
            return Admission::ReadSession(key);
        };
        if !may_use_session(stored.as_deref(), token) {
            return Admission::Refuse(Denial::ForeignSession);
        }
    }
    if request.method == "POST" {
        let Some(body) = &answers.body else {
            let declared = header(request, "content-length").map(|v| v.trim().parse::<u64>());
            return match declared {
                Some(Ok(length)) if length > config.max_body_bytes as u64 => {
                    Admission::Refuse(Denial::PayloadTooLarge)
                }
                Some(Ok(_)) => Admission::ReadBody,
                // A body of unknown length is read, bounded, by the full path.
                _ => Admission::Full,
            };
        };
        if body.len() > config.max_body_bytes {
            return Admission::Refuse(Denial::PayloadTooLarge);
        }
        match authorize_rpc(route, request, token, body) {
            // The answer lists tools to filter on its way back: the full path's.
            Ok(plan) if plan.tool_filter.is_some() => return Admission::Full,
            Ok(plan) => decision.audit = Some(plan.audit),
            Err((denial, audit)) => {
                decision.audit = audit;
                return Admission::Refuse(denial);
            }
        }
    }
    if answers.origin_failed {
        return Admission::Refuse(Denial::BadGateway);
    }
    Admission::Forward
}

fn header<'r>(request: &'r GateRequest<'_>, name: &str) -> Option<&'r str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Signature checks answered by the caller between passes. With no
/// verdict known yet, the first check the backend is ready for is taken as
/// good, provisionally, and handed out in [`Step::Verify`].
struct Deferred<'a, R> {
    known: Option<(u32, bool)>,
    imported: &'a R,
    asked: RefCell<Option<Check>>,
}

/// Names a check (algorithm, key, message, signature) across passes, so a
/// verdict is only ever applied to the check it was given for.
fn fingerprint(alg: JwsAlgorithm, key: &PublicKey, message: &[u8], signature: &[u8]) -> u32 {
    let mut hasher = DefaultHasher::new();
    (alg, key, message, signature).hash(&mut hasher);
    hasher.finish() as u32
}

impl<R: ImportedKeys> SignatureVerifier for Deferred<'_, R> {
    async fn verify(
        &self,
        alg: JwsAlgorithm,
        key: &PublicKey,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let check = fingerprint(alg, key, message, signature);
        match self.known {
            Some((known, verdict)) if known == check => return verdict,
            // One check per request in passes; a second is the full path's.
            Some(_) => return std::future::pending().await,
            None if self.asked.borrow().is_some() => return std::future::pending().await,
            None => {}
        }
        match self.imported.readiness(alg, key) {
            Some(false) => false,
            Some(true) => {
                *self.asked.borrow_mut() = Some(Check {
                    alg,
                    key: key.clone(),
                    message: message.to_vec(),
                    signature: signature.to_vec(),
                    fingerprint: check,
                });
                true
            }
            None => std::future::pending().await,
        }
    }
}

/// The isolate's token cache as a pass sees it: read as it is, written only
/// once the pass knows its decision does not rest on a verdict still out.
struct HeldWrites<'a> {
    tokens: &'a VerifiedTokens,
    insert: RefCell<Option<Remember>>,
    refusals: RefCell<Vec<(TokenKey, TokenError, i64)>>,
}

impl HeldWrites<'_> {
    fn commit(self) {
        if let Some(remember) = self.insert.into_inner() {
            remember.commit(self.tokens);
        }
        for (key, error, at) in self.refusals.into_inner() {
            self.tokens.remember_refusal(&key, error, at);
        }
    }
}

impl TokenMemory for HeldWrites<'_> {
    fn get(&self, key: &TokenKey, now: i64, leeway: i64) -> Option<(AccessToken, Option<String>)> {
        self.tokens.get(key, now, leeway)
    }
    fn refusal(&self, key: &TokenKey, now: i64) -> Option<TokenError> {
        self.tokens.refusal(key, now)
    }
    fn remember_refusal(&self, key: &TokenKey, error: TokenError, now: i64) {
        self.refusals.borrow_mut().push((*key, error, now));
    }
    // Forgetting a token whose key left the set needs no verdict.
    fn forget(&self, key: &TokenKey) {
        self.tokens.forget(key);
    }
    fn insert(&self, key: &TokenKey, token: &AccessToken, kid: Option<&str>, now: i64) {
        *self.insert.borrow_mut() = Some(Remember {
            key: *key,
            token: token.clone(),
            kid: kid.map(str::to_owned),
            at: now,
        });
    }
}

/// Outbound HTTP and KV for a pass: they never answer, so a decision that
/// needs them waits, and the request goes to the full path.
struct Unavailable;

impl HttpClient for Unavailable {
    async fn get(&self, _: &url::Url, _: FetchLimits) -> Result<FetchedDocument, FetchError> {
        std::future::pending().await
    }

    async fn post_form(
        &self,
        _: &url::Url,
        _: &str,
        _: Option<&str>,
        _: FetchLimits,
    ) -> Result<FetchedDocument, FetchError> {
        std::future::pending().await
    }

    async fn pause(&self, _: u32) {
        std::future::pending().await
    }
}

impl KvStore for Unavailable {
    async fn get(&self, _: &str) -> Option<String> {
        std::future::pending().await
    }

    async fn put(&self, _: &str, _: &str, _: u64) {
        std::future::pending().await
    }
}

#[cfg(test)]
#[path = "pass_tests.rs"]
mod tests;
