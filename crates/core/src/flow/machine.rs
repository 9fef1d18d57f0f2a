//! One request from arrival to answer, as a single sans-IO state machine.
//!
//! The machine holds no futures and performs no I/O. [`Flow::step`] either
//! names the one thing it needs next ([`Need`]: a KV read or write, a
//! document fetch, a pause, a signature check, the request body, the
//! forward, the origin's body), hands over the answer for the client
//! ([`Step::Respond`]), or says it is finished ([`Step::Done`]). The driver
//! performs the need and gives the outcome back with [`Flow::resume`], then
//! steps again. Time is an input, given once when the request arrives. The
//! same machine is driven on the edge by the JavaScript entry and natively by
//! the scripted driver the tests use, so there is one decision path.
//!
//! The order of the checks is what a prober may learn and what the origin
//! may see (MCP authorization 2025-06-18 / 2025-11-25 / 2026-07-28, "Access
//! Token Usage" and "Token Handling"; RFC 6750 §3; MCP Streamable HTTP
//! transport, "Security Warning" and "Session Management"):
//! 1. route (metadata, a protected resource, or 404), `Origin` and CORS
//!    preflights, then the method;
//! 2. the bearer token (RFC 6750 §2.1): introspected (RFC 7662), or a JWS
//!    (RFC 7515, RFC 9068) found in the verified-token cache or verified
//!    against its issuer's key set (RFC 7517), one signature check at a time;
//!    the address rate limits count before a new token's first check or
//!    introspection call;
//! 3. route scopes; the session's owner; the JSON-RPC body of a POST and the
//!    scopes its messages need; then the identity rate limits, once per
//!    message;
//! 4. the forward, without the client's token; the binding of a session the
//!    origin opens; the answer, with `tools/list` filtered.
//!
//! Invariants the code relies on:
//! - [`Need::Forward`] is only ever produced after every check passed, from
//!   a token whose signature verdict (or introspection verdict) was good,
//!   and after every rate limit count came back within its limit (or failed
//!   under a rule that lets a failure through).
//! - The verified-token cache is written only after a good verdict has been
//!   resumed into the machine; nothing is remembered on the strength of a
//!   verdict still outstanding. Refusals are remembered only once decided.
//! - Isolate memory is touched only inside `step` and `resume`, which run to
//!   completion: a request abandoned between two steps leaves no half-made
//!   write behind (the key set lookup clears its in-flight mark on drop).

use std::rc::Rc;

use crate::authorize::rate_limit::{
    address_counts, identity_counts, judge, Count, Counted, Limited, Unit,
};
use crate::authorize::sessions::{is_valid_session_id, may_use_session, session_key, SessionOwner};
use crate::config::{Config, ConfigError, Route, TokenFormat};
use crate::flow::gate::{
    authorize_rpc, check_revision, target, Decision, Outcome, RequestHead, Target,
    FORWARDED_METHODS,
};
use crate::forward::assertion::{signing_input, Bound, Call, JtiSource, Signing};
use crate::forward::log::request_log;
use crate::forward::origin::{
    client_response_headers, origin_headers, origin_url, OriginFault, OriginRequest,
};
pub use crate::forward::origin::{origin_fields_replaced, ORIGIN_FIELDS_DECIDED};
use crate::forward::reply::{
    assertion_keys_reply, mcp_preflight_reply, metadata_preflight_reply, metadata_reply, with_cors,
    Denial, Reply,
};
use crate::forward::rewrite::{AnswerRewrite, SseRewrite};
use crate::io::{Io, IoAnswer, Poll, StoreFault};
use crate::parse::bearer::{extract_credentials, CredentialCarriers, Scheme};
use crate::parse::jsonrpc::TOOLS_CALL;
use crate::parse::tool_headers::ToolSchemas;
use crate::verify::dpop::{Expected, Proof, ProofError, ReplayStore, SchemeRefusal};
use crate::verify::introspect::{looks_like_jwt, IntrospectionPolicy};
use crate::verify::introspect_cache::{IntrospectionLookup, IntrospectionMemory};
use crate::verify::jwk::{JwsAlgorithm, KeySet, PublicKey};
use crate::verify::jwt::{AccessToken, ClaimsPolicy, TokenError, UnverifiedJwt};
use crate::verify::keys::{KeyDemand, KeyMemory, KeySetLookup, KeySetRefresh, TrustedIssuer};
use crate::verify::replay::ReplayMemory;
use crate::verify::token_cache::{TokenKey, VerifiedTokens};

/// What an isolate keeps between requests: the configuration, parsed once,
/// and the caches every request reads and writes.
pub struct Gate {
    /// The configuration, or why it is refused (then every request is).
    pub config: Result<Config, ConfigError>,
    /// Key sets per issuer.
    pub keys: Rc<KeyMemory>,
    /// Introspection verdicts.
    pub introspection: IntrospectionMemory,
    /// Verified tokens and remembered refusals.
    pub tokens: VerifiedTokens,
    /// The tools' `Mcp-Param-*` marks, learned from `tools/list` answers.
    pub tool_schemas: Rc<ToolSchemas>,
    /// The `jti` of each assertion for the origin.
    pub jtis: JtiSource,
    /// DPoP proofs seen by this isolate.
    pub replays: ReplayMemory,
}

/// How many entries each of an isolate's caches holds: every one is
/// bounded (the bounds are in the README's "Failure behaviour").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheSizes {
    /// Verified tokens (at most `token_cache::DEFAULT_CAPACITY`).
    pub verified_tokens: usize,
    /// Remembered refusals (at most the same capacity).
    pub refused_tokens: usize,
    /// Introspection verdicts (at most `introspect_cache::MAX_CACHED_VERDICTS`).
    pub introspection_verdicts: usize,
    /// Issuers whose key sets are held (at most the configured issuers).
    pub key_sets: usize,
    /// DPoP proofs remembered (at most `replay::MAX_REMEMBERED_PROOFS`).
    pub replay: usize,
}

impl Gate {
    /// The size of each of this gate's caches.
    pub fn cache_sizes(&self) -> CacheSizes {
        CacheSizes {
            verified_tokens: self.tokens.len(),
            refused_tokens: self.tokens.refused_len(),
            introspection_verdicts: self.introspection.len(),
            key_sets: self.keys.len(),
            replay: self.replays.len(),
        }
    }

    /// A gate over `config` with empty caches; `seed`: 32 random bytes,
    /// new for each isolate (the assertions' `jti`s are made from it).
    pub fn new(config: Result<Config, ConfigError>, seed: [u8; 32]) -> Self {
        Gate {
            config,
            keys: Rc::new(KeyMemory::default()),
            introspection: IntrospectionMemory::default(),
            tokens: VerifiedTokens::default(),
            tool_schemas: Rc::default(),
            jtis: JtiSource::new(seed),
            replays: ReplayMemory::default(),
        }
    }
}

/// The request as it arrived, owned by the machine.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// HTTP method, upper case.
    pub method: String,
    /// URL path, as the runtime parsed it.
    pub path: String,
    /// Raw query, without `?`.
    pub query: Option<String>,
    /// Header fields; names in any case.
    pub headers: Vec<(String, String)>,
    /// Scheme and authority as the client sent them (`https://host[:port]`),
    /// which a DPoP proof's `htu` names; `None` when not known.
    pub base: Option<String>,
}

