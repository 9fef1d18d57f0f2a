//! `portcullis doctor URL`: walks a live MCP endpoint the way MCP clients
//! discover and call it, and says at each step what a client would trip on.
//! Any MCP server, not only this gate.
//!
//! Steps and the texts they implement:
//! - `challenge`, `resource_metadata_param`, `challenge_scope`,
//!   `challenge_error`: the unauthenticated `initialize` gets `401` with a
//!   `Bearer` challenge (RFC 6750 §3, §3.1; RFC 9110 §11.6.1; RFC 9728 §5.1;
//!   MCP authorization 2025-06-18 / 2025-11-25 §Authorization Server
//!   Location, §Scope Selection Strategy).
//! - `metadata_header`, `metadata_path`, `metadata_root`: the protected
//!   resource metadata where clients look for it: the challenge's URL, else
//!   the path-inserted well-known URL, else the root one (RFC 9728 §3, §3.1;
//!   MCP 2025-11-25 §Protected Resource Metadata Discovery Requirements).
//! - `resource`: its `resource` is the URL, exactly (RFC 9728 §3.3).
//! - `authorization_server`, `issuer`: the first authorization server's
//!   metadata by RFC 8414 §3.1 or OpenID Connect Discovery 1.0 §4, in the
//!   order of MCP 2025-11-25 §Authorization Server Metadata Discovery; its
//!   `issuer` is the identifier, exactly (RFC 8414 §3.3, OIDC Discovery §4.3).
//! - `pkce`: `S256` advertised (RFC 7636; MCP 2025-11-25 §Authorization Code
//!   Protection: clients refuse to proceed without it).
//! - `registration`: Client ID Metadata Documents or RFC 7591 registration
//!   (MCP 2025-11-25 §Client Registration Approaches; 2026-07-28 §Client
//!   Registration).
//! - `jwks`: the authorization server's keys (RFC 7517 §5), loaded by the
//!   gate's own loader.
//! - `cors`: a browser origin's preflight and challenge (Fetch §CORS
//!   protocol).
//! - `offline_access`: refresh tokens are the authorization server's concern,
//!   not a resource scope (MCP 2026-07-28 authorization).
//! - `initialize`, `tools_list`: with a token, the lifecycle and one call over
//!   Streamable HTTP (MCP 2025-11-25 §Lifecycle, §Transports), the answer as
//!   JSON or as an SSE stream.
//!
//! A step that needs what an earlier one failed to find is reported as `info`
//! "not reached", never left out. The token is never printed: every detail
//! is scrubbed of it before the report is returned.

use std::time::Duration;

use portcullis_core::verify::jwk::{KeySet, PublicKey};
use serde_json::{json, Value};
use url::{Host, Url};

use crate::http::{self, HttpError, Limits, Reply};
use crate::output::{Report, Status, Step};

/// What to diagnose, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The MCP endpoint, exactly as a user gives it to a client.
    pub url: String,
    /// An access token for the `initialize` and `tools/list` steps; never
    /// printed.
    pub token: Option<String>,
    /// The browser origin the CORS step speaks for (`https://claude.ai` by
    /// default in the command line).
    pub browser_origin: String,
    /// Deadline of each exchange.
    pub timeout: Duration,
}

/// The `MCP-Protocol-Version` offered before anything is negotiated.
const OFFERED_VERSION: &str = "2025-11-25";
/// Largest body read from any answer: metadata, keys and MCP replies are small.
const MAX_BODY: usize = 1024 * 1024;

/// Each step's id and title, in report order.
const TITLES: [(&str, &str); 19] = [
    ("url", "MCP URL"),
    ("challenge", "401 challenge"),
    ("resource_metadata_param", "Challenge resource_metadata"),
    ("challenge_scope", "Challenge scope"),
    ("challenge_error", "Challenge error code"),
    ("metadata_header", "Metadata at the challenge's URL"),
    ("metadata_path", "Metadata at the path-inserted URL"),
    ("metadata_root", "Metadata at the root URL"),
    ("resource", "Metadata resource"),
    ("authorization_server", "Authorization server metadata"),
    ("issuer", "Authorization server issuer"),
    ("pkce", "PKCE S256"),
    ("registration", "Client registration"),
    ("jwks", "Authorization server keys"),
    ("cors", "Browser CORS"),
    ("offline_access", "offline_access scope"),
    ("token", "Token steps"),
    ("initialize", "MCP initialize"),
    ("tools_list", "MCP tools/list"),
];
/// The steps that read the authorization server's metadata.
const AS_STEPS: [&str; 4] = ["issuer", "pkce", "registration", "jwks"];

