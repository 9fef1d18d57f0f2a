//! What the origin receives, and what the client receives back.
//!
//! MCP authorization (2025-06-18 §Access Token Privilege Restriction,
//! "token passthrough" in §Security Considerations) forbids passing the
//! client's token to the upstream server, so the `Authorization` header is
//! removed and optionally replaced by the gate's own credential. The
//! verified identity travels in `X-Auth-*` headers that the client cannot
//! forge, because any copy it sends is dropped first. Hop-by-hop fields
//! (RFC 9110 §7.6.1) never cross the gate in either direction.

use url::Url;

use crate::forward::assertion::Signing;
use crate::verify::jwt::AccessToken;

/// Header carrying the token's `sub`.
pub const SUBJECT_HEADER: &str = "x-auth-subject";
/// Header carrying the token's `client_id` (or `azp`).
pub const CLIENT_ID_HEADER: &str = "x-auth-client-id";
/// Header carrying the granted scopes, space-separated.
pub const SCOPES_HEADER: &str = "x-auth-scopes";

/// Request fields never forwarded: credentials meant for the gate, the
/// gate's own assertion, fields the runtime sets itself, and hop-by-hop
/// fields.
const DROPPED_REQUEST_HEADERS: [&str; 14] = [
    "authorization",
    // The proof of the client's key is the gate's to check (RFC 9449 §7):
    // the origin sees neither the token nor the proof made for it.
    "dpop",
    // Only the gate signs assertions; a client's copy never passes.
    crate::forward::assertion::ASSERTION_HEADER,
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// Response fields never passed back to the client. `DPoP-Nonce` is the
/// gate's to give: the origin is not the resource server the proofs are for.
const DROPPED_RESPONSE_HEADERS: [&str; 8] = [
    "dpop-nonce",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// The fields of the origin's answer the gate's decision reads (sessions,
/// the `tools/list` filter, storing) or replaces (CORS, storing). The
/// machine reads and replaces no other field of the origin's answer, and
/// only appends `Vary`: a driver may hand it these alone (see
/// `Response::from_origin` in the flow).
pub const ORIGIN_FIELDS_DECIDED: [&str; 5] = [
    "content-type",
    "mcp-session-id",
    "cache-control",
    "access-control-allow-origin",
    "access-control-expose-headers",
];

/// The origin's fields a driver that gave the machine only
/// [`ORIGIN_FIELDS_DECIDED`] removes from the origin's answer before adding
/// the machine's: those, and the fields never passed back.
pub fn origin_fields_replaced() -> impl Iterator<Item = &'static str> {
    DROPPED_RESPONSE_HEADERS
        .iter()
        .chain(ORIGIN_FIELDS_DECIDED.iter())
        .copied()
}

/// The request to send to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRequest {
    /// Full origin URL, sub-path and query preserved.
    pub url: String,
    /// Header fields to send, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body the gate rewrote (a request whose `requestState` it
    /// opened), sent instead of the client's; `None`: the client's body,
    /// as read.
    pub body: Option<Vec<u8>>,
    /// The assertion to sign and add before sending, if the route sends
    /// one: the request is sent only with it.
    pub assertion: Option<Signing>,
    /// How long the origin may take to accept the connection and take the
    /// request (`ORIGIN_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u32,
    /// How long the origin may take, once connected, to send its answer's
    /// head (`ORIGIN_FIRST_BYTE_TIMEOUT_MS`).
    pub first_byte_timeout_ms: u32,
}

/// Why the origin gave no answer head. Nothing was sent to the client yet,
/// so each is answered by the gate (RFC 9110 §15.6.3 `502`, §15.6.5 `504`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginFault {
    /// The connection was refused or reset, the name did not resolve, or
    /// the origin answered with something that is not HTTP.
    Unreachable,
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// Connected, but no answer head within the first-byte timeout.
    FirstByteTimeout,
}

impl OriginFault {
    /// The reason in the request's log line.
    pub fn reason(self) -> &'static str {
        match self {
            OriginFault::Unreachable => "origin_unreachable",
            OriginFault::ConnectTimeout => "origin_connect_timeout",
            OriginFault::FirstByteTimeout => "origin_timeout",
        }
    }
}

/// Maps the client's path below the resource onto the origin URL.
/// `suffix` is what follows the resource path (empty, or starting with `/`).
pub fn origin_url(origin: &Url, suffix: &str, query: Option<&str>) -> String {
    if suffix.is_empty() && query.is_none() {
        return origin.as_str().to_owned();
    }
    let mut url = origin.clone();
    if !suffix.is_empty() {
        let base = origin.path().trim_end_matches('/');
        url.set_path(&format!("{base}{suffix}"));
    }
    match (query, origin.query()) {
        (Some(query), Some(existing)) => url.set_query(Some(&format!("{existing}&{query}"))),
        (Some(query), None) => url.set_query(Some(query)),
        (None, _) => {}
    }
    url.to_string()
}