impl Request {
    /// Splits `url` (absolute, as the runtime gives it) into path and query.
    /// `None` when it does not parse.
    pub fn from_url(method: &str, url: &str, headers: Vec<(String, String)>) -> Option<Self> {
        let (path, query, base) = match normal_form(url) {
            Some((path, query)) => {
                // Already serialized by the runtime: scheme and authority are
                // what precedes the path.
                let base = url.strip_suffix(path_and_query(&path, query.as_deref()).as_str());
                (path, query, base.map(str::to_owned))
            }
            None => {
                let parsed = crate::io::parse_url(url)?;
                let base = parsed.origin().ascii_serialization();
                (
                    parsed.path().to_owned(),
                    parsed.query().map(str::to_owned),
                    Some(base),
                )
            }
        };
        Some(Request {
            method: method.to_owned(),
            path,
            query,
            headers,
            base,
        })
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
        }
    }
}

fn path_and_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    }
}

/// Path and query of an `http`/`https` URL that is already in the form the
/// WHATWG URL parser serializes and that the parser would leave as it is:
/// the runtime hands every request's URL over parsed and serialized, so
/// this is the common case, and it spares a second full parse. Only
/// characters the parser copies unchanged are accepted (unreserved ones,
/// `/` in the path, and `=&+%` in the query), never a `.` or `..` path
/// segment, a `%` in the path, or a fragment; anything else returns `None`
/// and is parsed in full. The host is not looked at: the gate routes by
/// path alone.
fn normal_form(url: &str) -> Option<(String, Option<String>)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let path_and_query = &rest[rest.find('/')?..];
    let authority = &rest[..rest.len() - path_and_query.len()];
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let unreserved = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~');
    let authority_plain = !authority.is_empty()
        && authority
            .bytes()
            .all(|c| unreserved(c) || matches!(c, b':' | b'[' | b']'));
    let path_plain = path.bytes().all(|c| unreserved(c) || c == b'/')
        && path
            .split('/')
            .all(|segment| segment != "." && segment != "..");
    let query_plain = query.is_none_or(|query| {
        query
            .bytes()
            .all(|c| unreserved(c) || matches!(c, b'=' | b'&' | b'+' | b'%'))
    });
    (authority_plain && path_plain && query_plain)
        .then(|| (path.to_owned(), query.map(str::to_owned)))
}

/// A signature to check: the key was chosen by the issuer's key set and the
/// allow-list, never by the token's `alg` alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Algorithm.
    pub alg: JwsAlgorithm,
    /// The key.
    pub key: PublicKey,
    /// The JWS signing input.
    pub message: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

/// What the machine needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A fetch, a KV read or write, or a pause (for a key set or an
    /// introspection verdict); answered with [`Answer::Io`].
    Io(Io),
    /// Check a signature; answered with [`Answer::Verdict`].
    Verify(Check),
    /// Read the request body, refusing it past `max_bytes` whatever its
    /// `Content-Length` said; answered with [`Answer::Body`].
    ReadBody {
        /// The cap.
        max_bytes: usize,
        /// The `Content-Length` the client declared (within the cap), if any:
        /// the driver may read such a body whole at once.
        declared: Option<u64>,
    },
    /// Send this to the origin (with its `body` when the gate rewrote the
    /// body, else the body read for [`Need::ReadBody`], if any, else the
    /// client's own body for methods that carry one), its assertion signed
    /// first when it has one; answered with [`Answer::Origin`] (or
    /// [`Answer::Unsigned`]).
    Forward(OriginRequest),
    /// Read the origin's whole body (a JSON answer to rewrite);
    /// answered with [`Answer::OriginBody`].
    ReadOriginBody,
    /// Count each of these with its Rate Limiting binding
    /// (`env[binding].limit({ key })`); answered with [`Answer::Counted`],
    /// one outcome per count, in order.
    RateLimit(Vec<Count>),
    /// Claim a DPoP proof's `jti` (RFC 9449 §11.1) in the Durable Object
    /// replay store bound as `binding`: `key` is remembered until
    /// `expires_at` (unix seconds), and the claim succeeds only for its first
    /// use. Answered with [`Answer::Claimed`].
    ClaimProof {
        /// The Durable Object namespace binding (class `DpopReplay`).
        binding: String,
        /// The proof's key in the store: hex, no secret in it.
        key: String,
        /// Until when the key must be remembered (unix seconds).
        expires_at: i64,
    },
}

/// What the driver resumes the machine with.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The outcome of a [`Need::Io`].
    Io(IoAnswer),
    /// Whether the signature of a [`Need::Verify`] verified.
    Verdict(bool),
    /// Instead of [`Answer::Origin`]: the forward's assertion could not be
    /// signed (WebCrypto could not import or use the key), so nothing was
    /// sent.
    Unsigned,
    /// The body, or why it could not be had.
    Body(Result<Vec<u8>, BodyError>),
    /// The origin's status and header fields, or why it gave none.
    Origin(Result<(u16, Vec<(String, String)>), OriginFault>),
    /// The origin's whole body, or `Err` when it could not be read.
    OriginBody(Result<Vec<u8>, ()>),
    /// The outcomes of a [`Need::RateLimit`], in its order.
    Counted(Vec<Counted>),
    /// The outcome of a [`Need::ClaimProof`]: `Ok(true)` when this was the
    /// key's first use, `Ok(false)` when it was seen before, `Err` when the
    /// store failed or did not answer in time.
    Claimed(Result<bool, ()>),
}

/// Why the request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Past the cap.
    TooLarge,
    /// The stream failed.
    Unreadable,
}

/// The body of the answer to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// These bytes (possibly empty).
    Bytes(Vec<u8>),
    /// The origin's body, streamed through untouched.
    Origin,
    /// The origin's body streamed through [`Flow::filter_chunk`] and
    /// [`Flow::filter_end`] (an answer to rewrite, as Server-Sent Events).
    OriginFiltered,
}

/// The answer to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields, CORS included.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// The request's log line, without `duration_ms` and the closing brace
    /// (the driver measures the duration and closes the line).
    pub log: String,
    /// The headers are the origin's answer's, filtered, with the gate's
    /// added. A driver that gave the machine only the origin's fields named
    /// in [`ORIGIN_FIELDS_DECIDED`] builds the client's header fields as the
    /// origin's without [`origin_fields_replaced`], then `headers` appended:
    /// the same fields as if it had given them all (the machine reads and
    /// replaces no other).
    pub from_origin: bool,
    /// For an event stream from the origin: when the driver must end it
    /// (unix seconds), the moment the token that opened it stops being
    /// accepted. `None`: the body ends when the origin ends it.
    pub ends_at: Option<i64>,
}

/// What to do next.
#[derive(Debug)]
pub enum Step {
    /// Perform this, then [`Flow::resume`] with its answer.
    Need(Need),
    /// Answer the client with this; then keep stepping (background work may
    /// follow, off the request's path).
    Respond(Response),
    /// Nothing more to do; a log line for background work, if any was done.
    Done(Option<String>),
}