/// Runs every step against `options.url`; the report says what passed.
pub fn run(options: &Options) -> Report {
    let mut doctor = Doctor {
        options,
        limits: Limits {
            timeout: options.timeout,
            max_bytes: MAX_BODY,
        },
        report: Report::default(),
    };
    match Url::parse(&options.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            doctor.walk(&url)
        }
        _ => doctor.fail(
            "url",
            format!("not an absolute http(s) URL: {}", options.url),
            "give the endpoint's full URL, e.g. https://mcp.example.com/mcp",
        ),
    }
    let mut report = doctor.report;
    // Details quote what servers sent: no control characters reach a
    // terminal, and no token, should a server echo the Authorization field.
    let secret = token(options);
    let clean = |text: &str| {
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        match secret {
            Some(token) => text.replace(token, "[token]"),
            None => text,
        }
    };
    for step in &mut report.steps {
        step.detail = clean(&step.detail);
        step.fix = step.fix.as_deref().map(clean);
    }
    report
}

fn token(options: &Options) -> Option<&str> {
    options
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

struct Doctor<'a> {
    options: &'a Options,
    limits: Limits,
    report: Report,
}

/// A protected resource metadata document, found and well formed.
struct Metadata {
    url: String,
    resource: String,
    authorization_servers: Vec<String>,
    scopes: Vec<String>,
}

