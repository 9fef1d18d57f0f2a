//! Runtime-backed ports: outbound fetch with a deadline and a size cap, and
//! Workers KV.

use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use url::Url;
use worker::{Delay, Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

use crate::keys::{FetchError, FetchLimits, FetchedDocument, HttpClient, KvStore};

/// `fetch()` for JWKS and metadata documents.
pub struct EdgeHttp;

impl HttpClient for EdgeHttp {
    async fn get(&self, url: &Url, limits: FetchLimits) -> Result<FetchedDocument, FetchError> {
        let read = Box::pin(fetch_document(url, limits.max_bytes));
        let deadline = Box::pin(Delay::from(Duration::from_millis(u64::from(
            limits.timeout_ms,
        ))));
        match select(read, deadline).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => Err(FetchError::Timeout),
        }
    }

    async fn post_form(
        &self,
        url: &Url,
        body: &str,
        authorization: Option<&str>,
        limits: FetchLimits,
    ) -> Result<FetchedDocument, FetchError> {
        let form = Form {
            body,
            authorization,
        };
        let read = Box::pin(send_and_read(url, Some(form), limits.max_bytes));
        let deadline = Box::pin(Delay::from(Duration::from_millis(u64::from(
            limits.timeout_ms,
        ))));
        match select(read, deadline).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => Err(FetchError::Timeout),
        }
    }

    /// A timer in this request's own context: waking it from the fetching
    /// request's context could run this request's I/O on behalf of another.
    async fn pause(&self, ms: u32) {
        Delay::from(Duration::from_millis(u64::from(ms))).await;
    }
}

/// A form POST: body and optional `Authorization` value.
struct Form<'a> {
    body: &'a str,
    authorization: Option<&'a str>,
}

async fn fetch_document(url: &Url, max_bytes: usize) -> Result<FetchedDocument, FetchError> {
    send_and_read(url, None, max_bytes).await
}

async fn send_and_read(
    url: &Url,
    form: Option<Form<'_>>,
    max_bytes: usize,
) -> Result<FetchedDocument, FetchError> {
    let headers = Headers::new();
    headers
        .set("accept", "application/json")
        .map_err(|_| FetchError::Network)?;
    let mut init = RequestInit::new();
    // A redirect could lead anywhere; the configured or discovered URL is the only one trusted.
    init.with_headers(headers.clone())
        .with_redirect(RequestRedirect::Manual);
    match form {
        None => {
            init.with_method(Method::Get);
        }
        Some(form) => {
            headers
                .set("content-type", "application/x-www-form-urlencoded")
                .map_err(|_| FetchError::Network)?;
            if let Some(authorization) = form.authorization {
                headers
                    .set("authorization", authorization)
                    .map_err(|_| FetchError::Network)?;
            }
            init.with_method(Method::Post)
                .with_headers(headers)
                .with_body(Some(form.body.into()));
        }
    }
    let request = Request::new_with_init(url.as_str(), &init).map_err(|_| FetchError::Network)?;
    let mut response = Fetch::Request(request)
        .send()
        .await
        .map_err(|_| FetchError::Network)?;
    let declared = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > max_bytes) {
        return Err(FetchError::TooLarge);
    }
    let status = response.status_code();
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let (cache_control, expires, date, location) = (
        header("cache-control"),
        header("expires"),
        header("date"),
        header("location"),
    );
    let mut body = Vec::new();
    if let Ok(mut stream) = response.stream() {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| FetchError::Network)?;
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
    }
    Ok(FetchedDocument {
        status,
        body,
        cache_control,
        expires,
        date,
        location,
    })
}

/// The `JWKS_CACHE` namespace.
pub struct EdgeKv(pub worker::kv::KvStore);

impl KvStore for EdgeKv {
    async fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).text().await.ok().flatten()
    }

    async fn put(&self, key: &str, value: &str, ttl_seconds: u64) {
        if let Ok(builder) = self.0.put(key, value) {
            let _ = builder.expiration_ttl(ttl_seconds.max(60)).execute().await;
        }
    }
}
