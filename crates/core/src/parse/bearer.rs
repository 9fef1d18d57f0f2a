//! Bearer token extraction, RFC 6750 §2.
//!
//! The gate accepts a token only from the `Authorization` request header field
//! (§2.1). The form-encoded body (§2.2) and the URI query (§2.3) methods are
//! refused outright: a request that tries them is malformed for this resource
//! and is never forwarded. A request that uses more than one method, or repeats
//! the header, is likewise `invalid_request` (§3.1).

/// Default upper bound on each `Authorization` header value
/// (`AUTHORIZATION_MAX_BYTES`), checked before anything else is read from the
/// request's credentials: a token is never decoded, and its claims never
/// parsed, past this size.
pub const DEFAULT_MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// Why a request's credentials could not even be read. Each maps to
/// `400 invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// `access_token` appeared in the query string (RFC 6750 §2.3, refused).
    TokenInQuery,
    /// The body is form-encoded, the carrier of RFC 6750 §2.2 tokens (refused;
    /// MCP's Streamable HTTP transport only sends JSON).
    FormEncodedBody,
    /// An `Authorization` value exceeds the configured cap
    /// ([`DEFAULT_MAX_AUTHORIZATION_BYTES`] unless configured).
    HeaderTooLarge,
    /// `Bearer` followed by nothing, by several values, or by characters
    /// outside the `b64token` syntax.
    MalformedCredentials,
    /// The `Authorization` header field appeared more than once.
    RepeatedHeader,
}

impl BearerError {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TokenInQuery => "token_in_query",
            Self::FormEncodedBody => "form_encoded_body",
            Self::HeaderTooLarge => "authorization_header_too_large",
            Self::MalformedCredentials => "malformed_bearer_credentials",
            Self::RepeatedHeader => "repeated_authorization_header",
        }
    }
}

/// The parts of a request that can carry an access token.
#[derive(Debug, Clone, Copy)]
pub struct CredentialCarriers<'a> {
    /// Every `Authorization` header value, in order (one entry per field line
    /// where the runtime keeps them apart).
    pub authorization: &'a [&'a str],
    /// The raw query string, without the leading `?`.
    pub query: Option<&'a str>,
    /// The `Content-Type` header value.
    pub content_type: Option<&'a str>,
    /// Largest `Authorization` value read, in bytes.
    pub max_authorization_bytes: usize,
}

impl Default for CredentialCarriers<'_> {
    fn default() -> Self {
        Self {
            authorization: &[],
            query: None,
            content_type: None,
            max_authorization_bytes: DEFAULT_MAX_AUTHORIZATION_BYTES,
        }
    }
}

/// The authorization scheme of a request's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer` (RFC 6750 §2.1).
    Bearer,
    /// `DPoP` (RFC 9449 §7.1): the token with a proof of its key.
    Dpop,
}

/// Returns the bearer token, `Ok(None)` when the request carries no bearer
/// credentials at all (which earns the plain challenge of RFC 6750 §3.1), or
/// the reason the request is malformed. A `DPoP` token counts as none here.
pub fn extract_bearer<'a>(
    carriers: &CredentialCarriers<'a>,
) -> Result<Option<&'a str>, BearerError> {
    Ok(match extract_credentials(carriers)? {
        Some((Scheme::Bearer, token)) => Some(token),
        _ => None,
    })
}

/// Returns the token and its scheme (`Bearer`, or `DPoP`, whose token has
/// the same `b64token` syntax, RFC 9449 §7.1), `Ok(None)` when the request
/// carries neither, or the reason the request is malformed.
pub fn extract_credentials<'a>(
    carriers: &CredentialCarriers<'a>,
) -> Result<Option<(Scheme, &'a str)>, BearerError> {
    // First, before any other look at the credentials: an oversized value is
    // refused on its length alone.
    if carriers
        .authorization
        .iter()
        .any(|value| value.len() > carriers.max_authorization_bytes)
    {
        return Err(BearerError::HeaderTooLarge);
    }
    if carriers.query.is_some_and(query_has_access_token) {
        return Err(BearerError::TokenInQuery);
    }
    if carriers.content_type.is_some_and(is_form_encoded) {
        return Err(BearerError::FormEncodedBody);
    }
    let value = match carriers.authorization {
        [] => return Ok(None),
        [one] => *one,
        _ => return Err(BearerError::RepeatedHeader),
    };
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = match value.split_once(' ') {
        Some((scheme, rest)) => (scheme, rest),
        None => (value, ""),
    };
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        // Another scheme (Basic, ...) is not a token: the client gets the
        // same challenge as one that sent nothing.
        return Ok(None);
    };
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || !is_b64token(token) {
        return Err(BearerError::MalformedCredentials);
    }
    Ok(Some((scheme, token)))
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
/// (RFC 6750 §2.1).
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

fn query_has_access_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        percent_decoded_eq(name, "access_token")
    })
}