impl Doctor<'_> {
    fn say(&mut self, id: &str, status: Status, detail: impl Into<String>, fix: Option<String>) {
        let title = TITLES.iter().find(|(i, _)| *i == id).map_or(id, |(_, t)| t);
        let mut step = Step::new(id, title, status, detail);
        step.fix = fix;
        self.report.push(step);
    }

    fn pass(&mut self, id: &str, detail: impl Into<String>) {
        self.say(id, Status::Pass, detail, None);
    }

    fn info(&mut self, id: &str, detail: impl Into<String>) {
        self.say(id, Status::Info, detail, None);
    }

    fn warn(&mut self, id: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.say(id, Status::Warn, detail, Some(fix.into()));
    }

    fn fail(&mut self, id: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.say(id, Status::Fail, detail, Some(fix.into()));
    }

    fn not_reached(&mut self, ids: &[&str], why: &str) {
        for id in ids {
            self.info(id, format!("not reached: {why}"));
        }
    }

    fn walk(&mut self, url: &Url) {
        let challenge = self.challenge();
        let header_url = match &challenge {
            Some(challenge) => self.challenge_params(challenge),
            None => {
                let params = [
                    "resource_metadata_param",
                    "challenge_scope",
                    "challenge_error",
                ];
                self.not_reached(&params, "no Bearer challenge");
                None
            }
        };
        let metadata = self.metadata(url, challenge.as_ref(), header_url);
        match &metadata {
            Some(metadata) => {
                self.resource(metadata);
                self.authorization_server(metadata);
            }
            None => {
                let later = ["resource", "authorization_server"];
                self.not_reached(&later, "no protected resource metadata");
                self.not_reached(&AS_STEPS, "no protected resource metadata");
            }
        }
        self.cors();
        self.offline_access(metadata.as_ref(), challenge.as_ref());
        self.token_steps();
    }

    // ---- 1. the challenge -------------------------------------------------

    /// POSTs an unauthenticated `initialize`; the `Bearer` challenge, if any.
    fn challenge(&mut self) -> Option<Challenge> {
        let reply = match self.post(&initialize_body(), &[], OFFERED_VERSION) {
            Ok(reply) => reply,
            Err(error) => {
                let detail = format!("POST {}: {error}", self.options.url);
                self.fail(
                    "challenge",
                    detail,
                    "check the URL, DNS, TLS and that the server is up",
                );
                return None;
            }
        };
        let fields = reply.headers_named("www-authenticate");
        let values = fields.join(", ");
        // Each field parsed alone, so that garbage in one spares the others;
        // of several Bearer challenges, the one naming its metadata.
        let mut bearers: Vec<Challenge> = fields
            .iter()
            .flat_map(|field| parse_challenges(field))
            .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
            .collect();
        bearers.sort_by_key(|c| c.param("resource_metadata").is_none());
        let bearer = bearers.into_iter().next();
        match (reply.status, &bearer) {
            (401, Some(_)) => {
                self.pass("challenge", format!("401 with WWW-Authenticate: {}", clip(&values, 300)))
            }
            (401, None) if values.is_empty() => self.fail(
                "challenge",
                "401 without WWW-Authenticate: clients cannot discover the authorization server",
                "send WWW-Authenticate: Bearer resource_metadata=\"…\" with the 401; if the server does, \
                 a proxy or CDN in front of it strips or renames the header",
            ),
            (401, None) => self.fail(
                "challenge",
                format!("401 without a Bearer challenge: {}", clip(&values, 300)),
                "challenge with the Bearer scheme (RFC 6750 §3)",
            ),
            (200..=299, _) => self.fail(
                "challenge",
                format!("{} without a token: the endpoint is not protected", reply.status),
                "require a Bearer token, and answer 401 with a Bearer challenge without one",
            ),
            _ => self.fail(
                "challenge",
                format!(
                    "{} instead of 401: {}",
                    describe_status(&reply),
                    snippet(&reply.body)
                ),
                "answer a request without credentials with 401 and WWW-Authenticate: Bearer \
                 (clients start authorization only on a 401)",
            ),
        }
        bearer
    }

    /// Judges the challenge's parameters; the metadata URL when usable.
    fn challenge_params(&mut self, challenge: &Challenge) -> Option<Url> {
        let id = "resource_metadata_param";
        let mut usable = None;
        match challenge.param("resource_metadata").map(|v| (v, Url::parse(v))) {
            None => self.warn(
                id,
                "the challenge names no resource_metadata: clients must guess the well-known URLs",
                "add resource_metadata=\"<absolute URL of the metadata>\" to the challenge (RFC 9728 §5.1)",
            ),
            Some((value, Err(_))) => self.fail(
                id,
                format!("not an absolute URL: {value}"),
                format!(
                    "make it absolute, e.g. resource_metadata=\"{}\"",
                    well_known_guess(&self.options.url)
                ),
            ),
            Some((value, Ok(url))) if !secure_or_loopback(&url) => self.fail(
                id,
                format!("{value} is neither https nor on a loopback host"),
                "serve the metadata over https (plain http only on localhost)",
            ),
            Some((value, Ok(url))) => {
                self.pass(id, value);
                usable = Some(url);
            }
        }
        match challenge.param("scope") {
            Some(scope) => self.pass("challenge_scope", format!("scope=\"{scope}\"")),
            None => self.warn(
                "challenge_scope",
                "no scope in the challenge: clients fall back to scopes_supported, or ask for none",
                "add scope=\"<scopes this endpoint needs>\" to the challenge (MCP 2025-11-25 scope selection)",
            ),
        }
        match challenge.param("error") {
            None => self.pass(
                "challenge_error",
                "none, as for a request without credentials",
            ),
            Some(error) => self.warn(
                "challenge_error",
                format!("error=\"{error}\" on a request that carried no credentials"),
                "leave error= out when the request had no token (RFC 6750 §3.1); \
                 some clients take it for a refused token",
            ),
        }
        usable
    }

    // ---- 2. protected resource metadata ----------------------------------

    /// Looks where clients look; the document a client ends up with.
    fn metadata(
        &mut self,
        url: &Url,
        challenge: Option<&Challenge>,
        header: Option<Url>,
    ) -> Option<Metadata> {
        let origin = url.origin().ascii_serialization();
        let path = url.path().trim_end_matches('/');
        let root_url = format!("{origin}/.well-known/oauth-protected-resource");
        let path_url = (!path.is_empty()).then(|| format!("{root_url}{path}"));
        let from_header = header.map(|h| (h.to_string(), self.fetch_metadata(h.as_str())));
        let at_path = path_url.map(|u| (u.clone(), self.fetch_metadata(&u)));
        let at_root = self.fetch_metadata(&root_url);
        let found = |r: &Option<(String, Result<Metadata, String>)>| {
            r.as_ref().is_some_and(|(_, r)| r.is_ok())
        };
        let any_found = found(&from_header) || found(&at_path) || at_root.is_ok();
        // Only when nothing is where clients look: is it somewhere they don't?
        let elsewhere = if any_found {
            String::new()
        } else {
            self.look_elsewhere(url)
        };

        match &from_header {
            None if challenge.and_then(|c| c.param("resource_metadata")).is_some() => self.info(
                "metadata_header",
                "the challenge's resource_metadata is not usable (see above): clients fall back to the well-known URLs",
            ),
            None => self.info(
                "metadata_header",
                "the challenge names no metadata URL: clients fall back to the well-known URLs",
            ),
            Some((u, Ok(_))) => self.pass("metadata_header", format!("{u}: found")),
            Some((u, Err(why))) => {
                let expected = at_path.as_ref().map_or(&root_url, |(u, _)| u);
                self.fail(
                    "metadata_header",
                    format!("{u}: {why}"),
                    format!("serve the metadata at {u}, or point resource_metadata at where it is served (normally {expected}){elsewhere}"),
                )
            }
        }
        // The well-known URL a client without the header tries first; missing
        // is a warning when clients find the document elsewhere.
        let primary_missing = if any_found {
            Status::Warn
        } else {
            Status::Fail
        };
        match &at_path {
            None => self.info(
                "metadata_path",
                "the URL has no path: the root URL is the well-known one",
            ),
            Some((u, Ok(_))) => self.pass("metadata_path", format!("{u}: found")),
            Some((u, Err(why))) => {
                let impact = if any_found {
                    "clients that do not read the challenge look here first"
                } else {
                    "no client finds the metadata"
                };
                let fix = format!(
                    "serve the protected resource metadata at {u} (RFC 9728 §3.1){elsewhere}"
                );
                self.say(
                    "metadata_path",
                    primary_missing,
                    format!("{u}: {why}; {impact}"),
                    Some(fix),
                );
            }
        }
        match (&at_root, at_path.is_some()) {
            (Ok(doc), true) if doc.resource != self.options.url => self.info(
                "metadata_root",
                format!("{root_url} describes another resource ({}); clients read it only when the path-inserted URL fails", doc.resource),
            ),
            (Ok(_), _) => self.pass("metadata_root", format!("{root_url}: found")),
            (Err(why), true) => self.info(
                "metadata_root",
                format!("{root_url}: {why}; optional for a URL with a path (clients try it last)"),
            ),
            (Err(why), false) => {
                let fix = format!("serve the protected resource metadata at {root_url} (RFC 9728 §3.1){elsewhere}");
                self.say("metadata_root", primary_missing, format!("{root_url}: {why}"), Some(fix));
            }
        }
        // What a client ends up with: the header's document, else the
        // well-known ones in the 2025-11-25 order.
        [
            from_header.map(|(_, r)| r),
            at_path.map(|(_, r)| r),
            Some(at_root),
        ]
        .into_iter()
        .flatten()
        .find_map(Result::ok)
    }

    /// Where a misplaced document usually is: the well-known suffix appended
    /// to the URL's path instead of inserted before it. A note for the fix.
    fn look_elsewhere(&self, url: &Url) -> String {
        let path = url.path().trim_end_matches('/');
        let appended = format!(
            "{}{path}/.well-known/oauth-protected-resource",
            url.origin().ascii_serialization()
        );
        match path.is_empty() || self.fetch_metadata(&appended).is_err() {
            true => String::new(),
            false => format!(" (it is served at {appended}, where clients do not look)"),
        }
    }

    fn fetch_metadata(&self, url: &str) -> Result<Metadata, String> {
        let doc = self.get_json(url)?;
        let resource = doc
            .get("resource")
            .and_then(Value::as_str)
            .ok_or("no \"resource\" string")?;
        let servers = strings(doc.get("authorization_servers"));
        if servers.is_empty() {
            return Err("no \"authorization_servers\" (a non-empty array of URLs)".into());
        }
        Ok(Metadata {
            url: url.to_owned(),
            resource: resource.to_owned(),
            authorization_servers: servers,
            scopes: strings(doc.get("scopes_supported")),
        })
    }

    // ---- 3. resource ------------------------------------------------------

    fn resource(&mut self, metadata: &Metadata) {
        let url = &self.options.url;
        if &metadata.resource == url {
            return self.pass("resource", format!("{url} (from {})", metadata.url));
        }
        let hint = match metadata.resource.trim_end_matches('/') == url.trim_end_matches('/') {
            true => " (they differ by a trailing slash only)",
            false => "",
        };
        self.fail(
            "resource",
            format!(
                "the metadata at {} says resource \"{}\" but the URL is \"{url}\"{hint}: clients refuse the metadata",
                metadata.url, metadata.resource
            ),
            format!("set \"resource\" to exactly \"{url}\", path included (RFC 9728 §3.3)"),
        );
    }

    // ---- 4-7. the authorization server ------------------------------------

    fn authorization_server(&mut self, metadata: &Metadata) {
        let id = "authorization_server";
        let issuer = &metadata.authorization_servers[0];
        let of = match metadata.authorization_servers.len() {
            1 => String::new(),
            n => format!(" (the first of {n})"),
        };
        let issuer_url = match Url::parse(issuer) {
            Ok(u) if secure_or_loopback(&u) && u.query().is_none() && u.fragment().is_none() => u,
            _ => {
                self.fail(
                    id,
                    format!("authorization_servers names \"{issuer}\": not an https URL without query or fragment"),
                    "list the authorization server's issuer identifier (RFC 8414 §2)",
                );
                return self.not_reached(&AS_STEPS, "no usable authorization server");
            }
        };
        let origin = issuer_url.origin().ascii_serialization();
        let path = issuer_url.path().trim_end_matches('/');
        let mut candidates = vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
        ];
        if !path.is_empty() {
            candidates.push(format!("{origin}{path}/.well-known/openid-configuration"));
        }
        let mut tried = Vec::new();
        let mut found = None;
        for candidate in &candidates {
            match self.get_json(candidate) {
                Ok(doc) if doc.is_object() => {
                    found = Some((candidate, doc));
                    break;
                }
                Ok(_) => tried.push(format!("{candidate}: not a JSON object")),
                Err(why) => tried.push(format!("{candidate}: {why}")),
            }
        }
        let Some((found_at, doc)) = found else {
            self.fail(
                id,
                format!("{issuer}{of}: no metadata; tried {}", tried.join("; ")),
                format!(
                    "serve RFC 8414 metadata at {} (or OpenID Connect discovery), or list the right issuer in authorization_servers",
                    candidates[0]
                ),
            );
            return self.not_reached(&AS_STEPS, "no authorization server metadata");
        };
        self.pass(id, format!("{issuer}{of}: {found_at}"));

        match doc.get("issuer").and_then(Value::as_str) {
            Some(advertised) if advertised == issuer => self.pass("issuer", advertised),
            advertised => self.fail(
                "issuer",
                format!(
                    "the metadata says issuer \"{}\" but authorization_servers names \"{issuer}\": clients refuse the metadata",
                    advertised.unwrap_or("(none)")
                ),
                "list exactly the issuer value in authorization_servers, trailing slash included (RFC 8414 §3.3)",
            ),
        }

        let methods = strings(doc.get("code_challenge_methods_supported"));
        if methods.iter().any(|m| m == "S256") {
            self.pass(
                "pkce",
                format!("code_challenge_methods_supported: {}", methods.join(", ")),
            );
        } else {
            let listed = if methods.is_empty() {
                "absent".to_owned()
            } else {
                methods.join(", ")
            };
            self.fail(
                "pkce",
                format!("code_challenge_methods_supported: {listed}; MCP clients refuse to proceed without S256"),
                "support PKCE with S256 and list it in code_challenge_methods_supported",
            );
        }

        let cimd = doc.get("client_id_metadata_document_supported") == Some(&Value::Bool(true));
        let dcr = doc.get("registration_endpoint").and_then(Value::as_str);
        let ways: Vec<String> = [
            cimd.then(|| "Client ID Metadata Documents".to_owned()),
            dcr.map(|e| format!("dynamic client registration at {e}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if ways.is_empty() {
            self.warn(
                "registration",
                "neither client_id_metadata_document_supported nor registration_endpoint: users must enter a pre-registered client id",
                "support Client ID Metadata Documents (or RFC 7591 registration), or hand users a client id",
            );
        } else {
            self.pass("registration", ways.join("; "));
        }

        self.jwks(doc.get("jwks_uri").and_then(Value::as_str));
    }

    /// The keys matter to a resource server that verifies JWTs itself (as
    /// this gate does); MCP clients never read them and a server that
    /// introspects tokens needs none, so problems here warn.
    fn jwks(&mut self, jwks_uri: Option<&str>) {
        let cannot = "a resource server verifying JWT access tokens cannot check signatures";
        let Some(uri) = jwks_uri else {
            let fix = "publish jwks_uri, or have the resource server introspect tokens (RFC 7662)";
            return self.warn(
                "jwks",
                format!("no jwks_uri in the metadata: {cannot}"),
                fix,
            );
        };
        let fix = "serve the public signing keys as a JWK Set at jwks_uri";
        let reply = match self.get(uri, "application/jwk-set+json, application/json") {
            Ok(r) if r.status == 200 => r,
            Ok(r) => {
                return self.warn(
                    "jwks",
                    format!("{uri}: {}; {cannot}", describe_status(&r)),
                    fix,
                )
            }
            Err(e) => return self.warn("jwks", format!("{uri}: {e}; {cannot}"), fix),
        };
        match KeySet::parse(&reply.body) {
            Err(e) => self.warn("jwks", format!("{uri}: {e}; {cannot}"), fix),
            Ok(set) if set.keys().is_empty() => self.warn(
                "jwks",
                format!(
                    "{uri}: no key usable for signatures (skipped: {:?}); {cannot}",
                    set.skipped()
                ),
                "publish public signing keys: RSA 2048-4096 bits, EC P-256 or Ed25519",
            ),
            Ok(set) => {
                let kinds: Vec<&str> = set
                    .keys()
                    .iter()
                    .map(|k| match k.key {
                        PublicKey::Rsa { .. } => "RSA",
                        PublicKey::P256 { .. } => "EC P-256",
                        PublicKey::Ed25519(_) => "Ed25519",
                    })
                    .collect();
                self.pass(
                    "jwks",
                    format!("{uri}: {} usable key(s): {}", kinds.len(), kinds.join(", ")),
                );
            }
        }
    }

    // ---- 8. CORS ----------------------------------------------------------

    /// A browser client's view: the preflight for its authorized POST, then
    /// the challenge it must be able to read to start authorization.
    fn cors(&mut self) {
        let origin = self.options.browser_origin.as_str();
        let request = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type, mcp-protocol-version",
            ),
        ];
        let preflight = http::send("OPTIONS", &self.options.url, &request, None, self.limits);
        let challenge = self.post(&initialize_body(), &[("origin", origin)], OFFERED_VERSION);
        let (preflight, challenge) = match (preflight, challenge) {
            (Ok(p), Ok(c)) => (p, c),
            (Err(e), _) | (_, Err(e)) => {
                return self.warn(
                    "cors",
                    format!("from {origin}: {e}"),
                    "check that the server is up",
                );
            }
        };
        let allows = |r: &Reply| {
            r.header("access-control-allow-origin")
                .is_some_and(|v| v.trim() == origin || v.trim() == "*")
        };
        let preflight_ok = (200..300).contains(&preflight.status) && allows(&preflight);
        // Refusing an origin outright is a policy (MCP transports must check
        // Origin), not a fault: only a half-open door is one.
        if !preflight_ok && !allows(&challenge) {
            return self.warn(
                "cors",
                format!("{origin} is not allowed (preflight: {}): browser clients served from it cannot connect; right if none should", preflight.status),
                format!("to serve browser clients on {origin}, answer its preflight and requests with Access-Control-Allow-Origin: {origin} (portcullis: MCP_ALLOWED_ORIGINS)"),
            );
        }
        let mut problems: Vec<(String, String)> = Vec::new();
        if !preflight_ok {
            problems.push((
                format!(
                    "the preflight got {} without Access-Control-Allow-Origin: {origin}",
                    preflight.status
                ),
                format!("answer OPTIONS with 2xx and Access-Control-Allow-Origin: {origin}"),
            ));
        } else if !list_has(
            preflight.header("access-control-allow-headers"),
            "authorization",
            false,
        ) {
            problems.push((
                "the preflight does not allow the Authorization header".to_owned(),
                "list Authorization (with Content-Type, MCP-Protocol-Version, Mcp-Session-Id) in \
                 Access-Control-Allow-Headers (a * does not cover Authorization)"
                    .to_owned(),
            ));
        }
        if !allows(&challenge) {
            problems.push((
                format!(
                    "the {} to a POST from {origin} has no Access-Control-Allow-Origin",
                    challenge.status
                ),
                format!("add Access-Control-Allow-Origin: {origin} to the 401 too"),
            ));
        } else if challenge.status == 401
            && !list_has(
                challenge.header("access-control-expose-headers"),
                "www-authenticate",
                true,
            )
        {
            problems.push((
                format!("the {} does not expose WWW-Authenticate: a browser client cannot read the challenge", challenge.status),
                "add Access-Control-Expose-Headers: WWW-Authenticate (and Mcp-Session-Id) to the 401".to_owned(),
            ));
        }
        if problems.is_empty() {
            return self.pass(
                "cors",
                format!("{origin}: the preflight allows Authorization; the challenge is readable"),
            );
        }
        let (details, fixes): (Vec<_>, Vec<_>) = problems.into_iter().unzip();
        self.fail(
            "cors",
            format!("{origin}: {}", details.join("; ")),
            fixes.join("; "),
        );
    }

    // ---- 9. offline_access ------------------------------------------------

    fn offline_access(&mut self, metadata: Option<&Metadata>, challenge: Option<&Challenge>) {
        let challenge_scope = challenge.and_then(|c| c.param("scope"));
        if metadata.is_none() && challenge_scope.is_none() {
            return self.not_reached(&["offline_access"], "no scopes to look at");
        }
        let place = if metadata.is_some_and(|m| m.scopes.iter().any(|s| s == "offline_access")) {
            "scopes_supported of the resource metadata"
        } else if challenge_scope
            .is_some_and(|s| s.split_whitespace().any(|s| s == "offline_access"))
        {
            "the challenge's scope"
        } else {
            return self.pass("offline_access", "not among the resource's scopes");
        };
        self.warn(
            "offline_access",
            format!("offline_access is in {place}"),
            "leave offline_access to the authorization server's metadata: clients ask for refresh \
             tokens from there, and a resource listing it makes every client request one",
        );
    }

    // ---- 10. with a token -------------------------------------------------

    fn token_steps(&mut self) {
        let Some(token) = token(self.options) else {
            return self.info(
                "token",
                "initialize and tools/list skipped: no token given (pass one with --token-env NAME or --token-file PATH)",
            );
        };
        // A bearer token is as good as a password to whoever reads it.
        if Url::parse(&self.options.url).is_ok_and(|u| !secure_or_loopback(&u)) {
            self.fail(
                "initialize",
                "the token was not sent: the URL is plain http on a host that is not loopback",
                "serve the endpoint over https",
            );
            return self.not_reached(&["tools_list"], "initialize not tried");
        }
        let authorization = format!("Bearer {token}");
        let mut headers = vec![("authorization", authorization.as_str())];
        let (reply, result) = match self.rpc(&initialize_body(), 1, &headers, OFFERED_VERSION) {
            Ok(answer) => answer,
            Err((why, fix)) => {
                self.fail("initialize", why, fix);
                return self.not_reached(&["tools_list"], "initialize failed");
            }
        };
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(OFFERED_VERSION);
        let server = result
            .pointer("/serverInfo/name")
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)");
        let session = reply.header("mcp-session-id");
        if let Some(session) = session {
            headers.push(("mcp-session-id", session));
        }
        let detail = format!(
            "server {} speaks {version}, {}",
            clip(server, 80),
            if session.is_some() {
                "session id kept"
            } else {
                "no session id"
            }
        );
        let notification = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        match self.post(notification, &headers, version) {
            Ok(r) if (200..300).contains(&r.status) => self.pass("initialize", detail),
            notified => self.warn(
                "initialize",
                match notified {
                    Ok(r) => format!(
                        "{detail}; notifications/initialized got {}",
                        describe_status(&r)
                    ),
                    Err(e) => format!("{detail}; notifications/initialized: {e}"),
                },
                "accept notifications/initialized with 202 Accepted (MCP Streamable HTTP)",
            ),
        }

        let list = br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#;
        match self.rpc(list, 2, &headers, version) {
            Ok((_, result)) => match result.get("tools").and_then(Value::as_array) {
                Some(tools) => {
                    let names: Vec<&str> = tools
                        .iter()
                        .filter_map(|t| t.get("name")?.as_str())
                        .take(10)
                        .collect();
                    let more = if tools.len() > names.len() {
                        ", …"
                    } else {
                        ""
                    };
                    let names = clip(&names.join(", "), 300);
                    self.pass(
                        "tools_list",
                        format!("{} tool(s): {names}{more}", tools.len()),
                    );
                }
                None => self.fail(
                    "tools_list",
                    "the result has no \"tools\" array",
                    "answer tools/list with {\"tools\": [...]}",
                ),
            },
            Err((why, fix)) => self.fail("tools_list", why, fix),
        }
    }

    /// One JSON-RPC request with a token: the reply and its `result`, or why
    /// not and the fix.
    fn rpc(
        &self,
        body: &[u8],
        id: i64,
        headers: &[(&str, &str)],
        version: &str,
    ) -> Result<(Reply, Value), (String, String)> {
        let fixed = |why: String, fix: &str| (why, fix.to_owned());
        let reply = self.post(body, headers, version).map_err(|e| {
            fixed(
                format!("POST {}: {e}", self.options.url),
                "check that the server is up",
            )
        })?;
        if matches!(reply.status, 401 | 403) {
            let challenge = reply.headers_named("www-authenticate").join(", ");
            return Err(fixed(
                format!("the token was refused: {} {}", reply.status, clip(&challenge, 300)),
                "check the token: audience (the RFC 8707 resource, this URL), scopes, expiry, issuer",
            ));
        }
        if reply.status != 200 {
            return Err(fixed(
                format!("{}: {}", describe_status(&reply), snippet(&reply.body)),
                "answer JSON-RPC requests with 200 and application/json or text/event-stream",
            ));
        }
        let sse = reply.header("content-type").is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
        let message = match sse {
            true => sse_message(&reply.body, id),
            false => reply.json().filter(|m| m.get("id") == Some(&json!(id))),
        };
        let Some(message) = message else {
            return Err(fixed(
                format!("no JSON-RPC answer with id {id}: {}", snippet(&reply.body)),
                "answer with a JSON-RPC response carrying the request's id",
            ));
        };
        if let Some(error) = message.get("error") {
            return Err(fixed(
                format!("JSON-RPC error: {}", clip(&error.to_string(), 300)),
                "see the server's log",
            ));
        }
        match message.get("result") {
            Some(result) if result.is_object() => Ok((reply, result.clone())),
            _ => Err(fixed(
                "the answer has no result object".to_owned(),
                "answer with a JSON-RPC result",
            )),
        }
    }

    // ---- exchanges --------------------------------------------------------

    /// POSTs a JSON-RPC body to the endpoint as an MCP client does.
    fn post(&self, body: &[u8], extra: &[(&str, &str)], version: &str) -> Result<Reply, HttpError> {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", version),
        ];
        headers.extend_from_slice(extra);
        http::send("POST", &self.options.url, &headers, Some(body), self.limits)
    }

    fn get(&self, url: &str, accept: &str) -> Result<Reply, HttpError> {
        http::get(url, &[("accept", accept)], self.limits)
    }

    /// GETs a JSON document: `200` and a JSON body, or why not.
    fn get_json(&self, url: &str) -> Result<Value, String> {
        let reply = self
            .get(url, "application/json")
            .map_err(|e| e.to_string())?;
        if reply.status != 200 {
            return Err(describe_status(&reply));
        }
        reply
            .json()
            .ok_or_else(|| format!("200 but not JSON: {}", snippet(&reply.body)))
    }
}