/// Builds the origin request's headers from the client's.
pub fn origin_headers(
    client_headers: &[(String, String)],
    token: &AccessToken,
    origin_authorization: Option<&str>,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = client_headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            !DROPPED_REQUEST_HEADERS.contains(&name.as_str()) && !name.starts_with("x-auth-")
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    if let Some(credential) = origin_authorization {
        headers.push(("authorization".to_owned(), credential.to_owned()));
    }
    if let Some(subject) = &token.subject {
        headers.push((SUBJECT_HEADER.to_owned(), header_safe(subject)));
    }
    if let Some(client_id) = &token.client_id {
        headers.push((CLIENT_ID_HEADER.to_owned(), header_safe(client_id)));
    }
    headers.push((
        SCOPES_HEADER.to_owned(),
        header_safe(&token.scopes.join(" ")),
    ));
    headers
}

/// Claim values are arbitrary JSON strings; header values are not. Bytes
/// outside visible ASCII and space, and `%` itself, are percent-encoded so
/// the value is both valid and unambiguous.
fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x20..0x7F).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Filters the origin's response headers for the client. Authorized
/// responses are private to the caller: unless the origin already forbids
/// storing them, caches are told not to keep them.
pub fn client_response_headers(origin_headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = origin_headers
        .iter()
        .filter(|(name, _)| !DROPPED_RESPONSE_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
        .cloned()
        .collect();
    let forbids_storing = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("cache-control")
            && value.to_ascii_lowercase().contains("no-store")
    });
    if !forbids_storing {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("cache-control"));
        headers.push(("cache-control".to_owned(), "private, no-store".to_owned()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> AccessToken {
        AccessToken {
            issuer: "https://auth.example.com".into(),
            subject: Some("user-1".into()),
            client_id: Some("client-1".into()),
            scopes: vec!["a".into(), "b".into()],
            expires_at: 0,
            not_before: None,
            token_id: None,
            confirmation: None,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn maps_sub_paths_and_queries() {
        let origin = Url::parse("http://origin.internal:8080/mcp").unwrap();
        assert_eq!(
            origin_url(&origin, "", None),
            "http://origin.internal:8080/mcp"
        );
        assert_eq!(
            origin_url(&origin, "/sse", Some("a=1")),
            "http://origin.internal:8080/mcp/sse?a=1"
        );
        let slash = Url::parse("http://origin.internal/base/").unwrap();
        assert_eq!(
            origin_url(&slash, "/x", None),
            "http://origin.internal/base/x"
        );
        let with_query = Url::parse("http://origin.internal/mcp?tenant=7").unwrap();
        assert_eq!(
            origin_url(&with_query, "", Some("a=1")),
            "http://origin.internal/mcp?tenant=7&a=1"
        );
    }

    #[test]
    fn strips_credentials_and_spoofed_identity() {
        let client = pairs(&[
            ("Authorization", "Bearer client-token"),
            ("Cookie", "session=1"),
            ("X-Auth-Subject", "admin"),
            ("x-auth-scopes", "everything"),
            ("X-Auth-Anything", "x"),
            ("Mcp-Session-Id", "s-1"),
            ("MCP-Protocol-Version", "2025-11-25"),
            ("Last-Event-ID", "7"),
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("Connection", "keep-alive"),
        ]);
        let headers = origin_headers(&client, &token(), None);
        assert_eq!(
            headers,
            pairs(&[
                ("mcp-session-id", "s-1"),
                ("mcp-protocol-version", "2025-11-25"),
                ("last-event-id", "7"),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("x-auth-subject", "user-1"),
                ("x-auth-client-id", "client-1"),
                ("x-auth-scopes", "a b"),
            ])
        );
        assert!(!format!("{headers:?}").contains("client-token"));
    }

    #[test]
    fn origin_credential_replaces_the_client_token() {
        let client = pairs(&[("authorization", "Bearer client-token")]);
        let headers = origin_headers(&client, &token(), Some("Basic b3JpZ2lu"));
        assert_eq!(
            headers[0],
            ("authorization".to_owned(), "Basic b3JpZ2lu".to_owned())
        );
        assert_eq!(
            headers.iter().filter(|(n, _)| n == "authorization").count(),
            1
        );
    }

    #[test]
    fn identity_values_are_header_safe() {
        let mut odd = token();
        odd.subject = Some("jöe\r\nX-Evil: 1%".into());
        let headers = origin_headers(&[], &odd, None);
        assert_eq!(headers[0].1, "j%C3%B6e%0D%0AX-Evil: 1%25");
    }

    #[test]
    fn responses_are_private_unless_already_unstorable() {
        let headers = client_response_headers(&pairs(&[
            ("content-type", "text/event-stream"),
            ("cache-control", "public, max-age=60"),
            ("connection", "close"),
        ]));
        assert_eq!(
            headers,
            pairs(&[
                ("content-type", "text/event-stream"),
                ("cache-control", "private, no-store")
            ])
        );
        let kept = client_response_headers(&pairs(&[("Cache-Control", "no-store, no-cache")]));
        assert_eq!(kept, pairs(&[("Cache-Control", "no-store, no-cache")]));
    }
}