/// Compares a query parameter name with `expected` after percent-decoding and
/// `+`-to-space, so `access%5Ftoken` cannot slip past.
fn percent_decoded_eq(raw: &str, expected: &str) -> bool {
    let decoded: Vec<u8> = url::form_urlencoded::parse(format!("{raw}=").as_bytes())
        .next()
        .map(|(name, _)| name.into_owned().into_bytes())
        .unwrap_or_default();
    decoded.eq_ignore_ascii_case(expected.as_bytes())
}

fn is_form_encoded(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        || media_type.eq_ignore_ascii_case("multipart/form-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(authorization: &[&str]) -> Result<Option<&'static str>, BearerError> {
        let owned: Vec<&'static str> = authorization
            .iter()
            .map(|s| &*Box::leak(s.to_string().into_boxed_str()))
            .collect();
        let leaked: &'static [&'static str] = Box::leak(owned.into_boxed_slice());
        extract_bearer(&CredentialCarriers {
            authorization: leaked,
            ..Default::default()
        })
    }

    #[test]
    fn no_header_means_no_credentials() {
        assert_eq!(extract(&[]), Ok(None));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(extract(&["bearer abc.def.ghi"]), Ok(Some("abc.def.ghi")));
        assert_eq!(extract(&["BEARER abc"]), Ok(Some("abc")));
    }

    #[test]
    fn other_schemes_are_treated_as_absent_credentials() {
        assert_eq!(extract(&["Basic dXNlcjpwYXNz"]), Ok(None));
        assert_eq!(extract(&["DPoP abc"]), Ok(None));
        assert_eq!(extract(&["Bearerabc"]), Ok(None));
    }

    #[test]
    fn empty_or_invalid_token_is_malformed() {
        for value in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer ===",
            "Bearer a\"b",
            "Bearer é",
        ] {
            assert_eq!(
                extract(&[value]),
                Err(BearerError::MalformedCredentials),
                "{value:?}"
            );
        }
    }

    #[test]
    fn combined_header_values_are_malformed() {
        // A runtime that joins repeated fields yields "Bearer a, Bearer b".
        assert_eq!(
            extract(&["Bearer a, Bearer b"]),
            Err(BearerError::MalformedCredentials)
        );
        assert_eq!(
            extract(&["Bearer a", "Bearer b"]),
            Err(BearerError::RepeatedHeader)
        );
    }

    #[test]
    fn b64token_allows_trailing_padding_only() {
        assert_eq!(extract(&["Bearer ab+/~-._=="]), Ok(Some("ab+/~-._==")));
        assert_eq!(
            extract(&["Bearer a=b"]),
            Err(BearerError::MalformedCredentials)
        );
    }

    #[test]
    fn oversized_header_is_refused_before_parsing() {
        let big = format!("Bearer {}", "a".repeat(DEFAULT_MAX_AUTHORIZATION_BYTES));
        assert_eq!(extract(&[big.as_str()]), Err(BearerError::HeaderTooLarge));
        let at_limit = format!("Bearer {}", "a".repeat(DEFAULT_MAX_AUTHORIZATION_BYTES - 7));
        assert!(extract(&[at_limit.as_str()]).unwrap().is_some());
        // The size decides first: not the scheme, not the syntax, not the
        // repetition, not the other carriers.
        let garbage = format!("Basic {}", "\u{7f}".repeat(DEFAULT_MAX_AUTHORIZATION_BYTES));
        assert_eq!(
            extract(&[garbage.as_str(), "Bearer a"]),
            Err(BearerError::HeaderTooLarge)
        );
        let carriers = CredentialCarriers {
            authorization: &["Bearer abcdefgh"],
            query: Some("access_token=x"),
            max_authorization_bytes: 8,
            ..Default::default()
        };
        assert_eq!(extract_bearer(&carriers), Err(BearerError::HeaderTooLarge));
        let carriers = CredentialCarriers {
            authorization: &["Bearer abcdefgh"],
            max_authorization_bytes: 15,
            ..Default::default()
        };
        assert_eq!(extract_bearer(&carriers), Ok(Some("abcdefgh")));
    }

    #[test]
    fn token_in_query_is_refused_even_when_encoded() {
        for query in [
            "access_token=x",
            "a=1&access_token=x",
            "access%5Ftoken=x",
            "ACCESS_TOKEN",
            "access_token",
        ] {
            let carriers = CredentialCarriers {
                query: Some(query),
                ..Default::default()
            };
            assert_eq!(
                extract_bearer(&carriers),
                Err(BearerError::TokenInQuery),
                "{query}"
            );
        }
        let carriers = CredentialCarriers {
            query: Some("token=x&access=1"),
            ..Default::default()
        };
        assert_eq!(extract_bearer(&carriers), Ok(None));
    }

    #[test]
    fn form_bodies_are_refused() {
        for content_type in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            "multipart/form-data; boundary=x",
        ] {
            let carriers = CredentialCarriers {
                content_type: Some(content_type),
                ..Default::default()
            };
            assert_eq!(extract_bearer(&carriers), Err(BearerError::FormEncodedBody));
        }
        let carriers = CredentialCarriers {
            content_type: Some("application/json"),
            ..Default::default()
        };
        assert_eq!(extract_bearer(&carriers), Ok(None));
    }
}
