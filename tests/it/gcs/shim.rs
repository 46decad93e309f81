//! Test scaffolding, not product code: a translating HTTP shim between `object_store`'s GCS
//! client and the stock fake-gcs-server. It stands in for the patched fake-gcs-server image
//! that `object_store`'s own CI runs, which is not packaged anywhere this project can install.
//!
//! `object_store` speaks GCS's XML API. The stock server (started with `-public-host` set to its
//! own address, so that requests to it are routed as XML API requests) answers the XML forms of
//! GET, HEAD, DELETE and `?list-type=2` listing itself, but not the plain upload
//! `PUT /{bucket}/{object}` (fake-gcs-server issue #331: it answers `400 invalid uploadType`).
//! The shim forwards every request unchanged, except that upload, which it sends as the JSON
//! API's media upload (`POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={object}`)
//! and answers the way the XML API does: 200 with the new object's `ETag` (which
//! `object_store` requires on a put) and `x-goog-generation`.
//!
//! Multipart uploads (files over 8 MiB) are not translated: the test's files are far smaller.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::Response;

/// A running shim on 127.0.0.1; the server task ends when this is dropped.
pub struct Shim {
    /// The shim's base URL (`http://127.0.0.1:PORT`), to use as `object_store`'s GCS base URL.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Upstream {
    base: String,
    http: reqwest::Client,
}

/// Starts a shim on 127.0.0.1:0 in front of the fake server at `upstream` (`http://host:port`).
pub async fn start(upstream: &str) -> Shim {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let state = Upstream {
        base: upstream.trim_end_matches('/').to_string(),
        http,
    };
    let app = axum::Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Shim { url, task }
}

async fn handle(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let xml_upload = match (parts.method == Method::PUT, parts.uri.query()) {
        (true, None) => parts.uri.path()[1..]
            .split_once('/')
            .filter(|(bucket, object)| !bucket.is_empty() && !object.is_empty()),
        _ => None,
    };
    let result = match xml_upload {
        Some((bucket, object)) => upload(&up, bucket, &percent_decode(object), &parts.headers, body).await,
        None => {
            forward(
                &up,
                parts.method,
                parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                &parts.headers,
                body,
            )
            .await
        }
    };
    result.unwrap_or_else(|e| {
        let mut r = Response::new(Body::from(format!("shim: upstream request failed: {e}")));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    })
}

/// The XML upload as a JSON API media upload, answered with the XML API's headers.
async fn upload(up: &Upstream, bucket: &str, object: &str, headers: &HeaderMap, body: Bytes) -> reqwest::Result<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let resp = up
        .http
        .post(format!("{}/upload/storage/v1/b/{bucket}/o", up.base))
        .query(&[("uploadType", "media"), ("name", object)])
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    let mut r = Response::new(Body::empty());
    if !status.is_success() {
        *r.status_mut() = status;
        *r.body_mut() = Body::from(bytes);
        return Ok(r);
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let field = |k: &str| json.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let etag = Some(field("etag")).filter(|e| !e.is_empty()).unwrap_or_else(|| field("md5Hash"));
    if let Ok(v) = format!("\"{etag}\"").parse() {
        r.headers_mut().insert(header::ETAG, v);
    }
    if let Ok(v) = field("generation").parse() {
        r.headers_mut().insert(HeaderName::from_static("x-goog-generation"), v);
    }
    Ok(r)
}

/// Any other request, passed through as it came (method, path, query, headers, body).
async fn forward(up: &Upstream, method: Method, path: &str, headers: &HeaderMap, body: Bytes) -> reqwest::Result<Response> {
    let mut req = up.http.request(method, format!("{}{path}", up.base)).body(body);
    for (k, v) in headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection" | "transfer-encoding") {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await?;
    let mut r = Response::new(Body::empty());
    *r.status_mut() = resp.status();
    for (k, v) in resp.headers() {
        if !matches!(k.as_str(), "connection" | "transfer-encoding") {
            r.headers_mut().append(k, v.clone());
        }
    }
    *r.body_mut() = Body::from(resp.bytes().await?);
    Ok(r)
}

/// Decodes `%XX` escapes (`object_store` escapes every non-alphanumeric byte of the name).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
