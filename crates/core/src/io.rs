//! The I/O vocabulary of the gate's sans-IO machines: what a machine can ask
//! its driver to do ([`Io`]) and what it is resumed with ([`IoAnswer`]).
//!
//! A machine (the JWK Set lookup of RFC 7517 §5 with the discovery of
//! RFC 8414 §3, the RFC 7662 verdict cache, the request flow in
//! [`crate::flow::machine`]) holds no futures and does no I/O: its `step`
//! either finishes ([`Poll::Ready`]) or names one piece of I/O
//! ([`Poll::Need`]); the driver performs it and hands the outcome back
//! through the machine's `resume`, then steps again. Time is passed in.
//!
//! The fetches are plain HTTP exchanges (RFC 9110 §9.3.1 GET, §9.3.3 POST of
//! a form). The driver never follows redirects: the machines decide which
//! ones are acceptable.

use url::Url;

/// Limits on one outbound fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Deadline for the whole fetch, body included (`JWKS_FETCH_TIMEOUT_MS`).
    pub timeout_ms: u32,
    /// Largest body accepted (`JWKS_MAX_BYTES`).
    pub max_bytes: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            timeout_ms: 5_000,
            max_bytes: 256 * 1024,
        }
    }
}

/// An HTTP response as the machines need it.
#[derive(Debug, Clone, Default)]
pub struct FetchedDocument {
    /// HTTP status.
    pub status: u16,
    /// The body, within [`FetchLimits::max_bytes`].
    pub body: Vec<u8>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Expires`.
    pub expires: Option<String>,
    /// `Date`.
    pub date: Option<String>,
    /// `Location`, for redirects.
    pub location: Option<String>,
}

/// Why an outbound fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchError {
    /// Connection refused, DNS failure, TLS failure.
    Network,
    /// No complete answer within the deadline.
    Timeout,
    /// The body exceeded the size cap.
    TooLarge,
}

/// One piece of I/O a machine asks for.
///
/// Its `Debug` leaves out the body and `Authorization` value of an
/// [`Io::PostForm`]: they carry the opaque token being introspected and the
/// gate's client secret (RFC 7662 §2.1).
#[derive(Clone, PartialEq, Eq)]
pub enum Io {
    /// GET `url` (a JSON document) within `limits`; redirects not followed.
    Get {
        /// What to fetch.
        url: Url,
        /// Deadline and size cap.
        limits: FetchLimits,
    },
    /// POST a form (`application/x-www-form-urlencoded`) to `url`.
    PostForm {
        /// Where to post.
        url: Url,
        /// The encoded form.
        body: String,
        /// The `Authorization` value, if any. Never logged.
        authorization: Option<String>,
        /// Deadline and size cap.
        limits: FetchLimits,
    },
    /// Read `key` from the shared store (Workers KV).
    KvGet {
        /// The key.
        key: String,
    },
    /// Write `key` to the shared store with an expiry. The driver answers
    /// once the store did ([`IoAnswer::Done`] or [`IoAnswer::KvFault`]),
    /// within its deadline: a session's owner must be known stored before
    /// the session is handed out.
    KvPut {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Expiry (the driver raises it to Workers KV's 60 s minimum).
        ttl_seconds: u64,
    },
    /// Wait about `ms` milliseconds (a timer in the waiting request's own
    /// context), then resume. Used by requests waiting for another request's
    /// fetch (single flight).
    Sleep {
        /// How long.
        ms: u32,
    },
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Io::Get { url, limits } => f
                .debug_struct("Get")
                .field("url", &url.as_str())
                .field("limits", limits)
                .finish(),
            Io::PostForm {
                url,
                body,
                authorization,
                limits,
            } => f
                .debug_struct("PostForm")
                .field("url", &url.as_str())
                .field("body", &format_args!("<{} bytes redacted>", body.len()))
                .field(
                    "authorization",
                    &authorization.as_ref().map(|_| format_args!("<redacted>")),
                )
                .field("limits", limits)
                .finish(),
            Io::KvGet { key } => f.debug_struct("KvGet").field("key", key).finish(),
            Io::KvPut {
                key,
                value,
                ttl_seconds,
            } => f
                .debug_struct("KvPut")
                .field("key", key)
                .field("value", value)
                .field("ttl_seconds", ttl_seconds)
                .finish(),
            Io::Sleep { ms } => f.debug_struct("Sleep").field("ms", ms).finish(),
        }
    }
}

/// What a driver resumes a machine with, after performing its [`Io`].
#[derive(Debug, Clone)]
pub enum IoAnswer {
    /// The outcome of an [`Io::Get`] or [`Io::PostForm`].
    Fetched(Result<FetchedDocument, FetchError>),
    /// The value read by an [`Io::KvGet`] (`None`: no such key).
    Kv(Option<String>),
    /// An [`Io::KvPut`] was stored (or handed over), or an [`Io::Sleep`] ended.
    Done,
    /// An [`Io::KvGet`] or [`Io::KvPut`] failed: the store threw, did not
    /// answer within the driver's deadline, or refused a write over its
    /// limits. Caches take it as a miss (or a lost write); a read or write
    /// that decides authorization (a session's owner) fails closed.
    KvFault(StoreFault),
}

/// How a Workers KV operation failed, for the log (`store_faults`) and for
/// the machine's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// A read threw.
    ReadFailed,
    /// A read did not answer within the driver's deadline.
    ReadTimedOut,
    /// A write threw.
    WriteFailed,
    /// A write did not answer within the driver's deadline.
    WriteTimedOut,
    /// A write was refused over a store limit (Workers KV answers `429`: more
    /// than one write a second to a key, or the plan's daily writes spent).
    WriteLimited,
}

impl StoreFault {
    /// The name in the request's log line.
    pub fn reason(self) -> &'static str {
        match self {
            StoreFault::ReadFailed => "kv_read_failed",
            StoreFault::ReadTimedOut => "kv_read_timeout",
            StoreFault::WriteFailed => "kv_write_failed",
            StoreFault::WriteTimedOut => "kv_write_timeout",
            StoreFault::WriteLimited => "kv_write_limited",
        }
    }
}

impl IoAnswer {
    /// The fetch outcome; any other answer (a driver bug) counts as a
    /// network failure, so a confused driver fails closed.
    pub fn into_fetched(self) -> Result<FetchedDocument, FetchError> {
        match self {
            IoAnswer::Fetched(result) => result,
            _ => Err(FetchError::Network),
        }
    }

    /// The value read for a cache; any other answer (a store fault
    /// included) counts as a miss, since a cache is an optimisation, never
    /// the source of truth.
    pub fn into_kv(self) -> Option<String> {
        match self {
            IoAnswer::Kv(value) => value,
            _ => None,
        }
    }

    /// The value read for a decision: a fault (or any answer that is not a
    /// read, a driver bug) is an error, never a miss.
    pub fn into_kv_read(self) -> Result<Option<String>, StoreFault> {
        match self {
            IoAnswer::Kv(value) => Ok(value),
            IoAnswer::KvFault(fault) => Err(fault),
            IoAnswer::Fetched(_) | IoAnswer::Done => Err(StoreFault::ReadFailed),
        }
    }

    /// Whether a write a decision depends on was stored.
    pub fn into_kv_write(self) -> Result<(), StoreFault> {
        match self {
            IoAnswer::Done => Ok(()),
            IoAnswer::KvFault(fault) => Err(fault),
            IoAnswer::Fetched(_) | IoAnswer::Kv(_) => Err(StoreFault::WriteFailed),
        }
    }
}

/// What a machine's `step` says.
#[derive(Debug)]
pub enum Poll<T> {
    /// Perform this, then resume the machine once with its [`IoAnswer`]
    /// before stepping again.
    Need(Io),
    /// Finished with this; the machine is spent.
    Ready(T),
}

/// Parses a URL the gate received (a redirect's `Location`, a URL in a
/// metadata document, the request's URL): only ASCII text is a URL on the
/// wire (RFC 3986 §2; IRIs are not accepted), so anything else is refused
/// before it reaches the parser. The IDNA back end is the ASCII-only
/// adapter, which is not meant to see non-ASCII host names.
pub fn parse_url(text: &str) -> Option<Url> {
    plain(text).then(|| Url::parse(text).ok()).flatten()
}

/// Resolves `reference` (a redirect's `Location`) against `base`, under the
/// same rule as [`parse_url`].
pub fn join_url(base: &Url, reference: &str) -> Option<Url> {
    plain(reference)
        .then(|| base.join(reference).ok())
        .flatten()
}

/// ASCII without backslashes (not a URL character, RFC 3986 §2; the WHATWG
/// parser reads it as `/`), and no percent-encoding in the authority (a
/// host spelled `%C3%84…` decodes to non-ASCII just the same).
fn plain(text: &str) -> bool {
    if !text.is_ascii() || text.contains('\\') {
        return false;
    }
    let after_scheme = match text.find("//") {
        Some(at) => &text[at + 2..],
        None => return true,
    };
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    !authority.contains('%')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `flow` fuzz target: a redirect to a non-ASCII host with
    /// upper-case letters reached the ASCII-only IDNA adapter, which asserts
    /// it never sees one.
    #[test]
    fn urls_the_gate_receives_must_be_ascii() {
        let base = Url::parse("https://auth.example.com/jwks").unwrap();
        assert_eq!(join_url(&base, "https://ÄB.example/keys"), None);
        assert_eq!(parse_url("https://ÄB.example/keys"), None);
        assert_eq!(
            join_url(&base, "/keys").map(String::from),
            Some("https://auth.example.com/keys".to_owned())
        );
        assert!(parse_url("https://xn--b-zfa.example/keys").is_some());
        assert_eq!(join_url(&base, "https://%C3%84B.example/keys"), None);
        assert_eq!(join_url(&base, "//%C3%84B.example/keys"), None);
        assert_eq!(join_url(&base, r"\\%C3%84B.example\keys"), None);
        assert!(join_url(&base, "/keys?x=%C3%84").is_some());
    }

    #[test]
    fn a_posted_form_is_debugged_without_its_body_or_credentials() {
        const TOKEN: &str = "opaque-token-7d2e";
        const SECRET: &str = "client-secret-91ab";
        let io = Io::PostForm {
            url: Url::parse("https://as.example/introspect").unwrap(),
            body: format!("token={TOKEN}&token_type_hint=access_token"),
            authorization: Some(format!("Basic {SECRET}")),
            limits: FetchLimits::default(),
        };
        for printed in [format!("{io:?}"), format!("{io:#?}")] {
            assert!(!printed.contains(TOKEN), "{printed}");
            assert!(!printed.contains(SECRET), "{printed}");
            assert!(
                printed.contains("https://as.example/introspect"),
                "{printed}"
            );
            assert!(printed.contains("redacted"), "{printed}");
        }
        // Without credentials nothing is claimed redacted.
        let bare = Io::PostForm {
            url: Url::parse("https://as.example/introspect").unwrap(),
            body: format!("token={TOKEN}"),
            authorization: None,
            limits: FetchLimits::default(),
        };
        let printed = format!("{bare:?}");
        assert!(!printed.contains(TOKEN) && printed.contains("authorization: None"));
        // The other kinds print what they are.
        let get = Io::Get {
            url: Url::parse("https://auth.example.com/jwks").unwrap(),
            limits: FetchLimits::default(),
        };
        assert!(format!("{get:?}").contains("https://auth.example.com/jwks"));
        assert_eq!(format!("{:?}", Io::Sleep { ms: 20 }), "Sleep { ms: 20 }");
    }
}