/// The stage a request is in.
enum State {
    /// Nothing decided yet.
    Arrived,
    /// Waiting for an introspection verdict.
    Introspecting(Box<IntrospectionLookup>),
    /// Reading (or fetching) the key set of the token's issuer.
    FindingKeys {
        lookup: KeySetLookup,
        wants: Box<KeysFor>,
    },
    /// One signature check is out, for `candidates[next]`.
    Verifying {
        token: Box<UnverifiedJwt>,
        issuer: String,
        candidates: Vec<PublicKey>,
        next: usize,
    },
    /// The DPoP proof's signature check is out; the token is good and bound
    /// to the proof's key.
    ProvingPossession {
        token: Box<AccessToken>,
        until: i64,
        proof: Box<Proof>,
    },
    /// The proof's `jti` is being claimed in the Durable Object store.
    ClaimingProof { token: Box<AccessToken>, until: i64 },
    /// The rate limits are being counted; then `after`.
    Counting {
        counts: Vec<Count>,
        after: Box<AfterCount>,
    },
    /// The token is good: the checks after it.
    Admitting,
    /// The session's owner is being read.
    ReadingSession,
    /// The body is being read.
    ReadingBody,
    /// The forward is out.
    Forwarding,
    /// The origin opened a session: reading whether it is bound already.
    CheckingSession { key: String, head: OriginHead },
    /// Binding the session to the token's owner.
    BindingSession { head: OriginHead },
    /// Reading the origin's JSON answer to rewrite it.
    ReadingOriginBody { head: OriginHead },
    /// The answer is given; running a background key set refresh.
    Refreshing(KeySetRefresh),
    /// Finished.
    Finished,
}

/// What a key set is looked up for.
enum KeysFor {
    /// A cached verification is honoured only while the issuer's current set
    /// still holds the key that verified it.
    CachedToken {
        token: AccessToken,
        kid: Option<String>,
    },
    /// A new token's signature check.
    NewToken {
        demand: KeyDemand,
        token: Box<UnverifiedJwt>,
        issuer: TrustedIssuer,
    },
}

/// What waits for the rate limits to be counted.
enum AfterCount {
    /// A new token's first signature check (an address rule counted).
    Verify {
        token: Box<UnverifiedJwt>,
        issuer: String,
        candidates: Vec<PublicKey>,
    },
    /// An introspection lookup's first call out (an address rule counted).
    Introspect {
        lookup: Box<IntrospectionLookup>,
        io: Io,
    },
    /// The forward (identity rules counted).
    Forward(OriginRequest),
}

/// The origin's answer head, kept while the session is bound.
struct OriginHead {
    status: u16,
    headers: Vec<(String, String)>,
}

/// One request's machine.
pub struct Flow {
    gate: Rc<Gate>,
    request: Request,
    now: i64,
    state: State,
    /// What the log line says; its outcome becomes the answer.
    record: Decision,
    /// The token cache key (JWTs only).
    token_key: Option<TokenKey>,
    /// The bearer token (JWTs only; empty before it is read). Never logged.
    raw_token: String,
    /// The token's scheme.
    scheme: Scheme,
    /// The DPoP proof, checked but for its signature and `jti`, until the
    /// token is known.
    proof: Option<Box<Proof>>,
    /// A fresh DPoP nonce for the answer, when the route takes DPoP and
    /// nonces are on (RFC 9449 §9).
    nonce: Option<String>,
    /// Whether this request fetched the issuer's set already.
    fetched_keys: bool,
    /// Whether the address rules counted this request already.
    address_counted: bool,
    /// A stale set was served: refresh it after answering.
    refresh: Option<TrustedIssuer>,
    /// The forward, built once the token is good.
    forward: Option<OriginRequest>,
    /// The body, once read (POST).
    body: Option<Vec<u8>>,
    /// The body's messages that have a method, for the assertion and the
    /// rate limits.
    calls: Vec<Call>,
    /// The id of the body's single request, for a refusal's JSON-RPC error.
    single_id: Option<serde_json::Value>,
    /// The session's stored owner, once read.
    session_owner: Option<Option<String>>,
    /// Rewrites the origin's answer (`tools/list` filtered, states sealed).
    rewrite: Option<AnswerRewrite>,
    /// Until when the verified token is accepted (unix seconds).
    accepted_until: Option<i64>,
    /// The streaming form of `rewrite`, once answering with SSE.
    sse: Option<SseRewrite>,
    /// A step to hand out before stepping further (the answer, once made).
    ready: Option<Step>,
}

impl Flow {
    /// A machine for `request`, arrived at `now` (seconds since the epoch).
    pub fn new(gate: Rc<Gate>, request: Request, now: i64) -> Self {
        Flow {
            gate,
            request,
            now,
            state: State::Arrived,
            record: Decision::default(),
            token_key: None,
            raw_token: String::new(),
            scheme: Scheme::Bearer,
            proof: None,
            nonce: None,
            fetched_keys: false,
            address_counted: false,
            refresh: None,
            forward: None,
            body: None,
            calls: Vec::new(),
            single_id: None,
            session_owner: None,
            rewrite: None,
            accepted_until: None,
            sse: None,
            ready: None,
        }
    }

    /// What the decision was, for tests and the log: the route, the token,
    /// the audit of the body, the reason, and what was sent or answered.
    pub fn decision(&self) -> &Decision {
        &self.record
    }

    /// The body read for [`Need::ReadBody`], to send with [`Need::Forward`].
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Whether background work follows the answer (a key set refresh).
    pub fn has_background(&self) -> bool {
        self.refresh.is_some()
    }

    /// Whether the machine has nothing left to do: answered, background work
    /// done, no filtered stream still running through it.
    pub fn is_spent(&self) -> bool {
        matches!(self.state, State::Finished)
            && self.ready.is_none()
            && self.refresh.is_none()
            && self.sse.is_none()
    }

    /// Filters one chunk of a [`Body::OriginFiltered`] stream.
    pub fn filter_chunk(&mut self, chunk: &[u8]) -> Vec<u8> {
        match &mut self.sse {
            Some(sse) => sse.push(chunk),
            None => chunk.to_vec(),
        }
    }

    /// What a [`Body::OriginFiltered`] stream holds back at its end.
    pub fn filter_end(&mut self) -> Vec<u8> {
        self.sse
            .take()
            .map(|mut sse| sse.finish())
            .unwrap_or_default()
    }