// ---- helpers ---------------------------------------------------------------

fn initialize_body() -> Vec<u8> {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": OFFERED_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "portcullis-doctor", "version": env!("CARGO_PKG_VERSION") },
        },
    })
    .to_string()
    .into_bytes()
}

/// The first SSE event (WHATWG HTML §9.2.6) whose data is the JSON-RPC
/// answer with this id: servers may send notifications and requests first.
fn sse_message(body: &[u8], id: i64) -> Option<Value> {
    let text = String::from_utf8_lossy(body);
    let mut data = String::new();
    for line in text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .chain([""])
    {
        if line.is_empty() {
            match serde_json::from_str::<Value>(&data) {
                Ok(message) if message.get("id") == Some(&json!(id)) => return Some(message),
                _ => data.clear(),
            }
        } else if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    None
}

/// A status for a detail; a redirect says where to, since none is followed
/// (a metadata URL that redirects to a login page is a classic).
fn describe_status(reply: &Reply) -> String {
    match reply.header("location") {
        Some(to) if (300..400).contains(&reply.status) => {
            format!(
                "{} redirect to {} (not followed)",
                reply.status,
                clip(to, 200)
            )
        }
        _ => format!("status {}", reply.status),
    }
}

/// The strings of a JSON array (others ignored); empty when not an array.
fn strings(value: Option<&Value>) -> Vec<String> {
    let items = value
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    items
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Whether a comma-separated header list holds `name` (any case), or `*`
/// when a wildcard counts.
fn list_has(value: Option<&str>, name: &str, wildcard: bool) -> bool {
    value.is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|item| item.eq_ignore_ascii_case(name) || (wildcard && item == "*"))
    })
}

