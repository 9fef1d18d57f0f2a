//! Gate configuration, parsed once from the Worker's environment bindings.
//!
//! Parse, don't validate: every binding is read and checked here, and either
//! the whole [`Config`] comes out or a [`ConfigError`] naming every bad
//! binding and why. Nothing downstream re-checks a URL or a number. A gate
//! without a valid configuration refuses every request (fail closed).

use std::fmt;

#[cfg(test)]
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::authorize::policy::{
    is_scope_token, ScopeHierarchy, ScopeMap, ScopePolicy, DEFAULT_ENTRY as DEFAULT_ENTRY_NAME,
    OFFLINE_ACCESS,
};
use crate::authorize::rate_limit::{parse_rules, RateRule};
use crate::authorize::request_state::StateKey;
use crate::forward::assertion::{AssertionKey, AssertionSettings, DEFAULT_LIFETIME_SECONDS};
use crate::verify::dpop::{DpopPolicy, DpopSettings, NonceKey, ReplayStore};
use crate::verify::introspect::{ClientAuthMethod, IntrospectionClient};
use crate::verify::jwk::JwsAlgorithm;
use crate::verify::keys::{is_loopback_host, CacheSettings, FetchLimits, TrustedIssuer};

/// Names of the bindings: the public contract with operators.
pub mod binding {
    pub const MCP_RESOURCE: &str = "MCP_RESOURCE";
    pub const MCP_ORIGIN: &str = "MCP_ORIGIN";
    pub const OAUTH_ISSUER: &str = "OAUTH_ISSUER";
    pub const OAUTH_JWKS_URI: &str = "OAUTH_JWKS_URI";
    pub const OAUTH_AUDIENCE: &str = "OAUTH_AUDIENCE";
    pub const MCP_SCOPES_SUPPORTED: &str = "MCP_SCOPES_SUPPORTED";
    pub const MCP_REQUIRED_SCOPES: &str = "MCP_REQUIRED_SCOPES";
    pub const JWT_ALGORITHMS: &str = "JWT_ALGORITHMS";
    pub const JWT_LEEWAY_SECONDS: &str = "JWT_LEEWAY_SECONDS";
    pub const JWT_REQUIRE_TYP_AT_JWT: &str = "JWT_REQUIRE_TYP_AT_JWT";
    pub const JWT_MAX_LIFETIME_SECONDS: &str = "JWT_MAX_LIFETIME_SECONDS";
    pub const AUTHORIZATION_MAX_BYTES: &str = "AUTHORIZATION_MAX_BYTES";
    pub const JWKS_CACHE_TTL_SECONDS: &str = "JWKS_CACHE_TTL_SECONDS";
    pub const JWKS_MIN_TTL_SECONDS: &str = "JWKS_MIN_TTL_SECONDS";
    pub const JWKS_MAX_TTL_SECONDS: &str = "JWKS_MAX_TTL_SECONDS";
    pub const JWKS_MAX_STALE_SECONDS: &str = "JWKS_MAX_STALE_SECONDS";
    pub const JWKS_REFRESH_COOLDOWN_SECONDS: &str = "JWKS_REFRESH_COOLDOWN_SECONDS";
    pub const JWKS_FETCH_TIMEOUT_MS: &str = "JWKS_FETCH_TIMEOUT_MS";
    pub const JWKS_MAX_BYTES: &str = "JWKS_MAX_BYTES";
    pub const MCP_RESOURCE_NAME: &str = "MCP_RESOURCE_NAME";
    pub const MCP_RESOURCE_DOCUMENTATION: &str = "MCP_RESOURCE_DOCUMENTATION";
    pub const ORIGIN_AUTHORIZATION: &str = "ORIGIN_AUTHORIZATION";
    pub const JWKS_CACHE: &str = "JWKS_CACHE";
    pub const MCP_TOOL_SCOPES: &str = "MCP_TOOL_SCOPES";
    pub const MCP_METHOD_SCOPES: &str = "MCP_METHOD_SCOPES";
    pub const MCP_SCOPE_IMPLIES: &str = "MCP_SCOPE_IMPLIES";
    pub const MCP_MAX_BODY_BYTES: &str = "MCP_MAX_BODY_BYTES";
    pub const MCP_SESSION_TTL_SECONDS: &str = "MCP_SESSION_TTL_SECONDS";
    pub const MCP_MIN_PROTOCOL_VERSION: &str = "MCP_MIN_PROTOCOL_VERSION";
    pub const MCP_STATE_SECRET: &str = "MCP_STATE_SECRET";
    pub const OAUTH_TOKEN_FORMAT: &str = "OAUTH_TOKEN_FORMAT";
    pub const OAUTH_INTROSPECTION_URI: &str = "OAUTH_INTROSPECTION_URI";
    pub const OAUTH_INTROSPECTION_CLIENT_ID: &str = "OAUTH_INTROSPECTION_CLIENT_ID";
    pub const OAUTH_INTROSPECTION_CLIENT_SECRET: &str = "OAUTH_INTROSPECTION_CLIENT_SECRET";
    pub const OAUTH_INTROSPECTION_AUTH_METHOD: &str = "OAUTH_INTROSPECTION_AUTH_METHOD";
    pub const INTROSPECTION_CACHE_TTL_SECONDS: &str = "INTROSPECTION_CACHE_TTL_SECONDS";
    pub const MCP_ALLOWED_ORIGINS: &str = "MCP_ALLOWED_ORIGINS";
    pub const MCP_ROUTES: &str = "MCP_ROUTES";
    pub const ORIGIN_ASSERTION_AUDIENCE: &str = "ORIGIN_ASSERTION_AUDIENCE";
    pub const ASSERTION_KEY: &str = "ASSERTION_KEY";
    pub const ASSERTION_KEY_NEXT: &str = "ASSERTION_KEY_NEXT";
    pub const ASSERTION_ISSUER: &str = "ASSERTION_ISSUER";
    pub const ASSERTION_LIFETIME_SECONDS: &str = "ASSERTION_LIFETIME_SECONDS";
    pub const RATE_LIMITS: &str = "RATE_LIMITS";
    pub const DPOP: &str = "DPOP";
    pub const DPOP_ALGORITHMS: &str = "DPOP_ALGORITHMS";
    pub const DPOP_IAT_WINDOW_SECONDS: &str = "DPOP_IAT_WINDOW_SECONDS";
    pub const DPOP_REPLAY_STORE: &str = "DPOP_REPLAY_STORE";
    pub const DPOP_NONCE_SECRET: &str = "DPOP_NONCE_SECRET";
    pub const DPOP_NONCE_LIFETIME_SECONDS: &str = "DPOP_NONCE_LIFETIME_SECONDS";
    pub const ORIGIN_CONNECT_TIMEOUT_MS: &str = "ORIGIN_CONNECT_TIMEOUT_MS";
    pub const ORIGIN_FIRST_BYTE_TIMEOUT_MS: &str = "ORIGIN_FIRST_BYTE_TIMEOUT_MS";

    /// The bindings that describe the one route of a single-route gate; with
    /// `MCP_ROUTES` they belong in the route entries instead.
    pub const SINGLE_ROUTE: [&str; 12] = [
        MCP_RESOURCE,
        MCP_ORIGIN,
        OAUTH_AUDIENCE,
        MCP_SCOPES_SUPPORTED,
        MCP_REQUIRED_SCOPES,
        MCP_TOOL_SCOPES,
        MCP_METHOD_SCOPES,
        MCP_SCOPE_IMPLIES,
        MCP_RESOURCE_NAME,
        MCP_RESOURCE_DOCUMENTATION,
        ORIGIN_AUTHORIZATION,
        ORIGIN_ASSERTION_AUDIENCE,
    ];
}

/// Which tokens the gate accepts (`OAUTH_TOKEN_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// JWT access tokens only, verified locally.
    Jwt,
    /// Opaque tokens only, introspected (RFC 7662).
    Opaque,
    /// A compact JWS is verified locally, anything else introspected.
    Auto,
}

/// Opaque-token settings (RFC 7662).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionConfig {
    /// Which tokens are introspected.
    pub format: TokenFormat,
    /// The endpoint; `None`: discovered from the issuer's metadata.
    pub endpoint: Option<Url>,
    /// The gate's client credentials (required unless the format is `jwt`).
    pub client: Option<IntrospectionClient>,
    /// Longest time a verdict is cached.
    pub ttl_seconds: i64,
}

/// Default `INTROSPECTION_CACHE_TTL_SECONDS`.
pub const DEFAULT_INTROSPECTION_TTL_SECONDS: u64 = 60;

/// Default `MCP_MAX_BODY_BYTES`: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Default `MCP_SESSION_TTL_SECONDS`: one day.
pub const DEFAULT_SESSION_TTL_SECONDS: u64 = 86_400;
/// Default `ORIGIN_CONNECT_TIMEOUT_MS`: an origin that has not taken the
/// connection in 5 s is down, not slow.
pub const DEFAULT_ORIGIN_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default `ORIGIN_FIRST_BYTE_TIMEOUT_MS`: a tool call answered as plain
/// JSON sends nothing until its result, so the wait is long; Cloudflare's
/// own proxy gives up on an origin after 100 s.
pub const DEFAULT_ORIGIN_FIRST_BYTE_TIMEOUT_MS: u64 = 60_000;

/// Default `JWT_ALGORITHMS`.
pub const DEFAULT_ALGORITHMS: [JwsAlgorithm; 4] = [
    JwsAlgorithm::Rs256,
    JwsAlgorithm::Ps256,
    JwsAlgorithm::Es256,
    JwsAlgorithm::EdDsa,
];
/// Largest `JWT_MAX_LIFETIME_SECONDS`: one year.
pub const MAX_TOKEN_LIFETIME_SECONDS: u64 = 365 * 86_400;
/// Bounds of `AUTHORIZATION_MAX_BYTES`: room for an RSA-4096-signed JWT with
/// modest claims at the low end; at the top, 64 KiB, far beyond any access
/// token a real authorization server issues.
pub const AUTHORIZATION_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=64 * 1024;
/// Default `JWT_LEEWAY_SECONDS`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
/// Largest accepted `JWT_LEEWAY_SECONDS`: more skew than this is a
/// misconfiguration, not a clock problem.
pub const MAX_LEEWAY_SECONDS: u64 = 600;

/// Where the gate's configuration comes from: the Worker `env` in
/// production, a map in tests.
pub trait Bindings {
    /// A text variable or secret; `None` when unbound.
    fn text(&self, name: &str) -> Option<String>;
    /// Whether a KV namespace is bound under `name`.
    fn has_kv_namespace(&self, name: &str) -> bool;
    /// Whether a Rate Limiting binding (`[[ratelimits]]`) is bound under `name`.
    fn has_rate_limiter(&self, name: &str) -> bool;
    /// Whether a Durable Object namespace (`[[durable_objects.bindings]]`) is
    /// bound under `name`.
    fn has_durable_object(&self, name: &str) -> bool;
}

/// The protected resource (RFC 9728 §1, §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The canonical URI, exactly as configured (RFC 8707 §2).
    pub uri: String,
    /// Its path, the route the gate protects; `/` for a host-only resource.
    pub path: String,
    /// The metadata URL with the well-known suffix inserted (RFC 9728 §3.1).
    pub metadata_url: String,
    /// The metadata path on this host.
    pub metadata_path: String,
}