    /// The next step. Call [`Flow::resume`] after each [`Step::Need`].
    pub fn step(&mut self) -> Step {
        let gate = Rc::clone(&self.gate);
        let config = match &gate.config {
            Ok(config) => config,
            Err(_) if matches!(self.state, State::Arrived) => {
                return self.finish_with(Denial::Misconfigured)
            }
            Err(_) => return Step::Done(None),
        };
        loop {
            // A stage may decide the answer while moving on (a refusal found
            // once the token is known): hand it out before anything else.
            if let Some(step) = self.ready.take() {
                return step;
            }
            match std::mem::replace(&mut self.state, State::Finished) {
                State::Arrived => {
                    if let Some(step) = self.arrive(config) {
                        return step;
                    }
                }
                State::Introspecting(mut lookup) => {
                    let route = self.route(config);
                    let policy = introspection_policy(config, route);
                    match lookup.step(
                        &gate.introspection,
                        &config.introspection,
                        &policy,
                        config.key_cache.limits,
                    ) {
                        Poll::Need(io) => {
                            let calls_out = matches!(io, Io::Get { .. } | Io::PostForm { .. });
                            if calls_out {
                                let after = AfterCount::Introspect { lookup, io };
                                if let Some(step) = self.count_address(config, after) {
                                    return step;
                                }
                                continue;
                            }
                            self.state = State::Introspecting(lookup);
                            return Step::Need(Need::Io(io));
                        }
                        Poll::Ready(Err(error)) => {
                            return self.refuse(config, Denial::IntrospectionUnavailable(error))
                        }
                        Poll::Ready(Ok(Err(refusal))) => {
                            return self.refuse(config, Denial::InactiveToken(refusal))
                        }
                        Poll::Ready(Ok(Ok(token))) => {
                            // The verdict is trusted for the cache's lifetime;
                            // revocation shows at the next introspection.
                            let ttl = config.introspection.ttl_seconds;
                            let until = self.now.saturating_add(ttl).min(token.expires_at);
                            self.authenticated(config, token, until)
                        }
                    }
                }
                State::FindingKeys { mut lookup, wants } => match lookup.step() {
                    Poll::Need(io) => {
                        self.state = State::FindingKeys { lookup, wants };
                        return Step::Need(Need::Io(io));
                    }
                    Poll::Ready(Err(error)) => {
                        return self.refuse(config, Denial::KeysUnavailable(error))
                    }
                    Poll::Ready(Ok(set)) => {
                        self.after_lookup(&lookup);
                        if let Some(step) = self.keys_found(config, *wants, &set) {
                            return step;
                        }
                    }
                },
                State::Verifying {
                    token,
                    issuer,
                    candidates,
                    next,
                } => {
                    // Resumed without a verdict (a driver bug): refuse.
                    let _ = (token, issuer, candidates, next);
                    return self.token_refused(config, TokenError::BadSignature);
                }
                State::Admitting => {
                    if let Some(step) = self.admit(config) {
                        return step;
                    }
                }
                State::ReadingSession
                | State::ReadingBody
                | State::ReadingOriginBody { .. }
                | State::Counting { .. }
                | State::ProvingPossession { .. }
                | State::ClaimingProof { .. } => {
                    // Stepped without the answer it waits for: refuse.
                    return self.finish_with(Denial::Misconfigured);
                }
                State::Forwarding => return self.finish_with(Denial::BadGateway),
                State::CheckingSession { .. } => {
                    // Stepped without the read: the session's id is withheld,
                    // as when the read fails.
                    let denial = Denial::SessionStoreUnavailable(StoreFault::ReadFailed);
                    return self.refuse(config, denial);
                }
                State::BindingSession { .. } => {
                    let denial = Denial::SessionStoreUnavailable(StoreFault::WriteFailed);
                    return self.refuse(config, denial);
                }
                State::Refreshing(mut refresh) => match refresh.step() {
                    Poll::Need(io) => {
                        self.state = State::Refreshing(refresh);
                        return Step::Need(Need::Io(io));
                    }
                    Poll::Ready(result) => {
                        let issuer = self.refresh.take().map(|i| i.issuer).unwrap_or_default();
                        return Step::Done(Some(crate::forward::log::refresh_log(
                            &issuer,
                            result.err().map(|e| e.reason()),
                        )));
                    }
                },
                State::Finished => {
                    if let Some(issuer) = self.refresh.clone() {
                        self.state = State::Refreshing(KeySetRefresh::new(
                            Rc::clone(&gate.keys),
                            config.key_cache,
                            issuer,
                            self.now,
                        ));
                        continue;
                    }
                    return Step::Done(None);
                }
            }
        }
    }

    /// Gives the machine the answer to the need its last step named.
    pub fn resume(&mut self, answer: Answer) {
        let gate = Rc::clone(&self.gate);
        let Ok(config) = &gate.config else {
            return;
        };
        if let Answer::Io(IoAnswer::KvFault(fault)) = &answer {
            // Every store fault is named in the request's line, whether the
            // machine goes on without the store (caches) or refuses.
            if !self.record.store_faults.contains(&fault.reason()) {
                self.record.store_faults.push(fault.reason());
            }
        }
        match (std::mem::replace(&mut self.state, State::Finished), answer) {
            (State::Introspecting(mut lookup), Answer::Io(io)) => {
                lookup.resume(io);
                self.state = State::Introspecting(lookup);
            }
            (State::FindingKeys { mut lookup, wants }, Answer::Io(io)) => {
                lookup.resume(io);
                self.state = State::FindingKeys { lookup, wants };
            }
            (State::Refreshing(mut refresh), Answer::Io(io)) => {
                refresh.resume(io);
                self.state = State::Refreshing(refresh);
            }
            (
                State::Verifying {
                    token,
                    issuer,
                    candidates,
                    next,
                },
                Answer::Verdict(verified),
            ) => {
                if let Some(step) = self.verdict(config, token, issuer, candidates, next, verified)
                {
                    self.ready = Some(step);
                }
            }
            (State::ReadingSession, Answer::Io(io)) => match io.into_kv_read() {
                Ok(owner) => {
                    self.session_owner = Some(owner);
                    self.state = State::Admitting;
                }
                // Whose the session is cannot be told: refused, not taken as
                // unbound (which would let anyone in).
                Err(fault) => {
                    let denial = Denial::SessionStoreUnavailable(fault);
                    self.ready = Some(self.refuse(config, denial));
                }
            },
            (State::ReadingBody, Answer::Body(body)) => match body {
                Ok(body) if body.len() <= config.max_body_bytes => {
                    self.body = Some(body);
                    self.state = State::Admitting;
                }
                Ok(_) | Err(BodyError::TooLarge) => {
                    self.ready = Some(self.refuse(config, Denial::PayloadTooLarge));
                }
                Err(BodyError::Unreadable) => {
                    let denial = Denial::MalformedRpc(crate::parse::jsonrpc::RpcError::NotJson);
                    self.ready = Some(self.refuse(config, denial));
                }
            },
            (State::Forwarding, Answer::Unsigned) => {
                self.ready = Some(self.refuse(config, Denial::AssertionKeyUnusable));
            }
            (State::Forwarding, Answer::Origin(origin)) => {
                self.ready = Some(match origin {
                    Ok((status, headers)) => self.origin_answered(config, status, headers),
                    Err(fault) => self.refuse(config, Denial::OriginUnavailable(fault)),
                });
            }
            (State::CheckingSession { key, head }, Answer::Io(io)) => {
                match io.into_kv_read() {
                    // First owner wins: a session is never re-bound.
                    Ok(Some(_)) => {
                        self.ready = Some(self.answer_from_origin(config, head));
                        return;
                    }
                    Ok(None) => {}
                    // The session is unbound and cannot be bound: its id is
                    // withheld (see BindingSession).
                    Err(fault) => {
                        let denial = Denial::SessionStoreUnavailable(fault);
                        self.ready = Some(self.refuse(config, denial));
                        return;
                    }
                }
                let owner = self
                    .record
                    .token
                    .as_ref()
                    .map(|token| SessionOwner::of(token).to_json())
                    .unwrap_or_default();
                self.state = State::BindingSession { head };
                self.ready = Some(Step::Need(Need::Io(Io::KvPut {
                    key,
                    value: owner,
                    ttl_seconds: config.session_ttl_seconds.max(60),
                })));
            }
            // A session whose owner was not stored is never handed out: any
            // token could use it. The client is told to retry (503) rather
            // than given an answer whose session the gate cannot guard; the
            // origin's session is left to expire unused.
            (State::BindingSession { head }, Answer::Io(io)) => match io.into_kv_write() {
                Ok(()) => self.ready = Some(self.answer_from_origin(config, head)),
                Err(fault) => {
                    let denial = Denial::SessionStoreUnavailable(fault);
                    self.ready = Some(self.refuse(config, denial));
                }
            },
            (State::ReadingOriginBody { head }, Answer::OriginBody(body)) => {
                self.ready = Some(self.filtered_json(config, head, body));
            }
            (State::Counting { counts, after }, Answer::Counted(outcomes)) => {
                self.counted(config, &counts, &outcomes, *after);
            }
            (
                State::ProvingPossession {
                    token,
                    until,
                    proof,
                },
                Answer::Verdict(verified),
            ) => self.proved(config, *token, until, &proof, verified),
            (State::ClaimingProof { token, until }, Answer::Claimed(claimed)) => match claimed {
                Ok(true) => self.admitted(config, *token, until),
                Ok(false) => {
                    self.record.token = Some(*token);
                    let denial = Denial::InvalidProof(ProofError::Replayed);
                    self.ready = Some(self.refuse(config, denial));
                }
                Err(()) => {
                    self.record.token = Some(*token);
                    self.ready = Some(self.refuse(config, Denial::ReplayStoreUnavailable));
                }
            },
            // An answer that fits no need: a driver bug. Nothing is forwarded.
            (_, _) => self.ready = Some(self.refuse(config, Denial::Misconfigured)),
        }
    }

