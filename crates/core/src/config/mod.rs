//! Gate configuration, parsed once from the Worker's environment bindings.
//!
//! Parse, don't validate: every binding is read and checked here, and either
//! the whole [`Config`] comes out or a [`ConfigError`] naming every bad
//! binding and why. Nothing downstream re-checks a URL or a number. A gate
//! without a valid configuration refuses every request (fail closed).

use std::fmt;

use serde::Deserialize;
use url::Url;

use crate::authorize::policy::{ScopeMap, ScopePolicy};
use crate::verify::introspect::{ClientAuthMethod, IntrospectionClient};
use crate::verify::jwk::JwsAlgorithm;
use crate::verify::keys::{CacheSettings, FetchLimits};

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
    pub const MCP_MAX_BODY_BYTES: &str = "MCP_MAX_BODY_BYTES";
    pub const MCP_SESSION_TTL_SECONDS: &str = "MCP_SESSION_TTL_SECONDS";
    pub const OAUTH_TOKEN_FORMAT: &str = "OAUTH_TOKEN_FORMAT";
    pub const OAUTH_INTROSPECTION_URI: &str = "OAUTH_INTROSPECTION_URI";
    pub const OAUTH_INTROSPECTION_CLIENT_ID: &str = "OAUTH_INTROSPECTION_CLIENT_ID";
    pub const OAUTH_INTROSPECTION_CLIENT_SECRET: &str = "OAUTH_INTROSPECTION_CLIENT_SECRET";
    pub const OAUTH_INTROSPECTION_AUTH_METHOD: &str = "OAUTH_INTROSPECTION_AUTH_METHOD";
    pub const INTROSPECTION_CACHE_TTL_SECONDS: &str = "INTROSPECTION_CACHE_TTL_SECONDS";
    pub const MCP_ALLOWED_ORIGINS: &str = "MCP_ALLOWED_ORIGINS";
    pub const MCP_ROUTES: &str = "MCP_ROUTES";

    /// The bindings that describe the one route of a single-route gate; with
    /// `MCP_ROUTES` they belong in the route entries instead.
    pub const SINGLE_ROUTE: [&str; 10] = [
        MCP_RESOURCE,
        MCP_ORIGIN,
        OAUTH_AUDIENCE,
        MCP_SCOPES_SUPPORTED,
        MCP_REQUIRED_SCOPES,
        MCP_TOOL_SCOPES,
        MCP_METHOD_SCOPES,
        MCP_RESOURCE_NAME,
        MCP_RESOURCE_DOCUMENTATION,
        ORIGIN_AUTHORIZATION,
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

/// One trusted authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// The issuer identifier `iss` must equal (RFC 8414 §2).
    pub issuer: String,
    /// The configured JWKS URL, or `None` to discover it (RFC 8414 §3).
    pub jwks_uri: Option<Url>,
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
    /// Opaque tokens.
    pub introspection: IntrospectionConfig,
    /// Browser origins allowed to call the MCP endpoints (ASCII serialization,
    /// e.g. `https://inspector.example.com`); the resources' own origin is
    /// always allowed.
    pub allowed_origins: Vec<String>,
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

    /// A JSON scope map binding; absent means empty.
    fn scope_map(&mut self, name: &'static str) -> ScopeMap {
        let Some(raw) = self.optional(name) else {
            return ScopeMap::default();
        };
        ScopeMap::parse(&raw).unwrap_or_else(|problems| {
            for problem in problems {
                self.problem(name, problem);
            }
            ScopeMap::default()
        })
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

    fn url(&mut self, name: &'static str, raw: &str, rule: UrlRule) -> Option<Url> {
        match check_url(raw, rule) {
            Ok(url) => Some(url),
            Err(problem) => {
                self.problem(name, format!("{raw:?} {problem}"));
                None
            }
        }
    }

    fn scopes(&mut self, name: &'static str) -> Vec<String> {
        let scopes = self.list(name);
        for problem in scope_token_problems(&scopes) {
            self.problem(name, problem);
        }
        scopes
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
    let url = Url::parse(raw).map_err(|_| "is not an absolute URL")?;
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

/// Whether `url` points at this machine (local development only).
pub(crate) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// What is wrong with each scope in `scopes` that is not a scope token.
fn scope_token_problems(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|scope| !is_scope_token(scope))
        .map(|scope| format!("{scope:?} is not a valid scope token (RFC 6749 §3.3)"))
        .collect()
}

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )` (RFC 6749 §3.3). Also what
/// keeps a scope safe inside a quoted `WWW-Authenticate` parameter.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
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
        };

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
            None => p.single_route(&issuer_names).into_iter().collect(),
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

        let algorithms = match p.optional(JWT_ALGORITHMS) {
            None => DEFAULT_ALGORITHMS.to_vec(),
            Some(raw) => {
                let mut algorithms = Vec::new();
                for name in raw.split_whitespace() {
                    match JwsAlgorithm::from_name(name) {
                        Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                        Some(_) => {}
                        None => p.problem(
                            JWT_ALGORITHMS,
                            format!("{name:?} is not supported (choose from RS256 RS384 RS512 PS256 PS384 PS512 ES256 EdDSA; none and HMAC are never accepted)"),
                        ),
                    }
                }
                algorithms
            }
        };

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
        let introspection = p.introspection(issuers.len());
        let mut allowed_origins = Vec::new();
        for raw in p.list(MCP_ALLOWED_ORIGINS) {
            match Url::parse(&raw) {
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
                introspection,
                allowed_origins,
            })
        } else {
            Err(ConfigError {
                problems: p.problems,
            })
        }
    }
}

/// One `MCP_ROUTES` entry as written: unknown members are refused, so a
/// misspelt policy member never silently leaves a route open.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    resource: Option<String>,
    origin: Option<String>,
    audience: Option<Words>,
    scopes_supported: Option<Words>,
    required_scopes: Option<Words>,
    tool_scopes: Option<serde_json::Value>,
    method_scopes: Option<serde_json::Value>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    issuers: Option<Words>,
    origin_authorization_secret: Option<String>,
}

/// A space-separated string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Words {
    Text(String),
    List(Vec<String>),
}

impl Words {
    fn into_vec(self) -> Vec<String> {
        match self {
            Words::Text(text) => text.split_whitespace().map(str::to_owned).collect(),
            Words::List(list) => list,
        }
    }
}

/// The parts of a route every route source provides.
struct RouteParts {
    resource: Resource,
    origin: Url,
    issuers: Vec<String>,
    audiences: Vec<String>,
    scopes_supported: Vec<String>,
    required_scopes: Vec<String>,
    methods: ScopeMap,
    tools: ScopeMap,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    origin_authorization: Option<String>,
}

impl RouteParts {
    fn into_route(self) -> Route {
        let mut check_binding = String::new();
        for part in self.issuers.iter().chain(["\u{0}".to_owned()].iter()) {
            check_binding.push_str(part);
            check_binding.push('\n');
        }
        for audience in &self.audiences {
            check_binding.push_str(audience);
            check_binding.push('\n');
        }
        Route {
            policy: ScopePolicy {
                required: self.required_scopes.clone(),
                methods: self.methods,
                tools: self.tools,
            },
            resource: self.resource,
            origin: self.origin,
            issuers: self.issuers,
            audiences: self.audiences,
            scopes_supported: self.scopes_supported,
            required_scopes: self.required_scopes,
            resource_name: self.resource_name,
            resource_documentation: self.resource_documentation,
            origin_authorization: self.origin_authorization,
            check_binding,
        }
    }
}

impl<B: Bindings + ?Sized> Parser<'_, B> {
    /// The one route of a gate configured without `MCP_ROUTES`.
    fn single_route(&mut self, issuers: &[String]) -> Option<Route> {
        use binding::*;
        let resource = self.required(MCP_RESOURCE).and_then(|raw| {
            let url = self.url(MCP_RESOURCE, &raw, UrlRule::Identifier)?;
            // Keep the URI exactly as configured: it is what tokens carry in `aud`.
            let mut resource = resource_from(&url);
            resource.uri = raw;
            Some(resource)
        });
        let origin = self
            .required(MCP_ORIGIN)
            .and_then(|raw| self.url(MCP_ORIGIN, &raw, UrlRule::Origin));
        let mut audiences = self.list(OAUTH_AUDIENCE);
        if audiences.is_empty() {
            audiences.extend(resource.as_ref().map(|resource| resource.uri.clone()));
        }
        let scopes_supported = self.scopes(MCP_SCOPES_SUPPORTED);
        let required_scopes = self.scopes(MCP_REQUIRED_SCOPES);
        let resource_name = self.optional(MCP_RESOURCE_NAME);
        let resource_documentation = self.optional(MCP_RESOURCE_DOCUMENTATION).and_then(|raw| {
            self.url(MCP_RESOURCE_DOCUMENTATION, &raw, UrlRule::Origin)
                .map(|_| raw)
        });
        let origin_authorization = self
            .bindings
            .text(ORIGIN_AUTHORIZATION)
            .filter(|value| !value.is_empty());
        if origin_authorization
            .as_deref()
            .is_some_and(|value| !is_header_value(value))
        {
            // The value is a secret: say what is wrong, never what it is.
            self.problem(
                ORIGIN_AUTHORIZATION,
                "must be a single-line header value of visible ASCII",
            );
        }
        let methods = self.scope_map(MCP_METHOD_SCOPES);
        let tools = self.scope_map(MCP_TOOL_SCOPES);
        Some(
            RouteParts {
                resource: resource?,
                origin: origin?,
                issuers: issuers.to_vec(),
                audiences,
                scopes_supported,
                required_scopes,
                methods,
                tools,
                resource_name,
                resource_documentation,
                origin_authorization,
            }
            .into_route(),
        )
    }

    /// `MCP_ROUTES`: every entry, then the rules between them, every problem
    /// named with the entry it is in.
    fn routes(&mut self, raw: &str, issuers: &[String]) -> Vec<Route> {
        const NAME: &str = binding::MCP_ROUTES;
        let entries: Vec<serde_json::Value> = match serde_json::from_str(raw) {
            Ok(serde_json::Value::Array(entries)) => entries,
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
            if let Some(route) = self.route_entry(index + 1, value, issuers) {
                routes.push(route);
            }
        }
        self.check_routes_together(&routes);
        routes
    }

    fn route_entry(
        &mut self,
        number: usize,
        value: serde_json::Value,
        issuers: &[String],
    ) -> Option<Route> {
        const NAME: &str = binding::MCP_ROUTES;
        let label = match value.get("resource").and_then(|r| r.as_str()) {
            Some(resource) => format!("route {number} ({resource})"),
            None => format!("route {number}"),
        };
        let entry: RouteEntry = match serde_json::from_value(value) {
            Ok(entry) => entry,
            Err(error) => {
                // serde's message names the member (unknown field, wrong type),
                // never a secret: secrets are not in this binding.
                self.problem(NAME, format!("{label}: {error}"));
                return None;
            }
        };
        // A route with problems is still returned when it can be, so the
        // checks between routes see it; the configuration fails anyway.
        let resource = match entry.resource {
            None => {
                self.problem(NAME, format!("{label}: \"resource\" is required"));
                None
            }
            Some(raw) => match check_url(&raw, UrlRule::Identifier) {
                Ok(url) => {
                    let mut resource = resource_from(&url);
                    resource.uri = raw;
                    Some(resource)
                }
                Err(problem) => {
                    self.problem(NAME, format!("{label}: resource {raw:?} {problem}"));
                    None
                }
            },
        };
        let origin = match entry.origin {
            None => {
                self.problem(NAME, format!("{label}: \"origin\" is required"));
                None
            }
            Some(raw) => match check_url(&raw, UrlRule::Origin) {
                Ok(url) => Some(url),
                Err(problem) => {
                    self.problem(NAME, format!("{label}: origin {raw:?} {problem}"));
                    None
                }
            },
        };
        let mut audiences = entry.audience.map(Words::into_vec).unwrap_or_default();
        if audiences.is_empty() {
            audiences.extend(resource.as_ref().map(|r| r.uri.clone()));
        }
        let mut scopes = |member: &str, words: Option<Words>| -> Vec<String> {
            let list = words.map(Words::into_vec).unwrap_or_default();
            for problem in scope_token_problems(&list) {
                self.problem(NAME, format!("{label}: {member}: {problem}"));
            }
            list
        };
        let scopes_supported = scopes("scopes_supported", entry.scopes_supported);
        let required_scopes = scopes("required_scopes", entry.required_scopes);
        let mut scope_map = |member: &str, value: Option<serde_json::Value>| -> ScopeMap {
            let Some(value) = value else {
                return ScopeMap::default();
            };
            ScopeMap::from_value(value).unwrap_or_else(|problems| {
                for problem in problems {
                    self.problem(NAME, format!("{label}: {member}: {problem}"));
                }
                ScopeMap::default()
            })
        };
        let tools = scope_map("tool_scopes", entry.tool_scopes);
        let methods = scope_map("method_scopes", entry.method_scopes);
        let resource_documentation = entry.resource_documentation.filter(|raw| {
            let valid = check_url(raw, UrlRule::Origin).is_ok();
            if !valid {
                self.problem(
                    NAME,
                    format!("{label}: resource_documentation {raw:?} is not an http(s) URL"),
                );
            }
            valid
        });
        let route_issuers = match entry.issuers.map(Words::into_vec) {
            None => issuers.to_vec(),
            Some(listed) => {
                if listed.is_empty() {
                    self.problem(NAME, format!("{label}: \"issuers\" must not be empty"));
                }
                for iss in &listed {
                    if !issuers.contains(iss) {
                        self.problem(
                            NAME,
                            format!("{label}: issuer {iss:?} is not one of OAUTH_ISSUER"),
                        );
                    }
                }
                listed
            }
        };
        let origin_authorization = match entry.origin_authorization_secret {
            None => None,
            Some(secret_name) => {
                let value = self
                    .bindings
                    .text(&secret_name)
                    .filter(|value| !value.is_empty());
                match value {
                    None => {
                        self.problem(
                            NAME,
                            format!("{label}: origin_authorization_secret names {secret_name:?}, which is not a bound secret"),
                        );
                        None
                    }
                    Some(value) if !is_header_value(&value) => {
                        // The value is a secret: say what is wrong, never what it is.
                        self.problem(
                            NAME,
                            format!("{label}: the secret {secret_name:?} must be a single-line header value of visible ASCII"),
                        );
                        None
                    }
                    Some(value) => Some(value),
                }
            }
        };
        Some(
            RouteParts {
                resource: resource?,
                origin: origin?,
                issuers: route_issuers,
                audiences,
                scopes_supported,
                required_scopes,
                methods,
                tools,
                resource_name: entry.resource_name,
                resource_documentation,
                origin_authorization,
            }
            .into_route(),
        )
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
}
