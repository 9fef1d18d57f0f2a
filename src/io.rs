//! Runtime-backed ports: outbound fetch with a deadline and a size cap, and
//! Workers KV.

use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use url::Url;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use worker::{ByteStream, Delay, Headers};

use portcullis_core::verify::keys::{
    FetchError, FetchLimits, FetchedDocument, HttpClient, KvStore,
};

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
    // A redirect could lead anywhere; the configured or discovered URL is the
    // only one trusted (`send` never follows one).
    let (method, body) = match form {
        None => ("GET", None),
        Some(form) => {
            headers
                .set("content-type", "application/x-www-form-urlencoded")
                .map_err(|_| FetchError::Network)?;
            if let Some(authorization) = form.authorization {
                headers
                    .set("authorization", authorization)
                    .map_err(|_| FetchError::Network)?;
            }
            ("POST", Some(JsValue::from_str(form.body)))
        }
    };
    let response = send(url.as_str(), method, &headers, body.as_ref())
        .await
        .map_err(|_| FetchError::Network)?;
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let declared = header("content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > max_bytes) {
        return Err(FetchError::TooLarge);
    }
    let status = response.status();
    let (cache_control, expires, date, location) = (
        header("cache-control"),
        header("expires"),
        header("date"),
        header("location"),
    );
    let mut body = Vec::new();
    if let Some(stream) = response.body() {
        let mut stream = ByteStream::from(stream);
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

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &web_sys::Request) -> js_sys::Promise;
}

/// `fetch()` through `web_sys`, redirects returned rather than followed
/// (`redirect: "manual"`). worker's `Fetch` would wrap the request and the
/// response in its own types, which read the runtime's `cf` object each time
/// one is made: a measurable cost per request (bench/profile.mjs).
pub async fn send(
    url: &str,
    method: &str,
    headers: &Headers,
    body: Option<&JsValue>,
) -> Result<web_sys::Response, JsValue> {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_headers(&headers.0);
    init.set_redirect(web_sys::RequestRedirect::Manual);
    if let Some(body) = body {
        init.set_body(body);
    }
    let request = web_sys::Request::new_with_str_and_init(url, &init)?;
    let response = JsFuture::from(global_fetch(&request)).await?;
    Ok(response.unchecked_into())
}

/// A response's whole body.
pub async fn read_all(response: &web_sys::Response) -> Result<Vec<u8>, JsValue> {
    let buffer = JsFuture::from(response.array_buffer()?).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
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