/// One protected MCP server: a resource (RFC 9728) and the origin behind it.
#[derive(Clone, PartialEq, Eq)]
pub struct Route {
    /// The protected MCP endpoint; its path is the route.
    pub resource: Resource,
    /// The origin MCP endpoint requests are forwarded to.
    pub origin: Url,
    /// Identifiers of the trusted issuers whose tokens this route accepts.
    pub issuers: Vec<String>,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Published as `scopes_supported`.
    pub scopes_supported: Vec<String>,
    /// Scopes every request needs.
    pub required_scopes: Vec<String>,
    /// Scopes per request, method and tool.
    pub policy: ScopePolicy,
    /// `resource_name` in the metadata.
    pub resource_name: Option<String>,
    /// `resource_documentation` in the metadata.
    pub resource_documentation: Option<String>,
    /// The `Authorization` value sent to the origin. Never logged.
    pub origin_authorization: Option<String>,
    /// The `aud` of the signed assertion sent with each forwarded request;
    /// `None`: the route sends none.
    pub assertion_audience: Option<String>,
    /// The rate limits on this route: the global ones (`RATE_LIMITS`), then
    /// the route's own.
    pub rate_limits: Vec<RateRule>,
    /// Which schemes the route takes (`DPOP`, or the entry's `dpop`).
    pub dpop: DpopPolicy,
    /// The algorithms a DPoP proof may use (`DPOP_ALGORITHMS`), for the
    /// route's challenges and metadata.
    pub dpop_algorithms: Vec<JwsAlgorithm>,
    /// What a cached verification on this route was checked against
    /// (issuers and audiences): caches shared by routes key on it, so a
    /// token accepted for one audience is never taken as accepted for another.
    pub check_binding: String,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("resource", &self.resource)
            .field("origin", &self.origin.as_str())
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("required_scopes", &self.required_scopes)
            .field(
                "origin_authorization",
                &self.origin_authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Route {
    /// Whether this route accepts tokens from `iss`.
    pub fn trusts(&self, iss: &str) -> bool {
        self.issuers.iter().any(|trusted| trusted == iss)
    }

    /// The part of `path` under this route, when the route covers it: the
    /// route's path itself, or below it at a segment boundary.
    fn suffix_of<'p>(&self, path: &'p str) -> Option<&'p str> {
        let base = self.resource.path.trim_end_matches('/');
        path.strip_prefix(base)
            .filter(|suffix| suffix.is_empty() || suffix.starts_with('/'))
    }
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The protected MCP servers, in configured order (at least one).
    pub routes: Vec<Route>,
    /// Trusted issuers, in configured order.
    pub issuers: Vec<TrustedIssuer>,
    /// The signature algorithm allow-list.
    pub algorithms: Vec<JwsAlgorithm>,
    /// Clock skew tolerated on time claims.
    pub leeway_seconds: u64,
    /// Strict RFC 9068 §2.1 mode: `typ` must be present and `at+jwt`.
    pub require_at_jwt_typ: bool,
    /// Longest accepted `exp - iat`; when set, `iat` is required.
    pub max_token_lifetime_seconds: Option<u64>,
    /// Largest `Authorization` header value read.
    pub max_authorization_bytes: usize,
    /// Key set cache lifetimes and fetch limits.
    pub key_cache: CacheSettings,
    /// Largest JSON-RPC request body read.
    pub max_body_bytes: usize,
    /// How long a session's owner is remembered.
    pub session_ttl_seconds: u64,
    /// How long the origin may take to accept the connection and take the
    /// request.
    pub origin_connect_timeout_ms: u32,
    /// How long the origin may take, once connected, to send its answer's head.
    pub origin_first_byte_timeout_ms: u32,
    /// The oldest MCP revision let through (one of
    /// [`crate::parse::version::KNOWN_REVISIONS`]); `None`: every revision.
    pub min_protocol_version: Option<&'static str>,
    /// Seals the origin's `requestState` to its caller; `None`: states pass
    /// as the origin made them.
    pub state_key: Option<StateKey>,
    /// Opaque tokens.
    pub introspection: IntrospectionConfig,
    /// The signed assertion for origins; `None` when no key is bound.
    pub assertion: Option<AssertionSettings>,
    /// DPoP proofs (RFC 9449): the settings every route taking them shares.
    pub dpop: DpopSettings,
    /// Browser origins allowed to call the MCP endpoints (ASCII serialization,
    /// e.g. `https://inspector.example.com`); the resources' own origin is
    /// always allowed.
    pub allowed_origins: Vec<String>,
    /// What the configuration asks that the gate does differently, each as
    /// `BINDING: what and why`; logged once when the isolate parses it.
    pub warnings: Vec<String>,
}

impl Config {
    /// The trusted issuer named `iss`, if any.
    pub fn issuer(&self, iss: &str) -> Option<&TrustedIssuer> {
        self.issuers.iter().find(|trusted| trusted.issuer == iss)
    }

    /// The index of the route whose RFC 9728 metadata lives at `path`: its
    /// path-inserted well-known URL, or the root well-known URL when there is
    /// one route only (with several, clients must use the path-inserted form).
    pub fn route_for_metadata(&self, path: &str) -> Option<usize> {
        if let Some(index) = self
            .routes
            .iter()
            .position(|route| route.resource.metadata_path == path)
        {
            return Some(index);
        }
        (self.routes.len() == 1 && path == ROOT_METADATA_PATH).then_some(0)
    }

    /// The route covering `path` (longest path prefix at a segment boundary)
    /// and the rest of the path below it.
    pub fn route_for<'p>(&self, path: &'p str) -> Option<(usize, &'p str)> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(index, route)| route.suffix_of(path).map(|suffix| (index, suffix)))
            .min_by_key(|(_, suffix)| suffix.len())
    }
}

/// The root RFC 9728 well-known path.
pub const ROOT_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// One binding and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingProblem {
    /// The binding's name.
    pub binding: &'static str,
    /// What is wrong, in words an operator can act on. Never echoes a secret.
    pub problem: String,
}

/// Every problem found in the bindings, in binding order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems; never empty.
    pub problems: Vec<BindingProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", problem.binding, problem.problem)?;
        }
        Ok(())
    }
}

/// Collects problems while parsing so that all of them are reported at once.
struct Parser<'b, B: Bindings + ?Sized> {
    bindings: &'b B,
    problems: Vec<BindingProblem>,
    warnings: Vec<String>,
    /// `DPOP`: the policy of a route that does not choose its own.
    dpop: DpopPolicy,
    /// `DPOP_ALGORITHMS`.
    dpop_algorithms: Vec<JwsAlgorithm>,
}