    fn route<'c>(&self, config: &'c Config) -> Option<&'c Route> {
        self.record.route.and_then(|index| config.routes.get(index))
    }

    /// Routing, `Origin`, the method and the credentials: everything decided
    /// from the request alone and isolate memory.
    fn arrive(&mut self, config: &Config) -> Option<Step> {
        let (index, suffix) = match target(config, &self.request.path) {
            Target::Unknown => return Some(self.refuse(config, Denial::NotFound)),
            Target::Metadata(index) => {
                self.record.route = Some(index);
                let route = &config.routes[index];
                return Some(match self.request.method.as_str() {
                    "GET" | "HEAD" => self.serve(config, metadata_reply(route), "metadata"),
                    "OPTIONS" => self.serve(config, metadata_preflight_reply(), "preflight"),
                    _ => self.refuse(
                        config,
                        Denial::MethodNotAllowed {
                            allow: "GET, HEAD, OPTIONS",
                        },
                    ),
                });
            }
            Target::AssertionKeys => {
                let jwks = config.assertion.as_ref().map_or("", |a| a.jwks.as_str());
                return Some(match self.request.method.as_str() {
                    "GET" | "HEAD" => self.serve(config, assertion_keys_reply(jwks), "jwks"),
                    _ => self.refuse(config, Denial::MethodNotAllowed { allow: "GET, HEAD" }),
                });
            }
            Target::Protected { index, suffix } => (index, suffix),
        };
        self.record.route = Some(index);
        let route = &config.routes[index];
        // MCP transport: validate Origin (DNS rebinding); browsers from
        // allowed origins get CORS headers on every answer, refusals included.
        if let Some(origin) = self.request.head().header("origin").map(str::to_owned) {
            if !config.allowed_origins.contains(&origin) {
                return Some(self.refuse(config, Denial::OriginNotAllowed));
            }
            if self.request.method == "OPTIONS" {
                let requested = self.request.head().header("access-control-request-headers");
                let reply = mcp_preflight_reply(&origin, requested);
                self.record.cors_origin = Some(origin);
                return Some(self.serve(config, reply, "preflight"));
            }
            self.record.cors_origin = Some(origin);
        }
        if !matches!(self.request.method.as_str(), "GET" | "POST" | "DELETE") {
            let denial = Denial::MethodNotAllowed {
                allow: FORWARDED_METHODS,
            };
            return Some(self.refuse(config, denial));
        }
        let head = self.request.head();
        self.forward = Some(OriginRequest {
            url: origin_url(&route.origin, &self.request.path[suffix..], head.query),
            headers: Vec::new(),
            body: None,
            assertion: None,
            connect_timeout_ms: config.origin_connect_timeout_ms,
            first_byte_timeout_ms: config.origin_first_byte_timeout_ms,
        });
        if route.dpop.accepts_dpop() {
            // Every answer of such a route carries a fresh nonce (RFC 9449 §9).
            self.nonce = config.dpop.nonces.as_ref().map(|key| key.issue(self.now));
        }
        let authorization = head.header_values("authorization");
        let carriers = CredentialCarriers {
            authorization: &authorization,
            query: head.query,
            content_type: head.header("content-type"),
            max_authorization_bytes: config.max_authorization_bytes,
        };
        let credentials = match extract_credentials(&carriers) {
            Err(error) => Err(Denial::BadRequest(error)),
            Ok(None) => Err(Denial::NoCredentials),
            // A route that takes bearer tokens only does not know the scheme.
            Ok(Some((Scheme::Dpop, _))) if !route.dpop.accepts_dpop() => Err(Denial::NoCredentials),
            Ok(Some((Scheme::Bearer, _))) if !route.dpop.accepts_bearer() => {
                Err(Denial::WrongScheme(SchemeRefusal::DpopRequired))
            }
            Ok(Some((scheme, raw))) => Ok((scheme, raw.to_owned())),
        };
        let (scheme, raw) = match credentials {
            Ok(credentials) => credentials,
            Err(denial) => return Some(self.refuse(config, denial)),
        };
        self.scheme = scheme;
        if scheme == Scheme::Dpop {
            // Everything about the proof that needs no key and no store, before
            // the token costs a lookup or a check.
            let values = self.request.head().header_values("dpop");
            let url = self
                .request
                .base
                .as_deref()
                .and_then(|base| crate::io::parse_url(&format!("{base}{}", self.request.path)));
            let Some(url) = url else {
                return Some(self.refuse(config, Denial::InvalidProof(ProofError::UrlMismatch)));
            };
            let expected = Expected {
                method: &self.request.method,
                url: &url,
                access_token: &raw,
                now: self.now,
            };
            match Proof::parse(&values, &config.dpop, &expected) {
                Ok(Ok(proof)) => self.proof = Some(Box::new(proof)),
                Ok(Err(nonce)) => return Some(self.refuse(config, Denial::UseDpopNonce(nonce))),
                Err(error) => return Some(self.refuse(config, Denial::InvalidProof(error))),
            }
        }
        let introspect = match config.introspection.format {
            TokenFormat::Jwt => false,
            TokenFormat::Opaque => true,
            TokenFormat::Auto => !looks_like_jwt(&raw),
        };
        if introspect {
            let policy = introspection_policy(config, Some(route));
            self.state =
                State::Introspecting(Box::new(IntrospectionLookup::new(&raw, &policy, self.now)));
            self.raw_token = raw;
            return None;
        }
        let key = TokenKey::of(&raw, &route.check_binding);
        self.token_key = Some(key);
        self.raw_token = raw;
        let leeway = i64::try_from(config.leeway_seconds).unwrap_or(0);
        if let Some((cached, kid)) = self.gate.tokens.get(&key, self.now, leeway) {
            let issuer = config
                .issuer(&cached.issuer)
                .filter(|issuer| route.trusts(&issuer.issuer))
                .cloned();
            if let Some(issuer) = issuer {
                // Asking for the set also keeps it refreshed.
                let lookup = self.key_lookup(config, &issuer, KeyDemand::Current);
                self.state = State::FindingKeys {
                    lookup,
                    wants: Box::new(KeysFor::CachedToken { token: cached, kid }),
                };
                return None;
            }
            self.gate.tokens.forget(&key);
        }
        self.check_fresh_token(config)
    }

    /// A JWT not (or no longer) in the cache: a remembered refusal, or parse
    /// it and find its issuer's keys.
    fn check_fresh_token(&mut self, config: &Config) -> Option<Step> {
        let key = self.token_key?;
        if let Some(error) = self.gate.tokens.refusal(&key, self.now) {
            return Some(self.refuse(config, Denial::InvalidToken(error)));
        }
        let parsed = UnverifiedJwt::parse(&self.raw_token, &config.algorithms).and_then(|token| {
            if config.require_at_jwt_typ {
                token.require_access_token_type()?;
            }
            Ok(token)
        });
        let token = match parsed {
            Ok(token) => token,
            Err(error) => return Some(self.refuse(config, Denial::InvalidToken(error))),
        };
        let route = self.route(config)?;
        let issuer = token
            .issuer()
            .filter(|iss| route.trusts(iss))
            .and_then(|iss| config.issuer(iss))
            .cloned();
        let Some(issuer) = issuer else {
            let denial = Denial::InvalidToken(TokenError::UntrustedIssuer);
            return Some(self.refuse(config, denial));
        };
        self.find_keys(config, issuer, KeyDemand::Current, Box::new(token));
        None
    }

    /// Looks up `issuer`'s key set for a new token's check.
    fn find_keys(
        &mut self,
        config: &Config,
        issuer: TrustedIssuer,
        demand: KeyDemand,
        token: Box<UnverifiedJwt>,
    ) {
        let lookup = self.key_lookup(config, &issuer, demand);
        self.state = State::FindingKeys {
            lookup,
            wants: Box::new(KeysFor::NewToken {
                demand,
                token,
                issuer,
            }),
        };
    }

    /// The issuer's key set is at hand: honour the cached verification or
    /// choose the keys to check the new token with.
    fn keys_found(&mut self, config: &Config, wants: KeysFor, set: &KeySet) -> Option<Step> {
        match wants {
            KeysFor::CachedToken { token, kid } => {
                if kid.as_deref().is_some_and(|kid| set.has_kid(kid)) {
                    let until = accepted_until(config, &token);
                    self.authenticated(config, token, until);
                    return None;
                }
                if let Some(key) = &self.token_key {
                    self.gate.tokens.forget(key);
                }
                self.check_fresh_token(config)
            }
            KeysFor::NewToken {
                demand: KeyDemand::Current,
                token,
                issuer,
            } if !token.has_candidate_key(set) => {
                // Perhaps the issuer rotated keys since the set was cached.
                self.find_keys(config, issuer, KeyDemand::UnknownKid, token);
                None
            }
            KeysFor::NewToken { token, issuer, .. } => {
                self.start_verifying(config, token, issuer, set)
            }
        }
    }

    fn key_lookup(
        &self,
        config: &Config,
        issuer: &TrustedIssuer,
        demand: KeyDemand,
    ) -> KeySetLookup {
        KeySetLookup::new(
            Rc::clone(&self.gate.keys),
            config.key_cache,
            issuer.clone(),
            demand,
            self.now,
            self.fetched_keys,
        )
    }

    fn after_lookup(&mut self, lookup: &KeySetLookup) {
        self.fetched_keys |= lookup.fetched();
        if let Some(issuer) = lookup.refresh_due() {
            self.refresh = Some(issuer);
        }
    }

    /// Picks the keys the signature may be checked with and asks for the
    /// first check.
    fn start_verifying(
        &mut self,
        config: &Config,
        token: Box<UnverifiedJwt>,
        issuer: TrustedIssuer,
        set: &KeySet,
    ) -> Option<Step> {
        let route = self.route(config)?;
        let policy = claims_policy(config, route, &issuer.issuer);
        let candidates = match token.signature_candidates(set, &policy) {
            Ok(candidates) => candidates,
            Err(error) => return Some(self.token_refused(config, error)),
        };
        let after = AfterCount::Verify {
            token,
            issuer: issuer.issuer,
            candidates,
        };
        self.count_address(config, after)
    }

    /// Before the first check or call out a token not verified yet costs:
    /// the address rules count the client address (once per request), so a
    /// flood of bad tokens is refused before it costs a check. Then `after`
    /// goes on (at once when no rule counts).
    fn count_address(&mut self, config: &Config, after: AfterCount) -> Option<Step> {
        let route = self.route(config)?;
        let counts = if self.address_counted || route.rate_limits.is_empty() {
            Vec::new()
        } else {
            let address = self.request.head().header("cf-connecting-ip");
            address_counts(&route.rate_limits, address)
        };
        self.address_counted = true;
        self.count_then(config, counts, after)
    }

    /// Asks for `counts` and waits for them in [`State::Counting`]; with
    /// none, goes on with `after` at once.
    fn count_then(
        &mut self,
        config: &Config,
        counts: Vec<Count>,
        after: AfterCount,
    ) -> Option<Step> {
        if counts.is_empty() {
            return self.after_count(config, after);
        }
        self.state = State::Counting {
            counts: counts.clone(),
            after: Box::new(after),
        };
        Some(Step::Need(Need::RateLimit(counts)))
    }

    /// The messages the identity rules count: the body's calls, or one
    /// without a method (a `GET`, a `DELETE`, a body of responses only).
    fn units(&self) -> Vec<Unit<'_>> {
        let units: Vec<Unit<'_>> = self
            .calls
            .iter()
            .map(|call| Unit {
                method: Some(call.method.as_str()),
                tool: call.name.as_deref().filter(|_| call.method == TOOLS_CALL),
            })
            .collect();
        if units.is_empty() {
            vec![Unit {
                method: None,
                tool: None,
            }]
        } else {
            units
        }
    }

    /// The rate limits came back: refuse, or go on with `after`.
    fn counted(
        &mut self,
        config: &Config,
        counts: &[Count],
        outcomes: &[Counted],
        after: AfterCount,
    ) {
        let Some(route) = self.route(config) else {
            self.ready = Some(self.refuse(config, Denial::Misconfigured));
            return;
        };
        let (refused, failed_open) = judge(&route.rate_limits, counts, outcomes);
        self.record
            .rate_limit_errors
            .extend(failed_open.into_iter().map(str::to_owned));
        let denial = match refused {
            None => {
                self.ready = self.after_count(config, after);
                return;
            }
            Some(Limited::Over(rule)) => {
                self.record.rate_rule = Some(rule.name.clone());
                let id = match &after {
                    AfterCount::Forward(_) => self.single_id.take(),
                    _ => None,
                };
                Denial::RateLimited {
                    retry_after: rule.period,
                    json_rpc: self.request.method == "POST",
                    id,
                }
            }
            Some(Limited::Unavailable(rule)) => {
                self.record.rate_rule = Some(rule.name.clone());
                Denial::RateLimitUnavailable
            }
        };
        self.ready = Some(self.refuse(config, denial));
    }

    /// What waited for the count, now that it may go on.
    fn after_count(&mut self, config: &Config, after: AfterCount) -> Option<Step> {
        match after {
            AfterCount::Verify {
                token,
                issuer,
                candidates,
            } => Some(self.ask_verdict(config, token, issuer, candidates, 0)),
            AfterCount::Introspect { lookup, io } => {
                self.state = State::Introspecting(lookup);
                Some(Step::Need(Need::Io(io)))
            }
            AfterCount::Forward(forward) => {
                self.record.outcome = Outcome::Forward(forward.clone());
                self.state = State::Forwarding;
                Some(Step::Need(Need::Forward(forward)))
            }
        }
    }

    fn ask_verdict(
        &mut self,
        config: &Config,
        token: Box<UnverifiedJwt>,
        issuer: String,
        candidates: Vec<PublicKey>,
        next: usize,
    ) -> Step {
        let Some(key) = candidates.get(next) else {
            return self.token_refused(config, TokenError::BadSignature);
        };
        let check = Check {
            alg: token.algorithm(),
            key: key.clone(),
            message: token.signing_input().as_bytes().to_vec(),
            signature: token.signature().to_vec(),
        };
        self.state = State::Verifying {
            token,
            issuer,
            candidates,
            next,
        };
        Step::Need(Need::Verify(check))
    }

    fn verdict(
        &mut self,
        config: &Config,
        token: Box<UnverifiedJwt>,
        issuer: String,
        candidates: Vec<PublicKey>,
        next: usize,
        verified: bool,
    ) -> Option<Step> {
        if !verified {
            return Some(self.ask_verdict(config, token, issuer, candidates, next + 1));
        }
        let route = self.route(config)?;
        let policy = claims_policy(config, route, &issuer);
        match token.verified_claims(&policy, self.now) {
            Err(error) => Some(self.token_refused(config, error)),
            Ok(verified) => {
                // A token without `kid` is not remembered: nothing would tell
                // when the key that verified it leaves the set.
                if let (Some(key), Some(kid)) = (&self.token_key, token.kid()) {
                    self.gate.tokens.insert(key, &verified, Some(kid), self.now);
                }
                let until = accepted_until(config, &verified);
                self.authenticated(config, verified, until);
                None
            }
        }
    }

    /// A JWT refused after its key set was found: remembered, so a replay
    /// costs no second check.
    fn token_refused(&mut self, config: &Config, error: TokenError) -> Step {
        if let Some(key) = &self.token_key {
            self.gate.tokens.remember_refusal(key, error, self.now);
        }
        self.refuse(config, Denial::InvalidToken(error))
    }

    /// The token is good until `until` (unix seconds): its scheme and
    /// binding (RFC 9449 §7), the proof of possession when it is bound, then
    /// [`Flow::admitted`]. A verified-token cache hit comes here as a fresh
    /// verification does, so a cached token never skips its proof.
    fn authenticated(&mut self, config: &Config, token: AccessToken, until: i64) {
        let Some(route) = self.route(config) else {
            self.ready = Some(self.refuse(config, Denial::Misconfigured));
            return;
        };
        let refusal = match (
            self.scheme,
            token.confirmation.as_deref(),
            self.proof.take(),
        ) {
            (Scheme::Bearer, None, _) => return self.admitted(config, token, until),
            (Scheme::Bearer, Some(_), _) if route.dpop.accepts_dpop() => {
                Denial::WrongScheme(SchemeRefusal::BoundTokenAsBearer)
            }
            (Scheme::Bearer, Some(_), _) => {
                Denial::InvalidToken(TokenError::ProofOfPossessionRequired)
            }
            (Scheme::Dpop, None, _) => Denial::WrongScheme(SchemeRefusal::TokenNotBound),
            (Scheme::Dpop, Some(jkt), Some(proof)) if jkt == proof.thumbprint() => {
                let check = Check {
                    alg: proof.algorithm(),
                    key: proof.key().clone(),
                    message: proof.signing_input().as_bytes().to_vec(),
                    signature: proof.signature().to_vec(),
                };
                self.state = State::ProvingPossession {
                    token: Box::new(token),
                    until,
                    proof,
                };
                self.ready = Some(Step::Need(Need::Verify(check)));
                return;
            }
            (Scheme::Dpop, Some(_), Some(_)) => Denial::InvalidProof(ProofError::KeyMismatch),
            // The proof is read before the token: a driver bug.
            (Scheme::Dpop, Some(_), None) => Denial::Misconfigured,
        };
        self.record.token = Some(token);
        self.ready = Some(self.refuse(config, refusal));
    }

    /// The proof's signature came back: remember its `jti`, in isolate
    /// memory and then the Durable Object store when one is bound.
    fn proved(
        &mut self,
        config: &Config,
        token: AccessToken,
        until: i64,
        proof: &Proof,
        verified: bool,
    ) {
        let refusal = if !verified {
            Denial::InvalidProof(ProofError::BadSignature)
        } else if !self
            .gate
            .replays
            .claim(proof.replay_key(), proof.remember_until(), self.now)
        {
            Denial::InvalidProof(ProofError::Replayed)
        } else {
            match &config.dpop.replay {
                ReplayStore::Memory => return self.admitted(config, token, until),
                ReplayStore::DurableObject(binding) => {
                    self.state = State::ClaimingProof {
                        token: Box::new(token),
                        until,
                    };
                    self.ready = Some(Step::Need(Need::ClaimProof {
                        binding: binding.clone(),
                        key: proof.replay_key().to_owned(),
                        expires_at: proof.remember_until(),
                    }));
                    return;
                }
            }
        };
        self.record.token = Some(token);
        self.ready = Some(self.refuse(config, refusal));
    }

    /// The token is good, and its sender proved its key when it is bound:
    /// route scopes, then the forward's headers.
    fn admitted(&mut self, config: &Config, token: AccessToken, until: i64) {
        self.accepted_until = Some(until);
        let Some(route) = self.route(config) else {
            self.ready = Some(self.refuse(config, Denial::Misconfigured));
            return;
        };
        // A POST's scopes are decided with its body, so that one challenge
        // can name everything the operation needs.
        let held = route.policy.implies.effective(&token.scopes);
        let missing = route
            .required_scopes
            .iter()
            .any(|scope| !held.contains(scope));
        if missing && self.request.method != "POST" {
            let denial = Denial::InsufficientScope {
                required: route.policy.implies.broadest(&route.required_scopes),
            };
            self.record.token = Some(token);
            self.ready = Some(self.refuse(config, denial));
            return;
        }
        if let Some(forward) = &mut self.forward {
            forward.headers = origin_headers(
                &self.request.headers,
                &token,
                route.origin_authorization.as_deref(),
            );
        }
        self.record.token = Some(token);
        self.record.reason = "authorized";
        self.state = State::Admitting;
    }

    /// The checks after the token: the session belongs to the token's owner;
    /// a POST's body is JSON-RPC the token may send. Then the forward.
    fn admit(&mut self, config: &Config) -> Option<Step> {
        let route = self.route(config)?;
        let Some(token) = self.record.token.clone() else {
            return Some(self.refuse(config, Denial::Misconfigured));
        };
        if let Some(session_id) = self.request.head().header("mcp-session-id") {
            if !is_valid_session_id(session_id) {
                return Some(self.refuse(config, Denial::ForeignSession));
            }
            let Some(stored) = &self.session_owner else {
                let key = session_key(&route.resource.uri, session_id);
                self.state = State::ReadingSession;
                return Some(Step::Need(Need::Io(Io::KvGet { key })));
            };
            if !may_use_session(stored.as_deref(), &token) {
                return Some(self.refuse(config, Denial::ForeignSession));
            }
        }
        if self.request.method == "POST" {
            let Some(body) = &self.body else {
                let declared = self
                    .request
                    .head()
                    .header("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if declared.is_some_and(|length| length > config.max_body_bytes as u64) {
                    return Some(self.refuse(config, Denial::PayloadTooLarge));
                }
                self.state = State::ReadingBody;
                return Some(Step::Need(Need::ReadBody {
                    max_bytes: config.max_body_bytes,
                    declared,
                }));
            };
            match authorize_rpc(
                config,
                route,
                &self.request.head(),
                &token,
                body,
                &self.gate.tool_schemas,
                self.now,
            ) {
                Ok(plan) => {
                    self.record.audit = Some(plan.audit);
                    self.single_id = plan.single_id;
                    self.calls = plan.calls;
                    self.rewrite = plan.rewrite;
                    if let Some(forward) = &mut self.forward {
                        forward.body = plan.forward_body;
                    }
                }
                Err((denial, audit)) => {
                    self.record.audit = audit;
                    return Some(self.refuse(config, denial));
                }
            }
        } else {
            let header = self.request.head().header("mcp-protocol-version");
            if let Err(denial) = check_revision(config.min_protocol_version, header, &[]) {
                return Some(self.refuse(config, denial));
            }
        }
        let mut forward = self.forward.clone()?;
        if let (Some(settings), Some(audience)) = (&config.assertion, &route.assertion_audience) {
            let body = forward.body.as_deref().or(self.body.as_deref());
            let bound = Bound {
                audience,
                token: &token,
                raw_token: &self.raw_token,
                calls: &self.calls,
                method: &self.request.method,
                url: &forward.url,
                body: body.unwrap_or_default(),
            };
            forward.assertion = Some(Signing {
                binding: settings.signing_binding,
                alg: settings.signing.alg,
                input: signing_input(settings, &bound, self.now, self.gate.jtis.next()),
            });
        }
        // Identity rules count once the request is authorized, so a caller
        // only ever spends the quota of the identity its token names.
        let counts = if route.rate_limits.is_empty() {
            Vec::new()
        } else {
            identity_counts(&route.rate_limits, &token, &self.units())
        };
        self.count_then(config, counts, AfterCount::Forward(forward))
    }

    /// The origin answered: bind the session it opened, then answer.
    fn origin_answered(
        &mut self,
        config: &Config,
        status: u16,
        headers: Vec<(String, String)>,
    ) -> Step {
        let session = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("mcp-session-id"))
            .map(|(_, value)| value.clone());
        let head = OriginHead { status, headers };
        match (session, self.route(config)) {
            (Some(session_id), Some(route))
                if self.record.token.is_some() && is_valid_session_id(&session_id) =>
            {
                let key = session_key(&route.resource.uri, &session_id);
                self.state = State::CheckingSession {
                    key: key.clone(),
                    head,
                };
                Step::Need(Need::Io(Io::KvGet { key }))
            }
            _ => self.answer_from_origin(config, head),
        }
    }

    /// The client's answer from the origin's, rewritten (`tools/list`
    /// filtered, states sealed).
    fn answer_from_origin(&mut self, config: &Config, head: OriginHead) -> Step {
        let rewrite = self
            .rewrite
            .take()
            .filter(|_| (200..300).contains(&head.status));
        let Some(rewrite) = rewrite else {
            return self.respond_from_origin(config, &head, Body::Origin);
        };
        let content_type = head
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.to_ascii_lowercase())
            .unwrap_or_default();
        if content_type.starts_with("application/json") {
            self.rewrite = Some(rewrite);
            self.state = State::ReadingOriginBody { head };
            return Step::Need(Need::ReadOriginBody);
        }
        if content_type.starts_with("text/event-stream") {
            self.sse = Some(rewrite.sse());
            return self.respond_from_origin(config, &head, Body::OriginFiltered);
        }
        // A tools/list answer in a form the gate cannot filter is not passed
        // on; any other answer holds no JSON-RPC result whose state a client
        // could echo.
        if rewrite.tools.is_some() {
            return self.refuse(config, Denial::BadGateway);
        }
        self.respond_from_origin(config, &head, Body::Origin)
    }

    fn filtered_json(
        &mut self,
        config: &Config,
        head: OriginHead,
        body: Result<Vec<u8>, ()>,
    ) -> Step {
        let (Some(rewrite), Ok(body)) = (self.rewrite.take(), body) else {
            return self.refuse(config, Denial::BadGateway);
        };
        match rewrite.rewrite_json(&body) {
            Ok(Some(filtered)) => self.respond_from_origin(config, &head, Body::Bytes(filtered)),
            Ok(None) => self.respond_from_origin(config, &head, Body::Bytes(body)),
            Err(_) => self.refuse(config, Denial::BadGateway),
        }
    }

    fn respond_from_origin(&mut self, config: &Config, head: &OriginHead, body: Body) -> Step {
        // An event stream can stay open for hours: it ends when the token it
        // was opened with would no longer be accepted, so an expired (or, when
        // introspected, revoked) token cannot keep receiving messages. A
        // client reconnects, and is judged again.
        let is_stream = head.headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("content-type")
                && value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
        });
        let ends_at = self.accepted_until.filter(|_| is_stream);
        let mut headers = client_response_headers(&head.headers);
        if let Some(origin) = &self.record.cors_origin {
            with_cors(&mut headers, origin);
        }
        if let Some(nonce) = &self.nonce {
            headers.push(("dpop-nonce".to_owned(), nonce.clone()));
        }
        self.state = State::Finished;
        Step::Respond(Response {
            status: head.status,
            headers,
            log: self.log_line(config, head.status),
            body,
            from_origin: true,
            ends_at,
        })
    }

    /// Answers with a gate reply (metadata, preflight).
    fn serve(&mut self, config: &Config, reply: Reply, reason: &'static str) -> Step {
        self.record.reason = reason;
        self.reply(Some(config), reply)
    }

    /// Refuses: the one way a refusal becomes an answer.
    fn refuse(&mut self, config: &Config, denial: Denial) -> Step {
        let reply = denial.reply(self.route(config));
        self.record.reason = denial.reason();
        self.reply(Some(config), reply)
    }

    /// Refuses where no configuration can be read.
    fn finish_with(&mut self, denial: Denial) -> Step {
        let gate = Rc::clone(&self.gate);
        match &gate.config {
            Ok(config) => self.refuse(config, denial),
            Err(_) => {
                let reply = denial.reply(None);
                self.record.reason = denial.reason();
                self.reply(None, reply)
            }
        }
    }

    fn reply(&mut self, config: Option<&Config>, reply: Reply) -> Step {
        let mut headers: Vec<(String, String)> = reply
            .headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        if let Some(origin) = &self.record.cors_origin {
            with_cors(&mut headers, origin);
        }
        if let Some(nonce) = &self.nonce {
            headers.push(("dpop-nonce".to_owned(), nonce.clone()));
        }
        let status = reply.status;
        let body = Body::Bytes(reply.body.clone().into_bytes());
        self.record.outcome = Outcome::Reply(reply);
        self.state = State::Finished;
        let log = match config {
            Some(config) => self.log_line(config, status),
            None => request_log(
                None,
                &self.record,
                &self.request.method,
                &self.request.path,
                status,
            ),
        };
        Step::Respond(Response {
            status,
            headers,
            body,
            log,
            from_origin: false,
            ends_at: None,
        })
    }

    fn log_line(&self, config: &Config, status: u16) -> String {
        request_log(
            Some(config),
            &self.record,
            &self.request.method,
            &self.request.path,
            status,
        )
    }
}

/// When a verified JWT stops being accepted: its `exp` plus the leeway the
/// gate grants (RFC 7519 §4.1.4).
fn accepted_until(config: &Config, token: &AccessToken) -> i64 {
    let leeway = i64::try_from(config.leeway_seconds).unwrap_or(0);
    token.expires_at.saturating_add(leeway)
}

fn introspection_policy<'c>(
    config: &'c Config,
    route: Option<&'c Route>,
) -> IntrospectionPolicy<'c> {
    IntrospectionPolicy {
        issuers: route.map_or(&[][..], |route| &route.issuers),
        audiences: route.map_or(&[][..], |route| &route.audiences),
        leeway_seconds: i64::try_from(config.leeway_seconds).unwrap_or(0),
    }
}

fn claims_policy<'c>(config: &'c Config, route: &'c Route, issuer: &'c str) -> ClaimsPolicy<'c> {
    ClaimsPolicy {
        issuer,
        audiences: &route.audiences,
        leeway_seconds: config.leeway_seconds,
        max_lifetime_seconds: config.max_token_lifetime_seconds,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "rate_limit_tests.rs"]
mod rate_limit_tests;

#[cfg(test)]
#[path = "dpop_tests.rs"]
mod dpop_tests;
