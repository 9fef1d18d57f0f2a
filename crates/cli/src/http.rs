//! Outbound HTTP for the command line (RFC 9110 exchanges over ureq and
//! rustls), shaped like the gate's own fetches: every exchange has a
//! deadline and a body cap, and redirects are returned, never followed, so
//! the caller decides about them as the gate's machines do.

use std::time::Duration;

use ureq::http::Request;

/// One answer, body within the cap.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Header fields, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON, when it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// No connection, DNS, TLS or protocol failure; the detail says which.
    Network(String),
    /// No complete answer within the deadline.
    Timeout,
    /// The body passed the cap.
    TooLarge,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Network(detail) => write!(f, "network error: {detail}"),
            HttpError::Timeout => f.write_str("no answer within the deadline"),
            HttpError::TooLarge => f.write_str("the body passed the size cap"),
        }
    }
}

/// Deadline and body cap of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole exchange, body included.
    pub timeout: Duration,
    /// Largest body read.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            max_bytes: 1024 * 1024,
        }
    }
}

/// Sends one request: `method` to `url` with `headers` and an optional body.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    limits: Limits,
) -> Result<Reply, HttpError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(limits.timeout))
        .timeout_connect(Some(limits.timeout.min(Duration::from_secs(5))))
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some(bytes) => builder
            .body(bytes.to_vec())
            .map_err(|error| HttpError::Network(error.to_string()))
            .and_then(|request| agent.run(request).map_err(classify)),
        None => builder
            .body(())
            .map_err(|error| HttpError::Network(error.to_string()))
            .and_then(|request| agent.run(request).map_err(classify)),
    };
    let mut response = result?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(limits.max_bytes as u64)
        .read_to_vec()
        .map_err(classify)?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// GET `url` with `headers`.
pub fn get(url: &str, headers: &[(&str, &str)], limits: Limits) -> Result<Reply, HttpError> {
    send("GET", url, headers, None, limits)
}

fn classify(error: ureq::Error) -> HttpError {
    match error {
        ureq::Error::Timeout(_) => HttpError::Timeout,
        ureq::Error::BodyExceedsLimit(_) => HttpError::TooLarge,
        other => HttpError::Network(other.to_string()),
    }
}