/// https, or plain http on a loopback host (local development).
fn secure_or_loopback(url: &Url) -> bool {
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        ("http", Some(Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

/// The path-inserted well-known URL for `url`, for fix texts.
fn well_known_guess(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => format!(
            "{}/.well-known/oauth-protected-resource{}",
            u.origin().ascii_serialization(),
            u.path().trim_end_matches('/')
        ),
        Err(_) => "https://host/.well-known/oauth-protected-resource/path".to_owned(),
    }
}

/// A body for a detail: lossy text, control characters blanked, clipped.
fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".to_owned();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip(text.trim(), 200)
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// One challenge of a `WWW-Authenticate` field (RFC 9110 §11.6.1).
#[derive(Debug, Default)]
struct Challenge {
    scheme: String,
    /// Parameters, names in lower case; a repeated one keeps its first value.
    params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one field value of one or more challenges. Forgiving: what it
/// cannot read ends the parse, keeping what came before.
fn parse_challenges(value: &str) -> Vec<Challenge> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let chars: Vec<char> = value.chars().collect();
    let skip = |at: &mut usize, set: &str| {
        while *at < chars.len() && set.contains(chars[*at]) {
            *at += 1;
        }
    };
    let mut out: Vec<Challenge> = Vec::new();
    let mut at = 0;
    loop {
        skip(&mut at, " \t,");
        let start = at;
        while at < chars.len() && is_tchar(chars[at]) {
            at += 1;
        }
        if at == start {
            return out;
        }
        let word: String = chars[start..at].iter().collect();
        let mut look = at;
        skip(&mut look, " \t");
        let Some(current) = out.last_mut().filter(|_| chars.get(look) == Some(&'=')) else {
            out.push(Challenge {
                scheme: word,
                params: Vec::new(),
            });
            continue;
        };
        at = look + 1;
        skip(&mut at, " \t");
        let mut value = String::new();
        if chars.get(at) == Some(&'"') {
            at += 1;
            while at < chars.len() && chars[at] != '"' {
                if chars[at] == '\\' && at + 1 < chars.len() {
                    at += 1;
                }
                value.push(chars[at]);
                at += 1;
            }
            at += 1;
        } else {
            // A token (RFC 9110), or a token68's trailing `=` padding.
            while at < chars.len() && (is_tchar(chars[at]) || "/=".contains(chars[at])) {
                value.push(chars[at]);
                at += 1;
            }
        }
        let name = word.to_ascii_lowercase();
        if current.param(&name).is_none() {
            current.params.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenges(
            r#"Basic realm="x", Bearer resource_metadata="https://a/b", scope="a b", error=invalid_token"#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].scheme, "Bearer");
        assert_eq!(c[1].param("resource_metadata"), Some("https://a/b"));
        assert_eq!(c[1].param("scope"), Some("a b"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        let c = parse_challenges("Negotiate abc==, Bearer realm=\"r\\\"q\"");
        assert_eq!(c.last().map(|c| c.scheme.as_str()), Some("Bearer"));
        assert_eq!(c.last().and_then(|c| c.param("realm")), Some("r\"q"));
        for garbage in [
            "",
            "=",
            "\"",
            "Bearer \"",
            "Bearer a=\"\\",
            "Bearer ,,, =x",
            "é, Bearer a=é",
        ] {
            let _ = parse_challenges(garbage);
        }
    }

    #[test]
    fn sse_finds_the_answer_after_other_events() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n\
                     data: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":1,\"result\":{}}\r\n\r\n";
        assert!(sse_message(body, 1).is_some());
        assert!(sse_message(body, 2).is_none());
        assert!(sse_message(b"\xff\xfe data: {", 1).is_none());
    }

    #[test]
    fn a_bad_url_is_one_failing_step() {
        let options = Options {
            url: "/mcp".to_owned(),
            token: Some("secret".to_owned()),
            browser_origin: "https://claude.ai".to_owned(),
            timeout: Duration::from_secs(1),
        };
        let report = run(&options);
        assert_eq!(report.steps.len(), 1);
        assert!(report.failed());
    }
}