impl<B: Bindings + ?Sized> Parser<'_, B> {
    fn problem(&mut self, binding: &'static str, problem: impl Into<String>) {
        self.problems.push(BindingProblem {
            binding,
            problem: problem.into(),
        });
    }

    /// A binding's value, with surrounding white space removed; an empty
    /// value counts as unbound.
    fn optional(&self, name: &str) -> Option<String> {
        self.bindings
            .text(name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    }

    fn required(&mut self, name: &'static str) -> Option<String> {
        let value = self.optional(name);
        if value.is_none() {
            self.problem(name, "required but not set");
        }
        value
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|value| value.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn number(
        &mut self,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> u64 {
        let Some(raw) = self.optional(name) else {
            return default;
        };
        match raw.parse::<u64>() {
            Ok(value) if range.contains(&value) => value,
            _ => {
                let (low, high) = (range.start(), range.end());
                self.problem(name, format!("must be a whole number from {low} to {high}"));
                default
            }
        }
    }

    /// `true` or `false` (any case); unbound is `false`.
    fn flag(&mut self, name: &'static str) -> bool {
        match self.optional(name).map(|raw| raw.to_ascii_lowercase()) {
            None => false,
            Some(raw) if raw == "true" => true,
            Some(raw) if raw == "false" => false,
            Some(_) => {
                self.problem(name, "must be true or false");
                false
            }
        }
    }

    fn seconds(
        &mut self,
        name: &'static str,
        default: i64,
        range: std::ops::RangeInclusive<u64>,
    ) -> i64 {
        let value = self.number(name, u64::try_from(default).unwrap_or(0), range);
        i64::try_from(value).unwrap_or(i64::MAX)
    }

    /// `OAUTH_TOKEN_FORMAT` and the introspection bindings. With an endpoint
    /// set and no format, the format is `auto`.
    fn introspection(&mut self, issuer_count: usize) -> IntrospectionConfig {
        use binding::*;
        let endpoint = self
            .optional(OAUTH_INTROSPECTION_URI)
            .and_then(|raw| self.url(OAUTH_INTROSPECTION_URI, &raw, UrlRule::Fetchable));
        let format = match self.optional(OAUTH_TOKEN_FORMAT).as_deref() {
            None if endpoint.is_some() => TokenFormat::Auto,
            None | Some("jwt") => TokenFormat::Jwt,
            Some("opaque") => TokenFormat::Opaque,
            Some("auto") => TokenFormat::Auto,
            Some(other) => {
                self.problem(
                    OAUTH_TOKEN_FORMAT,
                    format!("{other:?} is not one of jwt, opaque, auto"),
                );
                TokenFormat::Jwt
            }
        };
        let method = match self.optional(OAUTH_INTROSPECTION_AUTH_METHOD).as_deref() {
            None | Some("client_secret_basic") => ClientAuthMethod::ClientSecretBasic,
            Some("client_secret_post") => ClientAuthMethod::ClientSecretPost,
            Some(other) => {
                self.problem(
                    OAUTH_INTROSPECTION_AUTH_METHOD,
                    format!("{other:?} is not client_secret_basic or client_secret_post"),
                );
                ClientAuthMethod::ClientSecretBasic
            }
        };
        let client_id = self.optional(OAUTH_INTROSPECTION_CLIENT_ID);
        // A secret: never echoed, whatever is wrong with it.
        let client_secret = self
            .bindings
            .text(OAUTH_INTROSPECTION_CLIENT_SECRET)
            .filter(|secret| !secret.is_empty());
        let introspects = format != TokenFormat::Jwt;
        if introspects {
            if client_id.is_none() {
                self.problem(
                    OAUTH_INTROSPECTION_CLIENT_ID,
                    "required when tokens are introspected",
                );
            }
            if client_secret.is_none() {
                self.problem(
                    OAUTH_INTROSPECTION_CLIENT_SECRET,
                    "required when tokens are introspected (set it as a secret)",
                );
            }
            if endpoint.is_none() && issuer_count > 1 {
                self.problem(
                    OAUTH_INTROSPECTION_URI,
                    "required with several issuers (discovery needs exactly one)",
                );
            }
        }
        let ttl_seconds = self.number(
            INTROSPECTION_CACHE_TTL_SECONDS,
            DEFAULT_INTROSPECTION_TTL_SECONDS,
            1..=3600,
        ) as i64;
        let client = match (client_id, client_secret) {
            (Some(client_id), Some(client_secret)) => Some(IntrospectionClient {
                client_id,
                client_secret,
                method,
            }),
            _ => None,
        };
        IntrospectionConfig {
            format,
            endpoint,
            client,
            ttl_seconds,
        }
    }

    fn key_cache(&mut self) -> CacheSettings {
        use binding::*;
        const WEEK: u64 = 604_800;
        let defaults = CacheSettings::default();
        let settings = CacheSettings {
            // Lifetimes under a minute are allowed for tests and local development;
            // the KV copy still lives at least 60 s, as Workers KV requires.
            default_ttl: self.seconds(JWKS_CACHE_TTL_SECONDS, defaults.default_ttl, 1..=WEEK),
            min_ttl: self.seconds(JWKS_MIN_TTL_SECONDS, defaults.min_ttl, 1..=WEEK),
            max_ttl: self.seconds(JWKS_MAX_TTL_SECONDS, defaults.max_ttl, 1..=WEEK),
            max_stale: self.seconds(JWKS_MAX_STALE_SECONDS, defaults.max_stale, 0..=WEEK),
            refresh_cooldown: self.seconds(
                JWKS_REFRESH_COOLDOWN_SECONDS,
                defaults.refresh_cooldown,
                1..=3600,
            ),
            limits: FetchLimits {
                timeout_ms: self.number(
                    JWKS_FETCH_TIMEOUT_MS,
                    u64::from(defaults.limits.timeout_ms),
                    100..=30_000,
                ) as u32,
                max_bytes: self.number(
                    JWKS_MAX_BYTES,
                    defaults.limits.max_bytes as u64,
                    1024..=4 * 1024 * 1024,
                ) as usize,
            },
        };
        if settings.min_ttl > settings.max_ttl {
            self.problem(JWKS_MIN_TTL_SECONDS, "must not exceed JWKS_MAX_TTL_SECONDS");
        }
        settings
    }

    /// The signed assertion for origins: `ASSERTION_KEY` signs,
    /// `ASSERTION_KEY_NEXT` is published beside it so that origins know a
    /// key before it signs. Keys are secrets: problems never quote them.
    fn assertion(&mut self, routes: &[Route]) -> Option<AssertionSettings> {
        use binding::*;
        let key = |p: &mut Self, name: &'static str, private: bool| {
            let raw = p.bindings.text(name).filter(|raw| !raw.trim().is_empty())?;
            AssertionKey::parse(&raw, private)
                .map_err(|problem| p.problem(name, problem))
                .ok()
        };
        let signing = key(self, ASSERTION_KEY, true);
        let next = key(self, ASSERTION_KEY_NEXT, false);
        let sends = routes
            .iter()
            .any(|route| route.assertion_audience.is_some());
        let signing_bound = self.optional(ASSERTION_KEY).is_some();
        if sends && !signing_bound {
            self.problem(
                ASSERTION_KEY,
                "required when a route sends an assertion (ORIGIN_ASSERTION_AUDIENCE or assertion_audience): set a private EC P-256 or Ed25519 JWK as a secret",
            );
        }
        if next.is_some() && !signing_bound {
            self.problem(
                ASSERTION_KEY_NEXT,
                "is published beside ASSERTION_KEY, which is not set",
            );
        }
        if let (Some(signing), Some(next)) = (&signing, &next) {
            if signing.kid == next.kid {
                self.problem(
                    ASSERTION_KEY_NEXT,
                    "has the same kid as ASSERTION_KEY: the next key must be another key",
                );
            }
        }
        if signing_bound && !sends {
            self.warnings.push(format!("{ASSERTION_KEY}: bound, but no route sends an assertion (set ORIGIN_ASSERTION_AUDIENCE, or assertion_audience in MCP_ROUTES); the keys are published all the same"));
        }
        let lifetime = self.number(
            ASSERTION_LIFETIME_SECONDS,
            DEFAULT_LIFETIME_SECONDS,
            1..=600,
        );
        // By default the gate names itself by its own origin, where its keys
        // are published.
        let issuer = match self.optional(ASSERTION_ISSUER) {
            Some(raw) if is_audience(&raw) => raw,
            Some(raw) => {
                self.problem(
                    ASSERTION_ISSUER,
                    format!("{raw:?} is not a valid issuer (no white space or control characters)"),
                );
                raw
            }
            None => routes
                .first()
                .and_then(|route| Url::parse(&route.resource.uri).ok())
                .map(|url| url.origin().ascii_serialization())
                .unwrap_or_default(),
        };
        Some(AssertionSettings::new(
            issuer,
            lifetime,
            signing?,
            ASSERTION_KEY,
            next.as_ref(),
        ))
    }

    fn url(&mut self, name: &'static str, raw: &str, rule: UrlRule) -> Option<Url> {
        match check_url(raw, rule) {
            Ok(url) => Some(url),
            Err(problem) => {
                self.problem(name, format!("{raw:?} {problem}"));
                None
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UrlRule {
    /// https, or http on a loopback host for local development; no query or
    /// fragment (RFC 8707 §2, RFC 8414 §2).
    Identifier,
    /// https, or http on a loopback host; query allowed.
    Fetchable,
    /// http or https anywhere: the origin may sit on a private network.
    Origin,
}

fn check_url(raw: &str, rule: UrlRule) -> Result<Url, &'static str> {
    if !raw.is_ascii() {
        return Err("must be ASCII (write a non-ASCII host name in punycode)");
    }
    let url = crate::io::parse_url(raw).ok_or("is not an absolute URL")?;
    let loopback = is_loopback_host(&url);
    match (url.scheme(), rule) {
        ("https", _) | ("http", UrlRule::Origin) => {}
        ("http", _) if loopback => {}
        ("http", _) => return Err("must use https (http is allowed only for localhost)"),
        _ => return Err("must be an http(s) URL"),
    }
    if url.host().is_none() {
        return Err("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials");
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment");
    }
    if rule == UrlRule::Identifier && url.query().is_some() {
        return Err("must not have a query");
    }
    Ok(url)
}

/// What is wrong with each scope in `scopes` that is not a scope token.
fn scope_token_problems(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|scope| !is_scope_token(scope))
        .map(|scope| format!("{scope:?} is not a valid scope token (RFC 6749 §3.3)"))
        .collect()
}

/// The RFC 9728 §3.1 metadata location: the well-known segment goes between
/// the host and the resource's path.
fn resource_from(url: &Url) -> Resource {
    let path = url.path().to_owned();
    let suffix = if path == "/" {
        String::new()
    } else {
        path.trim_end_matches('/').to_owned()
    };
    let metadata_path = format!("/.well-known/oauth-protected-resource{suffix}");
    Resource {
        uri: url.as_str().to_owned(),
        path,
        metadata_url: format!("{}{metadata_path}", url.origin().ascii_serialization()),
        metadata_path,
    }
}

impl Config {
    /// Parses every binding. Returns the configuration, or every problem.
    pub fn parse<B: Bindings + ?Sized>(bindings: &B) -> Result<Config, ConfigError> {
        use binding::*;
        let mut p = Parser {
            bindings,
            problems: Vec::new(),
            warnings: Vec::new(),
            dpop: DpopPolicy::Bearer,
            dpop_algorithms: Vec::new(),
        };
        // Before the routes: each route takes these unless it says otherwise.
        p.dpop = p.dpop_policy();
        p.dpop_algorithms = p.algorithm_list(
            DPOP_ALGORITHMS,
            &crate::verify::dpop::DEFAULT_PROOF_ALGORITHMS,
        );

        let issuer_ids = p.required(OAUTH_ISSUER).map(|raw| {
            raw.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
        let mut issuers = Vec::new();
        for id in issuer_ids.iter().flatten() {
            if p.url(OAUTH_ISSUER, id, UrlRule::Identifier).is_some() {
                if issuers
                    .iter()
                    .any(|known: &TrustedIssuer| &known.issuer == id)
                {
                    p.problem(OAUTH_ISSUER, format!("{id:?} is listed twice"));
                }
                issuers.push(TrustedIssuer {
                    issuer: id.clone(),
                    jwks_uri: None,
                });
            }
        }
        let jwks_uris = p.list(OAUTH_JWKS_URI);
        if !jwks_uris.is_empty() {
            if jwks_uris.len() != issuer_ids.as_ref().map_or(0, Vec::len) {
                p.problem(OAUTH_JWKS_URI, "give one JWKS URL per issuer in OAUTH_ISSUER, in the same order, or none to discover them");
            } else {
                for (issuer, raw) in issuers.iter_mut().zip(&jwks_uris) {
                    issuer.jwks_uri = p.url(OAUTH_JWKS_URI, raw, UrlRule::Fetchable);
                }
            }
        }
        let issuer_names: Vec<String> = issuers.iter().map(|i| i.issuer.clone()).collect();

        let routes = match p.optional(MCP_ROUTES) {
            None => {
                let entry = p.flat_entry();
                p.route(&Source::Flat, entry, &issuer_names)
                    .into_iter()
                    .collect()
            }
            Some(raw) => {
                for name in SINGLE_ROUTE {
                    if p.bindings.text(name).is_some_and(|v| !v.trim().is_empty()) {
                        p.problem(
                            name,
                            "must not be set together with MCP_ROUTES (give it in the route entries)",
                        );
                    }
                }
                p.routes(&raw, &issuer_names)
            }
        };
        p.check_routes_together(&routes);
        let mut routes = routes;
        let global_limits = p.rate_limits();
        for route in &mut routes {
            let own = std::mem::take(&mut route.rate_limits);
            route.rate_limits = global_limits.iter().cloned().chain(own).collect();
        }

        let algorithms = p.algorithm_list(JWT_ALGORITHMS, &DEFAULT_ALGORITHMS);
        let dpop = p.dpop_settings(&routes);

        let leeway_seconds = p.number(
            JWT_LEEWAY_SECONDS,
            DEFAULT_LEEWAY_SECONDS,
            0..=MAX_LEEWAY_SECONDS,
        );
        let require_at_jwt_typ = p.flag(JWT_REQUIRE_TYP_AT_JWT);
        let max_token_lifetime_seconds = p
            .optional(JWT_MAX_LIFETIME_SECONDS)
            .map(|_| p.number(JWT_MAX_LIFETIME_SECONDS, 0, 1..=MAX_TOKEN_LIFETIME_SECONDS));
        let max_authorization_bytes = p.number(
            AUTHORIZATION_MAX_BYTES,
            crate::parse::bearer::DEFAULT_MAX_AUTHORIZATION_BYTES as u64,
            AUTHORIZATION_MAX_BYTES_RANGE,
        ) as usize;
        let key_cache = p.key_cache();
        let max_body_bytes = p.number(
            MCP_MAX_BODY_BYTES,
            DEFAULT_MAX_BODY_BYTES,
            1024..=32 * 1024 * 1024,
        ) as usize;
        let session_ttl_seconds = p.number(
            MCP_SESSION_TTL_SECONDS,
            DEFAULT_SESSION_TTL_SECONDS,
            60..=30 * 86_400,
        );
        let origin_connect_timeout_ms = p.number(
            ORIGIN_CONNECT_TIMEOUT_MS,
            DEFAULT_ORIGIN_CONNECT_TIMEOUT_MS,
            100..=60_000,
        ) as u32;
        let origin_first_byte_timeout_ms = p.number(
            ORIGIN_FIRST_BYTE_TIMEOUT_MS,
            DEFAULT_ORIGIN_FIRST_BYTE_TIMEOUT_MS,
            100..=600_000,
        ) as u32;
        let min_protocol_version = p.optional(MCP_MIN_PROTOCOL_VERSION).and_then(|raw| {
            let known = crate::parse::version::KNOWN_REVISIONS;
            let found = known.into_iter().find(|revision| *revision == raw);
            if found.is_none() {
                p.problem(
                    MCP_MIN_PROTOCOL_VERSION,
                    format!(
                        "{raw:?} is not an MCP revision (one of {})",
                        known.join(" ")
                    ),
                );
            }
            found
        });
        // A secret: never echoed, whatever is wrong with it.
        let state_key = match p
            .optional(MCP_STATE_SECRET)
            .map(|raw| StateKey::parse(&raw))
        {
            Some(Ok(key)) => Some(key),
            Some(Err(problem)) => {
                p.problem(MCP_STATE_SECRET, problem);
                None
            }
            None => {
                p.warnings.push(format!("{MCP_STATE_SECRET}: unset, so the requestState of multi round-trip requests (MCP 2026-07-28) reaches clients as the origin made it, and a state issued to one user can be echoed by another unless the origin binds it; set a secret of 32 characters or more to have the gate seal each state to its user and call"));
                None
            }
        };
        let introspection = p.introspection(issuers.len());
        let assertion = p.assertion(&routes);
        let mut allowed_origins = Vec::new();
        for raw in p.list(MCP_ALLOWED_ORIGINS) {
            match crate::io::parse_url(&raw).ok_or(()) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.origin().ascii_serialization() == raw.trim_end_matches('/') =>
                {
                    allowed_origins.push(url.origin().ascii_serialization());
                }
                _ => p.problem(
                    MCP_ALLOWED_ORIGINS,
                    format!("{raw:?} is not an origin like https://app.example.com (no path, no wildcard)"),
                ),
            }
        }
        // Every route is on one host (checked), whose origin is always allowed.
        if let Some(route) = routes.first() {
            if let Ok(url) = Url::parse(&route.resource.uri) {
                allowed_origins.push(url.origin().ascii_serialization());
            }
        }
        if !bindings.has_kv_namespace(JWKS_CACHE) {
            p.problem(JWKS_CACHE, "KV namespace binding is required");
        }

        if p.problems.is_empty() && !issuers.is_empty() && !routes.is_empty() {
            Ok(Config {
                routes,
                issuers,
                algorithms,
                leeway_seconds,
                require_at_jwt_typ,
                max_token_lifetime_seconds,
                max_authorization_bytes,
                key_cache,
                max_body_bytes,
                session_ttl_seconds,
                origin_connect_timeout_ms,
                origin_first_byte_timeout_ms,
                min_protocol_version,
                state_key,
                introspection,
                assertion,
                dpop,
                allowed_origins,
                warnings: p.warnings,
            })
        } else {
            Err(ConfigError {
                problems: p.problems,
            })
        }
    }
}

/// One route as written, before any rule is applied: an `MCP_ROUTES` entry
/// as read ([`RouteEntry::from_value`]), or the single-route bindings
/// gathered into the same shape ([`Parser::flat_entry`]). [`Parser::route`]
/// applies every rule to it, once for both sources. Unknown members are
/// refused, so a misspelt policy member never silently leaves a route open;
/// a policy member given as `null` is present (and refused), not absent.
///
/// The serde attributes are the reader's specification: the tests hold
/// [`RouteEntry::from_value`] to what this derive reads.
#[cfg_attr(test, derive(Deserialize, Debug, PartialEq))]
#[cfg_attr(test, serde(deny_unknown_fields))]
struct RouteEntry {
    resource: Option<String>,
    origin: Option<String>,
    #[cfg_attr(test, serde(default, deserialize_with = "present"))]
    audience: Option<Value>,
    #[cfg_attr(test, serde(default, deserialize_with = "present"))]
    scopes_supported: Option<Value>,
    #[cfg_attr(test, serde(default, deserialize_with = "present"))]
    required_scopes: Option<Value>,
    #[cfg_attr(test, serde(default, deserialize_with = "present"))]
    tool_scopes: Option<Value>,
    #[cfg_attr(test, serde(default, deserialize_with = "present"))]
    method_scopes: Option<Value>,
    #[cfg_attr(test, serde(default, deserialize_with = "present"))]
    scope_implies: Option<Value>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    #[cfg_attr(test, serde(default, deserialize_with = "present"))]
    issuers: Option<Value>,
    /// The name of the binding holding the origin credential (for the flat
    /// form, `ORIGIN_AUTHORIZATION` when it is bound).
    origin_authorization_secret: Option<String>,
    /// The signed assertion's `aud` (for the flat form,
    /// `ORIGIN_ASSERTION_AUDIENCE`); present: the route sends one.
    assertion_audience: Option<String>,
    /// The route's own rate limits (the flat form has none: its route takes
    /// `RATE_LIMITS`, as every route does).
    #[cfg_attr(test, serde(default, deserialize_with = "present"))]
    rate_limits: Option<Value>,
    /// `bearer`, `dpop` or `either` (for the flat form, `DPOP` applies).
    dpop: Option<String>,
}

/// A member that is written is present, even as `null`.
#[cfg(test)]
fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(value).map(Some)
}

/// The members of a [`RouteEntry`] in declaration order: the positions of
/// the array form, and the list serde's unknown-member message gives.
const ROUTE_MEMBERS: [&str; 15] = [
    "resource",
    "origin",
    "audience",
    "scopes_supported",
    "required_scopes",
    "tool_scopes",
    "method_scopes",
    "scope_implies",
    "resource_name",
    "resource_documentation",
    "issuers",
    "origin_authorization_secret",
    "assertion_audience",
    "rate_limits",
    "dpop",
];

impl RouteEntry {
    /// An `MCP_ROUTES` entry read as serde's derive of the struct above
    /// reads it from a JSON value (`serde_json::from_value`), with serde's
    /// own messages: an object by member name (unknown members refused,
    /// members in the map's order), or an array by position (missing text
    /// members refused, missing JSON members absent, extra elements
    /// refused). Written out because the derive, with the value deserializer
    /// it brings along, was a tenth of the configuration's code in the worker.
    fn from_value(value: Value) -> Result<RouteEntry, serde_json::Error> {
        use serde::de::Error as _;
        let mut entry = RouteEntry {
            resource: None,
            origin: None,
            audience: None,
            scopes_supported: None,
            required_scopes: None,
            tool_scopes: None,
            method_scopes: None,
            scope_implies: None,
            resource_name: None,
            resource_documentation: None,
            issuers: None,
            origin_authorization_secret: None,
            assertion_audience: None,
            rate_limits: None,
            dpop: None,
        };
        match value {
            Value::Object(members) => {
                for (name, value) in members {
                    let Some(index) = ROUTE_MEMBERS.iter().position(|member| *member == name)
                    else {
                        return Err(serde_json::Error::unknown_field(&name, &ROUTE_MEMBERS));
                    };
                    entry.set(index, value)?;
                }
            }
            Value::Array(items) => {
                let len = items.len();
                let mut items = items.into_iter();
                for index in 0..ROUTE_MEMBERS.len() {
                    match items.next() {
                        Some(value) => entry.set(index, value)?,
                        None if matches!(entry.slot(index), Slot::Json(_)) => {}
                        None => {
                            return Err(serde_json::Error::invalid_length(
                                index,
                                &"struct RouteEntry with 15 elements",
                            ))
                        }
                    }
                }
                if items.len() != 0 {
                    return Err(serde_json::Error::invalid_length(
                        len,
                        &"fewer elements in array",
                    ));
                }
            }
            other => {
                return Err(serde_json::Error::invalid_type(
                    unexpected(&other),
                    &"struct RouteEntry",
                ))
            }
        }
        Ok(entry)
    }

    /// The field of the [`ROUTE_MEMBERS`] member at `index` (the last for
    /// any index past them).
    fn slot(&mut self, index: usize) -> Slot<'_> {
        match index {
            0 => Slot::Text(&mut self.resource),
            1 => Slot::Text(&mut self.origin),
            2 => Slot::Json(&mut self.audience),
            3 => Slot::Json(&mut self.scopes_supported),
            4 => Slot::Json(&mut self.required_scopes),
            5 => Slot::Json(&mut self.tool_scopes),
            6 => Slot::Json(&mut self.method_scopes),
            7 => Slot::Json(&mut self.scope_implies),
            8 => Slot::Text(&mut self.resource_name),
            9 => Slot::Text(&mut self.resource_documentation),
            10 => Slot::Json(&mut self.issuers),
            11 => Slot::Text(&mut self.origin_authorization_secret),
            12 => Slot::Text(&mut self.assertion_audience),
            13 => Slot::Json(&mut self.rate_limits),
            _ => Slot::Text(&mut self.dpop),
        }
    }

    fn set(&mut self, index: usize, value: Value) -> Result<(), serde_json::Error> {
        match self.slot(index) {
            Slot::Text(field) => {
                *field = match value {
                    Value::Null => None,
                    Value::String(text) => Some(text),
                    other => {
                        return Err(serde::de::Error::invalid_type(
                            unexpected(&other),
                            &"a string",
                        ))
                    }
                }
            }
            Slot::Json(field) => *field = Some(value),
        }
        Ok(())
    }
}

/// A [`RouteEntry`] field: text (`Option<String>`: `null` is absent, any
/// other non-string refused), or any JSON value, `null` included.
enum Slot<'e> {
    Text(&'e mut Option<String>),
    Json(&'e mut Option<Value>),
}

/// What serde_json's value deserializer names a value it refuses.
fn unexpected(value: &Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            (None, None) => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// Where a route was written, which decides how its problems are named.
enum Source {
    /// The single-route bindings: a problem names the binding.
    Flat,
    /// An `MCP_ROUTES` entry: a problem names the binding, then the entry
    /// (`route 2 (https://…)`) and the member.
    Entry(String),
}

/// One part of a route, with its flat binding and its `MCP_ROUTES` member.
#[derive(Clone, Copy)]
enum Field {
    Resource,
    Origin,
    Audience,
    ScopesSupported,
    RequiredScopes,
    ToolScopes,
    MethodScopes,
    ScopeImplies,
    ResourceDocumentation,
    Issuers,
    OriginAuthorization,
    AssertionAudience,
    RateLimits,
    Dpop,
}

impl Field {
    fn binding(self) -> &'static str {
        use binding::*;
        match self {
            Field::Resource => MCP_RESOURCE,
            Field::Origin => MCP_ORIGIN,
            Field::Audience => OAUTH_AUDIENCE,
            Field::ScopesSupported => MCP_SCOPES_SUPPORTED,
            Field::RequiredScopes => MCP_REQUIRED_SCOPES,
            Field::ToolScopes => MCP_TOOL_SCOPES,
            Field::MethodScopes => MCP_METHOD_SCOPES,
            Field::ScopeImplies => MCP_SCOPE_IMPLIES,
            Field::ResourceDocumentation => MCP_RESOURCE_DOCUMENTATION,
            // Only entries choose issuers; the flat route takes them all.
            Field::Issuers => OAUTH_ISSUER,
            Field::OriginAuthorization => ORIGIN_AUTHORIZATION,
            Field::AssertionAudience => ORIGIN_ASSERTION_AUDIENCE,
            // Only entries have their own; the flat route takes the global ones.
            Field::RateLimits => RATE_LIMITS,
            Field::Dpop => DPOP,
        }
    }

    /// The member's name and what follows it in a problem: a URL member reads
    /// `resource "…" must use https`, a list or map `required_scopes: "…" is …`.
    fn member(self) -> (&'static str, &'static str) {
        match self {
            Field::Resource => ("resource", " "),
            Field::Origin => ("origin", " "),
            Field::Audience => ("audience", ": "),
            Field::ScopesSupported => ("scopes_supported", ": "),
            Field::RequiredScopes => ("required_scopes", ": "),
            Field::ToolScopes => ("tool_scopes", ": "),
            Field::MethodScopes => ("method_scopes", ": "),
            Field::ScopeImplies => ("scope_implies", ": "),
            Field::ResourceDocumentation => ("resource_documentation", " "),
            Field::Issuers => ("issuers", ": "),
            Field::OriginAuthorization => ("origin_authorization_secret", " "),
            Field::AssertionAudience => ("assertion_audience", " "),
            Field::RateLimits => ("rate_limits", ": "),
            Field::Dpop => ("dpop", " "),
        }
    }
}

/// Trimmed text; blank is absent (as for every binding).
fn text(value: Option<String>) -> Option<String> {
    value
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// An accepted `aud` value: a word, as `OAUTH_AUDIENCE` splits them. No
/// control characters either, so no two audience lists share a check binding.
fn is_audience(audience: &str) -> bool {
    !audience.is_empty()
        && !audience
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
}

impl<B: Bindings + ?Sized> Parser<'_, B> {
    /// A route's binding that is taken, but not as written.
    fn route_warning(&mut self, source: &Source, field: Field, warning: impl fmt::Display) {
        let line = match source {
            Source::Flat => format!("{}: {warning}", field.binding()),
            Source::Entry(label) => {
                let (member, then) = field.member();
                format!("{}: {label}: {member}{then}{warning}", binding::MCP_ROUTES)
            }
        };
        self.warnings.push(line);
    }

    fn route_problem(&mut self, source: &Source, field: Field, problem: impl fmt::Display) {
        match source {
            Source::Flat => self.problem(field.binding(), problem.to_string()),
            Source::Entry(label) => {
                let (member, then) = field.member();
                self.problem(
                    binding::MCP_ROUTES,
                    format!("{label}: {member}{then}{problem}"),
                );
            }
        }
    }

    fn missing(&mut self, source: &Source, field: Field) {
        match source {
            Source::Flat => self.problem(field.binding(), "required but not set"),
            Source::Entry(label) => {
                let member = field.member().0;
                self.problem(
                    binding::MCP_ROUTES,
                    format!("{label}: \"{member}\" is required"),
                );
            }
        }
    }

    /// The single-route bindings as one route entry; read only, every rule
    /// is [`Parser::route`]'s.
    fn flat_entry(&self) -> RouteEntry {
        use binding::*;
        let value = |name| self.optional(name).map(Value::String);
        RouteEntry {
            resource: self.optional(MCP_RESOURCE),
            origin: self.optional(MCP_ORIGIN),
            audience: value(OAUTH_AUDIENCE),
            scopes_supported: value(MCP_SCOPES_SUPPORTED),
            required_scopes: value(MCP_REQUIRED_SCOPES),
            // Still JSON text here: Parser::scope_map reads it.
            tool_scopes: value(MCP_TOOL_SCOPES),
            method_scopes: value(MCP_METHOD_SCOPES),
            scope_implies: value(MCP_SCOPE_IMPLIES),
            resource_name: self.optional(MCP_RESOURCE_NAME),
            resource_documentation: self.optional(MCP_RESOURCE_DOCUMENTATION),
            issuers: None,
            origin_authorization_secret: self
                .bindings
                .text(ORIGIN_AUTHORIZATION)
                .is_some_and(|value| !value.is_empty())
                .then(|| ORIGIN_AUTHORIZATION.to_owned()),
            assertion_audience: self.optional(ORIGIN_ASSERTION_AUDIENCE),
            rate_limits: None,
            // `DPOP` is read once for every route (Parser::dpop_policy).
            dpop: None,
        }
    }

    /// `RATE_LIMITS`: the rules every route counts.
    fn rate_limits(&mut self) -> Vec<RateRule> {
        const NAME: &str = binding::RATE_LIMITS;
        let Some(raw) = self.optional(NAME) else {
            return Vec::new();
        };
        let Ok(value) = serde_json::from_str::<Value>(&raw) else {
            self.problem(NAME, "is not valid JSON");
            return Vec::new();
        };
        let bindings = self.bindings;
        let bound = |name: &str| bindings.has_rate_limiter(name);
        parse_rules(value, "", &bound).unwrap_or_else(|problems| {
            for problem in problems {
                self.problem(NAME, problem);
            }
            Vec::new()
        })
    }

    /// `MCP_ROUTES`: every entry, each checked by [`Parser::route`].
    fn routes(&mut self, raw: &str, issuers: &[String]) -> Vec<Route> {
        const NAME: &str = binding::MCP_ROUTES;
        let entries: Vec<Value> = match serde_json::from_str(raw) {
            Ok(Value::Array(entries)) => entries,
            Ok(_) => {
                self.problem(NAME, "must be a JSON array of route objects");
                return Vec::new();
            }
            Err(_) => {
                self.problem(NAME, "is not valid JSON");
                return Vec::new();
            }
        };
        if entries.is_empty() {
            self.problem(NAME, "must list at least one route");
        }
        let mut routes = Vec::new();
        for (index, value) in entries.into_iter().enumerate() {
            let number = index + 1;
            let label = match value.get("resource").and_then(Value::as_str) {
                Some(resource) => format!("route {number} ({resource})"),
                None => format!("route {number}"),
            };
            match RouteEntry::from_value(value) {
                Ok(entry) => routes.extend(self.route(&Source::Entry(label), entry, issuers)),
                // serde's message names the member (unknown field, wrong type),
                // never a secret: secrets are not in this binding.
                Err(error) => self.problem(NAME, format!("{label}: {error}")),
            }
        }
        routes
    }

    /// Every rule of one route, whichever form it was written in; problems
    /// in [`binding::SINGLE_ROUTE`] order. A route with problems is still
    /// returned when it can be, so the checks between routes see it; the
    /// configuration fails anyway.
    fn route(&mut self, source: &Source, entry: RouteEntry, issuers: &[String]) -> Option<Route> {
        let resource = match text(entry.resource) {
            None => {
                self.missing(source, Field::Resource);
                None
            }
            Some(raw) => self
                .route_url(source, Field::Resource, &raw, UrlRule::Identifier)
                .map(|url| Resource {
                    // Exactly as configured: it is what tokens carry in `aud`.
                    uri: raw,
                    ..resource_from(&url)
                }),
        };
        let origin = match text(entry.origin) {
            None => {
                self.missing(source, Field::Origin);
                None
            }
            Some(raw) => self.route_url(source, Field::Origin, &raw, UrlRule::Origin),
        };
        let mut audiences = self
            .words(source, Field::Audience, entry.audience)
            .unwrap_or_default();
        for bad in audiences.iter().filter(|audience| !is_audience(audience)) {
            self.route_problem(
                source,
                Field::Audience,
                format!("{bad:?} is not a valid audience (no white space or control characters)"),
            );
        }
        if audiences.is_empty() {
            audiences.extend(resource.as_ref().map(|resource| resource.uri.clone()));
        }
        let mut scopes_supported =
            self.scopes(source, Field::ScopesSupported, entry.scopes_supported);
        // MCP 2026-07-28 authorization §Refresh Tokens: a protected resource
        // SHOULD NOT list offline_access (refresh tokens are not a resource
        // requirement); challenges leave it out too (forward::reply).
        if scopes_supported.iter().any(|scope| scope == OFFLINE_ACCESS) {
            scopes_supported.retain(|scope| scope != OFFLINE_ACCESS);
            self.route_warning(
                source,
                Field::ScopesSupported,
                "offline_access is left out of the metadata: refresh tokens are the authorization server's business, not a resource requirement",
            );
        }
        let required_scopes = self.scopes(source, Field::RequiredScopes, entry.required_scopes);
        if required_scopes.iter().any(|scope| scope == OFFLINE_ACCESS) {
            self.route_warning(
                source,
                Field::RequiredScopes,
                "offline_access is required of tokens but never named in a challenge, so clients cannot learn they need it",
            );
        }
        let tools = self.scope_map(source, Field::ToolScopes, entry.tool_scopes);
        let methods = self.scope_map(source, Field::MethodScopes, entry.method_scopes);
        let known: std::collections::BTreeSet<String> = scopes_supported
            .iter()
            .chain(&required_scopes)
            .chain(tools.all_scopes())
            .chain(methods.all_scopes())
            .filter(|scope| *scope != DEFAULT_ENTRY_NAME)
            .cloned()
            .collect();
        let implies = self.scope_hierarchy(source, entry.scope_implies, &known);
        let resource_name = text(entry.resource_name);
        let resource_documentation = text(entry.resource_documentation).filter(|raw| {
            self.route_url(source, Field::ResourceDocumentation, raw, UrlRule::Origin)
                .is_some()
        });
        let route_issuers = match entry.issuers {
            None => issuers.to_vec(),
            Some(value) => {
                let listed = self
                    .words(source, Field::Issuers, Some(value))
                    .unwrap_or_default();
                if listed.is_empty() {
                    self.route_problem(source, Field::Issuers, "must not be empty");
                }
                for iss in listed.iter().filter(|iss| !issuers.contains(iss)) {
                    self.route_problem(
                        source,
                        Field::Issuers,
                        format!("issuer {iss:?} is not one of OAUTH_ISSUER"),
                    );
                }
                listed
            }
        };
        let origin_authorization = entry
            .origin_authorization_secret
            .and_then(|name| self.origin_credential(source, name.trim()));
        let assertion_audience = text(entry.assertion_audience).filter(|audience| {
            let valid = is_audience(audience);
            if !valid {
                self.route_problem(
                    source,
                    Field::AssertionAudience,
                    format!("{audience:?} is not a valid audience (no white space or control characters)"),
                );
            }
            valid
        });
        let rate_limits = match (entry.rate_limits, &resource) {
            (Some(value), Some(resource)) => {
                let bindings = self.bindings;
                let bound = |name: &str| bindings.has_rate_limiter(name);
                parse_rules(value, &resource.uri, &bound).unwrap_or_else(|problems| {
                    for problem in problems {
                        self.route_problem(source, Field::RateLimits, problem);
                    }
                    Vec::new()
                })
            }
            _ => Vec::new(),
        };
        let dpop = match text(entry.dpop) {
            None => self.dpop,
            Some(word) => DpopPolicy::from_word(&word).unwrap_or_else(|| {
                self.route_problem(
                    source,
                    Field::Dpop,
                    format!("{word:?} is not a policy (bearer, dpop or either)"),
                );
                DpopPolicy::Bearer
            }),
        };
        let mut check_binding = String::new();
        for part in route_issuers.iter().map(String::as_str).chain(["\u{0}"]) {
            check_binding.push_str(part);
            check_binding.push('\n');
        }
        for audience in &audiences {
            check_binding.push_str(audience);
            check_binding.push('\n');
        }
        Some(Route {
            policy: ScopePolicy {
                required: required_scopes.clone(),
                methods,
                tools,
                implies,
            },
            resource: resource?,
            origin: origin?,
            issuers: route_issuers,
            audiences,
            scopes_supported,
            required_scopes,
            resource_name,
            resource_documentation,
            origin_authorization,
            assertion_audience,
            rate_limits,
            dpop,
            dpop_algorithms: self.dpop_algorithms.clone(),
            check_binding,
        })
    }

    /// A list of JWS algorithm names (`JWT_ALGORITHMS`, `DPOP_ALGORITHMS`):
    /// `default` when unbound. Only asymmetric algorithms have names here.
    fn algorithm_list(
        &mut self,
        name: &'static str,
        default: &[JwsAlgorithm],
    ) -> Vec<JwsAlgorithm> {
        let Some(raw) = self.optional(name) else {
            return default.to_vec();
        };
        let mut algorithms = Vec::new();
        for word in raw.split_whitespace() {
            match JwsAlgorithm::from_name(word) {
                Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                Some(_) => {}
                None => self.problem(
                    name,
                    format!("{word:?} is not supported (choose from RS256 RS384 RS512 PS256 PS384 PS512 ES256 EdDSA; none and HMAC are never accepted)"),
                ),
            }
        }
        algorithms
    }

    /// `DPOP`: `bearer` (the default), `dpop` or `either`.
    fn dpop_policy(&mut self) -> DpopPolicy {
        let Some(word) = self.optional(binding::DPOP) else {
            return DpopPolicy::Bearer;
        };
        DpopPolicy::from_word(&word.to_ascii_lowercase()).unwrap_or_else(|| {
            self.problem(
                binding::DPOP,
                format!("{word:?} is not a policy (bearer, dpop or either)"),
            );
            DpopPolicy::Bearer
        })
    }

    /// The DPoP settings (RFC 9449) shared by the routes taking DPoP.
    fn dpop_settings(&mut self, routes: &[Route]) -> DpopSettings {
        use binding::*;
        let iat_window_seconds = self.seconds(
            DPOP_IAT_WINDOW_SECONDS,
            crate::verify::dpop::DEFAULT_IAT_WINDOW_SECONDS as i64,
            10..=3600,
        );
        let nonce_lifetime_seconds = self.seconds(
            DPOP_NONCE_LIFETIME_SECONDS,
            crate::verify::dpop::DEFAULT_NONCE_LIFETIME_SECONDS as i64,
            10..=3600,
        );
        let takes_dpop = routes.iter().any(|route| route.dpop.accepts_dpop());
        let replay = match self.optional(DPOP_REPLAY_STORE) {
            None => None,
            Some(word) if word == "memory" => Some(ReplayStore::Memory),
            Some(name) if self.bindings.has_durable_object(&name) => {
                Some(ReplayStore::DurableObject(name))
            }
            Some(name) => {
                self.problem(
                    DPOP_REPLAY_STORE,
                    format!("{name:?} is neither `memory` nor a Durable Object namespace binding (bind class DpopReplay under that name, as wrangler.toml does for DPOP_REPLAY)"),
                );
                None
            }
        };
        if takes_dpop && !matches!(replay, Some(ReplayStore::DurableObject(_))) {
            self.warnings.push(format!("{DPOP_REPLAY_STORE}: DPoP proofs are remembered in each isolate's memory only, so a proof replayed to another isolate (another data centre) within its {iat_window_seconds} s window is accepted; bind the DpopReplay Durable Object and name it here to accept each proof once worldwide"));
        }
        // A secret: never echoed, whatever is wrong with it.
        let nonces = match self
            .optional(DPOP_NONCE_SECRET)
            .map(|raw| NonceKey::parse(&raw))
        {
            Some(Ok(key)) => Some(key),
            Some(Err(problem)) => {
                self.problem(DPOP_NONCE_SECRET, problem);
                None
            }
            None => None,
        };
        if !takes_dpop {
            for name in [DPOP_REPLAY_STORE, DPOP_NONCE_SECRET, DPOP_ALGORITHMS] {
                if self.optional(name).is_some() {
                    self.warnings.push(format!(
                        "{name}: set, but no route takes DPoP (set DPOP, or a route's dpop, to dpop or either)"
                    ));
                }
            }
        }
        if takes_dpop && self.dpop_algorithms.is_empty() {
            self.problem(DPOP_ALGORITHMS, "names no algorithm");
        }
        DpopSettings {
            algorithms: self.dpop_algorithms.clone(),
            iat_window_seconds,
            replay: replay.unwrap_or(ReplayStore::Memory),
            nonces,
            nonce_lifetime_seconds,
        }
    }

    fn route_url(
        &mut self,
        source: &Source,
        field: Field,
        raw: &str,
        rule: UrlRule,
    ) -> Option<Url> {
        check_url(raw, rule)
            .map_err(|problem| self.route_problem(source, field, format!("{raw:?} {problem}")))
            .ok()
    }

    /// A space-separated string or an array of strings; `None` when it is
    /// neither (named).
    fn words(
        &mut self,
        source: &Source,
        field: Field,
        value: Option<Value>,
    ) -> Option<Vec<String>> {
        let words = match value {
            None => Some(Vec::new()),
            Some(Value::String(text)) => Some(text.split_whitespace().map(str::to_owned).collect()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(word) => Some(word),
                    _ => None,
                })
                .collect(),
            Some(_) => None,
        };
        if words.is_none() {
            self.route_problem(
                source,
                field,
                "must be a space-separated string or an array of strings",
            );
        }
        words
    }

    fn scopes(&mut self, source: &Source, field: Field, value: Option<Value>) -> Vec<String> {
        let scopes = self.words(source, field, value).unwrap_or_default();
        for problem in scope_token_problems(&scopes) {
            self.route_problem(source, field, problem);
        }
        scopes
    }

    /// A scope map; absent means empty. The flat binding holds it as JSON text.
    /// A route member that is JSON: as written in an `MCP_ROUTES` entry, or
    /// the text of a flat binding parsed. `None` when absent or not JSON.
    fn route_json(&mut self, source: &Source, field: Field, value: Option<Value>) -> Option<Value> {
        match (source, value?) {
            (Source::Flat, Value::String(raw)) => serde_json::from_str(&raw)
                .inspect_err(|_| self.route_problem(source, field, "is not valid JSON"))
                .ok(),
            (_, value) => Some(value),
        }
    }

    fn scope_map(&mut self, source: &Source, field: Field, value: Option<Value>) -> ScopeMap {
        let Some(value) = self.route_json(source, field, value) else {
            return ScopeMap::default();
        };
        ScopeMap::from_value(value).unwrap_or_else(|problems| {
            for problem in problems {
                self.route_problem(source, field, problem);
            }
            ScopeMap::default()
        })
    }

    /// A route's scope hierarchy (JSON text in the flat form), checked
    /// against every scope the route names (`known`).
    fn scope_hierarchy(
        &mut self,
        source: &Source,
        value: Option<Value>,
        known: &std::collections::BTreeSet<String>,
    ) -> ScopeHierarchy {
        let field = Field::ScopeImplies;
        let Some(value) = self.route_json(source, field, value) else {
            return ScopeHierarchy::default();
        };
        ScopeHierarchy::from_value(value, known).unwrap_or_else(|problems| {
            for problem in problems {
                self.route_problem(source, field, problem);
            }
            ScopeHierarchy::default()
        })
    }

    /// The origin credential: the value of the binding `name`. A secret:
    /// problems say what is wrong, never what it is.
    fn origin_credential(&mut self, source: &Source, name: &str) -> Option<String> {
        let field = Field::OriginAuthorization;
        // A blank name names nothing: refused like any unbound one.
        let Some(value) = self
            .bindings
            .text(name)
            .filter(|value| !value.is_empty() && !name.is_empty())
        else {
            self.route_problem(
                source,
                field,
                format!("names {name:?}, which is not a bound secret"),
            );
            return None;
        };
        if !is_header_value(&value) {
            let whose = match source {
                Source::Flat => String::new(),
                Source::Entry(_) => format!("names {name:?}, whose value "),
            };
            self.route_problem(
                source,
                field,
                format!("{whose}must be a single-line header value of visible ASCII"),
            );
            return None;
        }
        Some(value)
    }

    /// Routes share one host, and no route's path lies within another's
    /// (requests and metadata would be ambiguous).
    fn check_routes_together(&mut self, routes: &[Route]) {
        const NAME: &str = binding::MCP_ROUTES;
        let host_of = |route: &Route| {
            Url::parse(&route.resource.uri)
                .map(|url| url.origin().ascii_serialization())
                .unwrap_or_default()
        };
        if let Some(first) = routes.first() {
            let host = host_of(first);
            for route in &routes[1..] {
                if host_of(route) != host {
                    self.problem(
                        NAME,
                        format!(
                            "{} is on {}, not on {host} like {}: all routes must be on the gate's one host",
                            route.resource.uri,
                            host_of(route),
                            first.resource.uri
                        ),
                    );
                }
            }
        }
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                let (pa, pb) = (
                    a.resource.path.trim_end_matches('/'),
                    b.resource.path.trim_end_matches('/'),
                );
                if pa == pb {
                    self.problem(
                        NAME,
                        format!(
                            "{} and {} have the same path",
                            a.resource.uri, b.resource.uri
                        ),
                    );
                } else if a.suffix_of(pb).is_some() || b.suffix_of(pa).is_some() {
                    self.problem(
                        NAME,
                        format!(
                            "{} and {} overlap: one path lies within the other",
                            a.resource.uri, b.resource.uri
                        ),
                    );
                }
            }
        }
    }
}

fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7F).contains(&b))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    pub struct MapBindings {
        pub vars: HashMap<String, String>,
        pub kv: bool,
    }

    impl Bindings for MapBindings {
        fn text(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn has_kv_namespace(&self, name: &str) -> bool {
            self.kv && name == binding::JWKS_CACHE
        }
        fn has_rate_limiter(&self, name: &str) -> bool {
            name.starts_with("RL_")
        }
        fn has_durable_object(&self, name: &str) -> bool {
            name.starts_with("DO_")
        }
    }

    fn bindings(pairs: &[(&str, &str)]) -> MapBindings {
        let mut vars: HashMap<String, String> = [
            ("MCP_RESOURCE", "https://mcp.example.com/mcp"),
            ("MCP_ORIGIN", "http://origin.internal:8080/mcp"),
            ("OAUTH_ISSUER", "https://auth.example.com"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (name, value) in pairs {
            vars.insert((*name).to_owned(), (*value).to_owned());
        }
        MapBindings { vars, kv: true }
    }

    fn problems(result: Result<Config, ConfigError>) -> Vec<&'static str> {
        result
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.binding)
            .collect()
    }

    /// RFC 8037 appendix A.1 and RFC 7515 appendix A.3: public example keys.
    const ED25519_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    const P256_JWK: &str = r#"{"kty":"EC","crv":"P-256","kid":"next","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn assertion_keys_are_parsed_and_published_with_the_next_one() {
        let config = Config::parse(&bindings(&[
            ("ASSERTION_KEY", ED25519_JWK),
            ("ASSERTION_KEY_NEXT", P256_JWK),
            ("ORIGIN_ASSERTION_AUDIENCE", "https://origin.internal"),
            ("ASSERTION_LIFETIME_SECONDS", "30"),
        ]))
        .unwrap();
        let assertion = config.assertion.unwrap();
        assert_eq!(assertion.issuer, "https://mcp.example.com");
        assert_eq!(assertion.lifetime_seconds, 30);
        assert_eq!(assertion.signing_binding, "ASSERTION_KEY");
        assert!(assertion.jwks.contains(r#""kid":"next""#));
        assert!(!assertion.jwks.contains("nWGxne"));
        assert_eq!(
            config.routes[0].assertion_audience.as_deref(),
            Some("https://origin.internal")
        );
    }

    #[test]
    fn bad_assertion_bindings_are_named_without_their_values() {
        let result = Config::parse(&bindings(&[
            ("ASSERTION_KEY", P256_JWK),
            ("ASSERTION_KEY_NEXT", "{not json"),
            ("ASSERTION_LIFETIME_SECONDS", "0"),
            ("ORIGIN_ASSERTION_AUDIENCE", "two words"),
        ]));
        let error = result.clone().unwrap_err().to_string();
        assert!(!error.contains("f83OJ3D2"), "{error}");
        assert_eq!(
            problems(result),
            [
                "ORIGIN_ASSERTION_AUDIENCE",
                "ASSERTION_KEY",
                "ASSERTION_KEY_NEXT",
                "ASSERTION_LIFETIME_SECONDS"
            ]
        );
        // A route that sends an assertion needs a key to sign it.
        let result = Config::parse(&bindings(&[("ORIGIN_ASSERTION_AUDIENCE", "o")]));
        assert_eq!(problems(result), ["ASSERTION_KEY"]);
        let result = Config::parse(&bindings(&[
            ("ASSERTION_KEY", ED25519_JWK),
            ("ASSERTION_KEY_NEXT", ED25519_JWK),
        ]));
        assert_eq!(problems(result), ["ASSERTION_KEY_NEXT"]);
    }

    #[test]
    fn minimal_configuration_gets_defaults() {
        let config = Config::parse(&bindings(&[])).unwrap();
        assert_eq!(config.routes[0].resource.path, "/mcp");
        assert_eq!(
            config.routes[0].resource.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            config.routes[0].resource.metadata_path,
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(config.routes[0].audiences, ["https://mcp.example.com/mcp"]);
        assert_eq!(config.algorithms, DEFAULT_ALGORITHMS);
        assert_eq!(config.leeway_seconds, 60);
        assert_eq!(config.key_cache, CacheSettings::default());
        assert_eq!(
            config.issuers,
            [TrustedIssuer {
                issuer: "https://auth.example.com".into(),
                jwks_uri: None
            }]
        );
    }

    #[test]
    fn host_only_resource_uses_the_root_metadata_path() {
        let config =
            Config::parse(&bindings(&[("MCP_RESOURCE", "https://mcp.example.com")])).unwrap();
        assert_eq!(config.routes[0].resource.path, "/");
        assert_eq!(
            config.routes[0].resource.metadata_path,
            "/.well-known/oauth-protected-resource"
        );
        assert_eq!(config.routes[0].resource.uri, "https://mcp.example.com");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut b = bindings(&[
            ("MCP_RESOURCE", "http://mcp.example.com/mcp"),
            ("OAUTH_ISSUER", "https://a.example https://a.example"),
            ("OAUTH_JWKS_URI", "https://a.example/jwks"),
            ("JWT_ALGORITHMS", "RS256 HS256 none"),
            ("JWT_LEEWAY_SECONDS", "-5"),
            ("JWKS_CACHE_TTL_SECONDS", "0"),
            ("MCP_REQUIRED_SCOPES", "ok bad\"scope"),
            ("ORIGIN_AUTHORIZATION", "Bearer x\nInjected: y"),
        ]);
        b.vars.remove("MCP_ORIGIN");
        b.kv = false;
        let error = Config::parse(&b).unwrap_err();
        let names: Vec<_> = error.problems.iter().map(|p| p.binding).collect();
        assert_eq!(
            names,
            [
                "OAUTH_ISSUER",
                "OAUTH_JWKS_URI",
                "MCP_RESOURCE",
                "MCP_ORIGIN",
                "MCP_REQUIRED_SCOPES",
                "ORIGIN_AUTHORIZATION",
                "JWT_ALGORITHMS",
                "JWT_ALGORITHMS",
                "JWT_LEEWAY_SECONDS",
                "JWKS_CACHE_TTL_SECONDS",
                "JWKS_CACHE"
            ]
        );
        let text = error.to_string();
        assert!(text.contains("MCP_ORIGIN: required but not set"), "{text}");
        assert!(!text.contains("Injected"), "secret echoed: {text}");
    }

    /// The worker links url with the ASCII-only IDNA adapter (Cargo.toml):
    /// an internationalized host name must be given in punycode, and a
    /// Unicode one is refused, naming the binding, rather than mapped.
    #[test]
    fn host_names_are_ascii_or_punycode() {
        assert_eq!(
            problems(Config::parse(&bindings(&[(
                "MCP_ORIGIN",
                "https://bücher.example/mcp"
            )]))),
            ["MCP_ORIGIN"]
        );
        let config = Config::parse(&bindings(&[(
            "MCP_ORIGIN",
            "https://xn--bcher-kva.example/mcp",
        )]))
        .unwrap();
        assert_eq!(
            config.routes[0].origin.as_str(),
            "https://xn--bcher-kva.example/mcp"
        );
    }

    #[test]
    fn identifiers_must_be_https_without_query_or_fragment() {
        for bad in [
            "https://mcp.example.com/mcp?x=1",
            "https://mcp.example.com/mcp#f",
            "ftp://mcp.example.com/",
            "mcp.example.com/mcp",
            "https://user:pw@mcp.example.com/",
        ] {
            assert_eq!(
                problems(Config::parse(&bindings(&[("MCP_RESOURCE", bad)]))),
                ["MCP_RESOURCE"],
                "{bad}"
            );
        }
        for local in [
            "http://localhost:8787/mcp",
            "http://127.0.0.1:8787/mcp",
            "http://[::1]:8787/mcp",
        ] {
            assert!(
                Config::parse(&bindings(&[("MCP_RESOURCE", local)])).is_ok(),
                "{local}"
            );
        }
    }

    #[test]
    fn key_cache_knobs_are_parsed_and_checked() {
        let config = Config::parse(&bindings(&[
            ("JWKS_CACHE_TTL_SECONDS", "300"),
            ("JWKS_MIN_TTL_SECONDS", "120"),
            ("JWKS_MAX_TTL_SECONDS", "3600"),
            ("JWKS_MAX_STALE_SECONDS", "0"),
            ("JWKS_REFRESH_COOLDOWN_SECONDS", "5"),
            ("JWKS_FETCH_TIMEOUT_MS", "1500"),
            ("JWKS_MAX_BYTES", "65536"),
        ]))
        .unwrap();
        assert_eq!(
            config.key_cache,
            CacheSettings {
                default_ttl: 300,
                min_ttl: 120,
                max_ttl: 3600,
                max_stale: 0,
                refresh_cooldown: 5,
                limits: FetchLimits {
                    timeout_ms: 1500,
                    max_bytes: 65536
                },
            }
        );
        let bad = Config::parse(&bindings(&[
            ("JWKS_MIN_TTL_SECONDS", "7200"),
            ("JWKS_MAX_TTL_SECONDS", "3600"),
            ("JWKS_FETCH_TIMEOUT_MS", "0"),
        ]));
        assert_eq!(
            problems(bad),
            ["JWKS_FETCH_TIMEOUT_MS", "JWKS_MIN_TTL_SECONDS"]
        );
    }

    #[test]
    fn jwks_uris_pair_with_issuers() {
        let config = Config::parse(&bindings(&[
            ("OAUTH_ISSUER", "https://a.example https://b.example/tenant"),
            (
                "OAUTH_JWKS_URI",
                "https://a.example/jwks https://b.example/keys",
            ),
        ]))
        .unwrap();
        assert_eq!(
            config.issuers[1].jwks_uri.as_ref().unwrap().as_str(),
            "https://b.example/keys"
        );
        assert!(config.issuer("https://b.example/tenant").is_some());
        assert!(config.issuer("https://b.example").is_none());
    }

    #[test]
    fn explicit_audiences_replace_the_default() {
        let config = Config::parse(&bindings(&[(
            "OAUTH_AUDIENCE",
            "api://mcp https://mcp.example.com/mcp",
        )]))
        .unwrap();
        assert_eq!(
            config.routes[0].audiences,
            ["api://mcp", "https://mcp.example.com/mcp"]
        );
    }

    #[test]
    fn debug_output_redacts_the_origin_secret() {
        let config = Config::parse(&bindings(&[(
            "ORIGIN_AUTHORIZATION",
            "Bearer origin-secret",
        )]))
        .unwrap();
        assert!(!format!("{config:?}").contains("origin-secret"));
    }

    #[test]
    fn scope_maps_fail_closed_naming_the_problem() {
        let config = Config::parse(&bindings(&[
            ("MCP_TOOL_SCOPES", r#"{"void": "w", "*": ["r"]}"#),
            ("MCP_METHOD_SCOPES", r#"{"resources/read": "files:read"}"#),
            ("MCP_MAX_BODY_BYTES", "2048"),
        ]))
        .unwrap();
        assert_eq!(config.routes[0].policy.tools.scopes_for("void"), ["w"]);
        assert_eq!(config.routes[0].policy.tools.scopes_for("other"), ["r"]);
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.session_ttl_seconds, DEFAULT_SESSION_TTL_SECONDS);
        let error = Config::parse(&bindings(&[
            ("MCP_TOOL_SCOPES", "{not json"),
            ("MCP_METHOD_SCOPES", r#"["tools/call"]"#),
            ("MCP_MAX_BODY_BYTES", "1"),
        ]))
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("MCP_TOOL_SCOPES: is not valid JSON"),
            "{text}"
        );
        assert!(
            text.contains("MCP_METHOD_SCOPES: must be a JSON object"),
            "{text}"
        );
        assert!(text.contains("MCP_MAX_BODY_BYTES"), "{text}");
    }

    #[test]
    fn introspection_needs_credentials_and_names_what_is_missing() {
        let config = Config::parse(&bindings(&[])).unwrap();
        assert_eq!(config.introspection.format, TokenFormat::Jwt);
        let config = Config::parse(&bindings(&[
            ("OAUTH_INTROSPECTION_URI", "https://a.example/introspect"),
            ("OAUTH_INTROSPECTION_CLIENT_ID", "gate"),
            ("OAUTH_INTROSPECTION_CLIENT_SECRET", "very-secret"),
        ]))
        .unwrap();
        assert_eq!(config.introspection.format, TokenFormat::Auto);
        assert!(!format!("{config:?}").contains("very-secret"));
        let error = Config::parse(&bindings(&[
            ("OAUTH_TOKEN_FORMAT", "opaque"),
            ("OAUTH_INTROSPECTION_AUTH_METHOD", "private_key_jwt"),
        ]))
        .unwrap_err();
        let names: Vec<_> = error.problems.iter().map(|p| p.binding).collect();
        assert_eq!(
            names,
            [
                "OAUTH_INTROSPECTION_AUTH_METHOD",
                "OAUTH_INTROSPECTION_CLIENT_ID",
                "OAUTH_INTROSPECTION_CLIENT_SECRET"
            ]
        );
        let bad = Config::parse(&bindings(&[("OAUTH_TOKEN_FORMAT", "paseto")])).unwrap_err();
        assert!(bad.to_string().contains("OAUTH_TOKEN_FORMAT"));
    }

    #[test]
    fn allowed_origins_are_origins_and_include_the_resource() {
        let config = Config::parse(&bindings(&[(
            "MCP_ALLOWED_ORIGINS",
            "https://inspector.example.com http://localhost:6274",
        )]))
        .unwrap();
        assert_eq!(
            config.allowed_origins,
            [
                "https://inspector.example.com",
                "http://localhost:6274",
                "https://mcp.example.com"
            ]
        );
        for bad in [
            "*",
            "https://a.example.com/path",
            "inspector.example.com",
            "ftp://a.example",
        ] {
            let error = Config::parse(&bindings(&[("MCP_ALLOWED_ORIGINS", bad)])).unwrap_err();
            assert!(error.to_string().contains("MCP_ALLOWED_ORIGINS"), "{bad}");
        }
    }

    /// Bindings for a gate with `MCP_ROUTES` and no single-route bindings.
    fn routed(routes: &str, extra: &[(&str, &str)]) -> MapBindings {
        let mut b = bindings(&[]);
        b.vars.remove("MCP_RESOURCE");
        b.vars.remove("MCP_ORIGIN");
        for (name, value) in extra {
            b.vars.insert((*name).to_owned(), (*value).to_owned());
        }
        b.vars.insert(
            "OAUTH_ISSUER".into(),
            "https://auth.example.com https://partner.example.com".into(),
        );
        b.vars.insert("MCP_ROUTES".into(), routes.into());
        b
    }

    const THREE_ROUTES: &str = r#"[
        {"resource": "https://mcp.example.com/billing", "origin": "http://billing.internal/mcp",
         "scopes_supported": "invoices:read invoices:write",
         "tool_scopes": {"void_invoice": "invoices:write", "*": "invoices:read"},
         "origin_authorization_secret": "BILLING_ORIGIN_TOKEN",
         "resource_name": "Billing"},
        {"resource": "https://mcp.example.com/tickets", "origin": "http://tickets.internal/mcp",
         "audience": ["api://tickets"], "required_scopes": ["tickets:read"],
         "issuers": ["https://partner.example.com"]},
        {"resource": "https://mcp.example.com/docs/mcp", "origin": "http://docs.internal/mcp",
         "method_scopes": {"resources/read": "docs:read"}}
    ]"#;

    #[test]
    fn rate_limits_are_global_then_per_route_and_each_problem_is_named() {
        let routes = r#"[
            {"resource": "https://mcp.example.com/a", "origin": "http://a.internal/mcp",
             "rate_limits": [{"binding": "RL_TOOL", "key": "subject+tool", "tools": ["void"]}]},
            {"resource": "https://mcp.example.com/b", "origin": "http://b.internal/mcp"}
        ]"#;
        let global = r#"[{"binding": "RL_IP", "key": "address", "period": 10}]"#;
        let config = Config::parse(&routed(routes, &[("RATE_LIMITS", global)])).unwrap();
        let names = |route: &Route| -> Vec<String> {
            route
                .rate_limits
                .iter()
                .map(|rule| rule.name.clone())
                .collect()
        };
        assert_eq!(
            names(&config.routes[0]),
            ["RL_IP:address", "RL_TOOL:subject+tool"]
        );
        assert_eq!(names(&config.routes[1]), ["RL_IP:address"]);

        let broken = r#"[
            {"resource": "https://mcp.example.com/a", "origin": "http://a.internal/mcp",
             "rate_limits": [{"binding": "TOOL_LIMIT", "key": "tool"}]}
        ]"#;
        let problems = Config::parse(&routed(broken, &[("RATE_LIMITS", "{")]))
            .unwrap_err()
            .to_string();
        assert!(problems.contains("MCP_ROUTES: route 1 (https://mcp.example.com/a): rate_limits: rule 1: binding \"TOOL_LIMIT\" is not a Rate Limiting binding"), "{problems}");
        assert!(
            problems.contains("rate_limits: rule 1: key \"tool\" is not one of"),
            "{problems}"
        );
        assert!(
            problems.contains("RATE_LIMITS: is not valid JSON"),
            "{problems}"
        );
    }

    #[test]
    fn routes_are_parsed_each_with_its_own_resource_audience_and_policy() {
        let config = Config::parse(&routed(
            THREE_ROUTES,
            &[("BILLING_ORIGIN_TOKEN", "Bearer billing-secret")],
        ))
        .unwrap();
        let [billing, tickets, docs] = config.routes.as_slice() else {
            panic!("three routes expected");
        };
        assert_eq!(
            billing.resource.metadata_path,
            "/.well-known/oauth-protected-resource/billing"
        );
        assert_eq!(billing.audiences, ["https://mcp.example.com/billing"]);
        assert_eq!(
            billing.issuers,
            ["https://auth.example.com", "https://partner.example.com"]
        );
        assert_eq!(
            billing.origin_authorization.as_deref(),
            Some("Bearer billing-secret")
        );
        assert_eq!(
            billing.policy.tools.scopes_for("void_invoice"),
            ["invoices:write"]
        );
        assert_eq!(billing.resource_name.as_deref(), Some("Billing"));
        assert_eq!(tickets.audiences, ["api://tickets"]);
        assert_eq!(tickets.issuers, ["https://partner.example.com"]);
        assert_eq!(tickets.required_scopes, ["tickets:read"]);
        assert_eq!(tickets.origin_authorization, None);
        assert_eq!(
            docs.policy.methods.scopes_for("resources/read"),
            ["docs:read"]
        );
        assert_ne!(billing.check_binding, tickets.check_binding);
        assert!(!format!("{config:?}").contains("billing-secret"));
        assert_eq!(
            config.allowed_origins,
            ["https://mcp.example.com".to_owned()]
        );
    }

    #[test]
    fn requests_go_to_the_longest_matching_route_at_a_segment_boundary() {
        let config = Config::parse(&routed(
            r#"[{"resource": "https://mcp.example.com/billing", "origin": "http://b.internal/"},
                {"resource": "https://mcp.example.com/billing-v2", "origin": "http://b2.internal/"},
                {"resource": "https://mcp.example.com/docs/mcp", "origin": "http://d.internal/"}]"#,
            &[],
        ))
        .unwrap();
        assert_eq!(config.route_for("/billing"), Some((0, "")));
        assert_eq!(config.route_for("/billing/sse"), Some((0, "/sse")));
        assert_eq!(config.route_for("/billing-v2"), Some((1, "")));
        assert_eq!(config.route_for("/billingx"), None);
        assert_eq!(config.route_for("/docs"), None);
        assert_eq!(config.route_for("/docs/mcp"), Some((2, "")));
        assert_eq!(config.route_for("/"), None);
        let metadata = |path: &str| {
            config
                .route_for_metadata(path)
                .map(|index| config.routes[index].resource.uri.as_str())
        };
        assert_eq!(
            metadata("/.well-known/oauth-protected-resource/docs/mcp"),
            Some("https://mcp.example.com/docs/mcp")
        );
        assert_eq!(
            metadata("/.well-known/oauth-protected-resource"),
            None,
            "several routes: no root document"
        );
        let single = Config::parse(&bindings(&[])).unwrap();
        assert!(single
            .route_for_metadata("/.well-known/oauth-protected-resource")
            .is_some());
    }

    #[test]
    fn every_route_problem_is_named_at_once() {
        let error = Config::parse(&routed(
            r#"[{"resource": "https://mcp.example.com/billing", "origin": "http://b.internal/",
                 "origin_authorization_secret": "NO_SUCH_SECRET", "issuers": ["https://stranger.example"]},
                {"resource": "https://mcp.example.com/billing/", "origin": "http://b2.internal/"},
                {"resource": "https://mcp.example.com/billing/admin", "origin": "http://b3.internal/"},
                {"resource": "https://other.example.com/tickets", "origin": "http://t.internal/"},
                {"resource": "https://mcp.example.com/x", "origin": "ftp://x.internal/", "scopes_supported": "a\"b"},
                {"resource": "https://mcp.example.com/y", "origin": "http://y.internal/", "tool_scope": {}},
                {"origin": "http://z.internal/", "tool_scopes": {"t": 5}}]"#,
            &[("MCP_RESOURCE", "https://mcp.example.com/mcp"), ("MCP_TOOL_SCOPES", "{}")],
        ))
        .unwrap_err();
        let text = error.to_string();
        for expected in [
            "MCP_RESOURCE: must not be set together with MCP_ROUTES",
            "MCP_TOOL_SCOPES: must not be set together with MCP_ROUTES",
            r#"names "NO_SUCH_SECRET", which is not a bound secret"#,
            r#"issuer "https://stranger.example" is not one of OAUTH_ISSUER"#,
            "https://mcp.example.com/billing and https://mcp.example.com/billing/ have the same path",
            "https://mcp.example.com/billing and https://mcp.example.com/billing/admin overlap",
            "https://other.example.com/tickets is on https://other.example.com, not on https://mcp.example.com",
            r#"origin "ftp://x.internal/" must be an http(s) URL"#,
            r#"scopes_supported: "a\"b" is not a valid scope token"#,
            "unknown field `tool_scope`",
            r#"route 7: "resource" is required"#,
            r#"route 7: tool_scopes: "t": scopes must be a string or an array of strings"#,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
        for bad in ["not json", "{}", "[]", "[1]"] {
            let error = Config::parse(&routed(bad, &[])).unwrap_err();
            assert_eq!(error.problems[0].binding, "MCP_ROUTES", "{bad}");
        }
    }

    #[test]
    fn hardening_knobs_are_parsed_and_checked() {
        let config = Config::parse(&bindings(&[])).unwrap();
        assert!(!config.require_at_jwt_typ);
        assert_eq!(config.max_token_lifetime_seconds, None);
        assert_eq!(config.max_authorization_bytes, 8192);
        let config = Config::parse(&bindings(&[
            ("JWT_REQUIRE_TYP_AT_JWT", "TRUE"),
            ("JWT_MAX_LIFETIME_SECONDS", "3600"),
            ("AUTHORIZATION_MAX_BYTES", "4096"),
        ]))
        .unwrap();
        assert!(config.require_at_jwt_typ);
        assert_eq!(config.max_token_lifetime_seconds, Some(3600));
        assert_eq!(config.max_authorization_bytes, 4096);
        assert_eq!(
            problems(Config::parse(&bindings(&[
                ("JWT_REQUIRE_TYP_AT_JWT", "yes"),
                ("JWT_MAX_LIFETIME_SECONDS", "0"),
                ("AUTHORIZATION_MAX_BYTES", "100"),
            ]))),
            [
                "JWT_REQUIRE_TYP_AT_JWT",
                "JWT_MAX_LIFETIME_SECONDS",
                "AUTHORIZATION_MAX_BYTES"
            ]
        );
        assert_eq!(
            problems(Config::parse(&bindings(&[
                ("JWT_MAX_LIFETIME_SECONDS", "1h"),
                ("AUTHORIZATION_MAX_BYTES", "1000000"),
            ]))),
            ["JWT_MAX_LIFETIME_SECONDS", "AUTHORIZATION_MAX_BYTES"]
        );
    }

    // Drift between the flat bindings and MCP_ROUTES (issue 16): each rule
    // once, for both sources.

    /// One MCP_ROUTES entry with `members` added to a valid resource and origin.
    fn one_entry(members: &str) -> MapBindings {
        routed(
            &format!(
                r#"[{{"resource": "https://mcp.example.com/mcp", "origin": "http://o.internal/"{members}}}]"#
            ),
            &[],
        )
    }

    #[test]
    fn resource_documentation_problems_give_the_reason_in_both_forms() {
        let flat = Config::parse(&bindings(&[(
            "MCP_RESOURCE_DOCUMENTATION",
            "ftp://docs.example.com/",
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            flat.contains(
                r#"MCP_RESOURCE_DOCUMENTATION: "ftp://docs.example.com/" must be an http(s) URL"#
            ),
            "{flat}"
        );
        let routes = Config::parse(&one_entry(
            r#", "resource_documentation": "ftp://docs.example.com/""#,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            routes.contains(
                r#"resource_documentation "ftp://docs.example.com/" must be an http(s) URL"#
            ),
            "{routes}"
        );
    }

    #[test]
    fn route_entry_text_is_trimmed_and_blank_is_absent_as_in_the_flat_form() {
        let config = Config::parse(&routed(
            r#"[{"resource": " https://mcp.example.com/mcp ", "origin": " http://o.internal/ ",
                 "resource_name": "  ", "resource_documentation": " https://docs.example.com/ "}]"#,
            &[],
        ))
        .unwrap();
        let route = &config.routes[0];
        assert_eq!(route.resource.uri, "https://mcp.example.com/mcp");
        assert_eq!(route.audiences, ["https://mcp.example.com/mcp"]);
        assert_eq!(route.resource_name, None);
        assert_eq!(
            route.resource_documentation.as_deref(),
            Some("https://docs.example.com/")
        );
        let flat = Config::parse(&bindings(&[
            ("MCP_RESOURCE", " https://mcp.example.com/mcp "),
            ("MCP_RESOURCE_NAME", "  "),
        ]))
        .unwrap();
        assert_eq!(flat.routes[0].resource, route.resource);
        assert_eq!(flat.routes[0].resource_name, None);
        let blank = Config::parse(&routed(
            r#"[{"resource": "  ", "origin": "http://o.internal/"}]"#,
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(
            blank.contains(r#"route 1 (  ): "resource" is required"#),
            "{blank}"
        );
        // A blank secret name is not "no credential": it names no secret.
        for name in ["", "  "] {
            let error = Config::parse(&one_entry(&format!(
                r#", "origin_authorization_secret": "{name}""#
            )))
            .unwrap_err()
            .to_string();
            assert!(error.contains("which is not a bound secret"), "{error}");
        }
    }

    #[test]
    fn audiences_are_words_in_both_forms() {
        for bad in [r#"[""]"#, r#"["api://a b"]"#, r#"["api://a\nb"]"#] {
            let error = Config::parse(&one_entry(&format!(r#", "audience": {bad}"#)))
                .unwrap_err()
                .to_string();
            assert!(error.contains("audience: "), "{bad}: {error}");
            assert!(error.contains("is not a valid audience"), "{bad}: {error}");
        }
        assert_eq!(
            problems(Config::parse(&bindings(&[(
                "OAUTH_AUDIENCE",
                "api://a\u{7}b"
            )]))),
            ["OAUTH_AUDIENCE"]
        );
    }

    #[test]
    fn route_problems_come_in_the_same_order_from_both_forms() {
        let flat = Config::parse(&bindings(&[
            ("MCP_RESOURCE_DOCUMENTATION", "nope"),
            ("ORIGIN_AUTHORIZATION", "a\nb"),
            ("MCP_METHOD_SCOPES", "[]"),
            ("MCP_TOOL_SCOPES", "[]"),
            ("MCP_REQUIRED_SCOPES", "\"x"),
            ("OAUTH_AUDIENCE", "api://a\u{7}b"),
        ]));
        assert_eq!(
            problems(flat),
            [
                "OAUTH_AUDIENCE",
                "MCP_REQUIRED_SCOPES",
                "MCP_TOOL_SCOPES",
                "MCP_METHOD_SCOPES",
                "MCP_RESOURCE_DOCUMENTATION",
                "ORIGIN_AUTHORIZATION"
            ]
        );
        let error = Config::parse(&routed(
            r#"[{"resource": "https://mcp.example.com/mcp", "origin": "http://o.internal/",
                 "origin_authorization_secret": "BAD_SECRET", "resource_documentation": "nope",
                 "method_scopes": [], "tool_scopes": [], "required_scopes": "\"x",
                 "audience": "api://a\u0007b"}]"#,
            &[("BAD_SECRET", "a\nb")],
        ))
        .unwrap_err();
        let members: Vec<&str> = error
            .problems
            .iter()
            .map(|p| {
                let rest = p.problem.split_once("): ").unwrap().1;
                rest.split([' ', ':']).next().unwrap()
            })
            .collect();
        assert_eq!(
            members,
            [
                "audience",
                "required_scopes",
                "tool_scopes",
                "method_scopes",
                "resource_documentation",
                "origin_authorization_secret"
            ]
        );
    }

    #[test]
    fn null_policy_members_are_refused_not_taken_as_absent() {
        // `"issuers": null` used to mean every issuer, `"tool_scopes": null`
        // no tool policy; MCP_TOOL_SCOPES = "null" was refused.
        for member in [
            "issuers",
            "tool_scopes",
            "method_scopes",
            "audience",
            "required_scopes",
        ] {
            let error = Config::parse(&one_entry(&format!(r#", "{member}": null"#)))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("{member}: ")), "{member}: {error}");
        }
        assert_eq!(
            problems(Config::parse(&bindings(&[("MCP_TOOL_SCOPES", "null")]))),
            ["MCP_TOOL_SCOPES"]
        );
    }

    #[test]
    fn wrongly_typed_word_members_are_named() {
        for member in ["audience", "scopes_supported", "required_scopes", "issuers"] {
            let error = Config::parse(&one_entry(&format!(r#", "{member}": 5"#)))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!(
                    "{member}: must be a space-separated string or an array of strings"
                )),
                "{member}: {error}"
            );
        }
    }

    /// Every value `RouteEntry::from_value` is given and what serde's derive
    /// makes of it (its specification): the same entry, or the same message.
    fn assert_read_as_derived(value: Value) {
        let derived =
            serde_json::from_value::<RouteEntry>(value.clone()).map_err(|e| e.to_string());
        let read = RouteEntry::from_value(value.clone()).map_err(|e| e.to_string());
        assert_eq!(read, derived, "{value}");
    }

    /// JSON values of every kind, including the edge cases of serde's names
    /// for them (negative, large and fractional numbers, text needing escapes).
    fn sample_values() -> Vec<Value> {
        [
            "null",
            "true",
            "false",
            "0",
            "5",
            "-5",
            "18446744073709551615",
            "-9223372036854775808",
            "1.5",
            "-0.0",
            "1e300",
            "2.5e-8",
            r#""""#,
            r#""https://mcp.example.com/a""#,
            r#""a\"b\n\u0007""#,
            r#""ünïcode""#,
            "[]",
            r#"["x", 1]"#,
            "{}",
            r#"{"a": 1}"#,
        ]
        .into_iter()
        .map(|raw| serde_json::from_str(raw).unwrap())
        .collect()
    }

    #[test]
    fn route_entries_are_read_as_serde_derives_them() {
        let samples = sample_values();
        // Not an object or an array.
        for value in &samples {
            if !value.is_object() && !value.is_array() {
                assert_read_as_derived(value.clone());
            }
        }
        // Each member, and unknown or misspelt ones, with every kind of value.
        let names = ROUTE_MEMBERS.iter().copied().chain([
            "tool_scope",
            "Resource",
            "",
            "resource ",
            "zzz",
            "aaa",
        ]);
        for name in names {
            for value in &samples {
                let mut entry = serde_json::Map::new();
                entry.insert(name.to_owned(), value.clone());
                assert_read_as_derived(Value::Object(entry.clone()));
                // Beside valid members, before and after it in the map's order.
                entry.insert(
                    "resource".to_owned(),
                    Value::from("https://mcp.example.com/r"),
                );
                entry.insert("origin".to_owned(), Value::from("http://o.internal/"));
                entry.insert("aaa".to_owned(), Value::from(1));
                assert_read_as_derived(Value::Object(entry.clone()));
                entry.remove("aaa");
                entry.insert("zzz".to_owned(), Value::Null);
                assert_read_as_derived(Value::Object(entry));
            }
        }
        // The array form: every length, each position with every kind of value.
        for len in 0..=14 {
            let texts: Vec<Value> = (0..len).map(|i| Value::from(format!("v{i}"))).collect();
            assert_read_as_derived(Value::Array(texts.clone()));
            let nulls = vec![Value::Null; len];
            assert_read_as_derived(Value::Array(nulls));
            for position in 0..len {
                for value in &samples {
                    let mut items = texts.clone();
                    items[position] = value.clone();
                    assert_read_as_derived(Value::Array(items));
                }
            }
        }
        // Whole entries as operators write them.
        for raw in [
            r#"{"resource": "https://mcp.example.com/a", "origin": "http://a.internal/",
                "audience": ["x", "y"], "scopes_supported": "a b", "required_scopes": null,
                "tool_scopes": {"t": "a"}, "method_scopes": {}, "scope_implies": {"b": "a"},
                "resource_name": "A", "resource_documentation": "https://docs.example.com",
                "issuers": "https://auth.example.com", "origin_authorization_secret": "S"}"#,
            r#"{"resource": "https://mcp.example.com/a", "origin": 5, "tool_scope": {}}"#,
            r#"{"tool_scope": {}, "origin": 5}"#,
        ] {
            assert_read_as_derived(serde_json::from_str(raw).unwrap());
        }
    }
}
