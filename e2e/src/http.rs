//! A minimal HTTP/1.1 client for loopback servers (the test registry): one connection per
//! request, whole bodies in memory, no TLS.

use std::io;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A complete HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
}

impl Response {
    /// The value of header `name` if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) UTF-8, for error messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path_and_query` to `host` ("127.0.0.1:PORT") with `headers` and `body`.
pub async fn request(
    host: &str,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> io::Result<Response> {
    let what = format!("{method} http://{host}{path_and_query}");
    let req = build_request(host, method, path_and_query, headers, body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}")))?;
    send(host, req)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// `GET path_and_query` on `host` with no extra headers.
pub async fn get(host: &str, path_and_query: &str) -> io::Result<Response> {
    request(host, Method::GET, path_and_query, &[], Bytes::new()).await
}

/// Reduces a `Location` header (absolute URL or path) to its path and query.
pub fn location_path(location: &str) -> &str {
    let Some((_, rest)) = location.split_once("://") else {
        return location;
    };
    rest.find('/').map_or("/", |i| &rest[i..])
}

fn build_request(
    host: &str,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(HOST, host)
        .header(CONTENT_LENGTH, body.len());
    for (name, value) in headers {
        builder = builder.header(HeaderName::try_from(*name)?, HeaderValue::try_from(*value)?);
    }
    builder.body(Full::new(body))
}

async fn send(host: &str, req: Request<Full<Bytes>>) -> io::Result<Response> {
    let stream = TcpStream::connect(host).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    let driver = tokio::spawn(conn);
    let response = sender.send_request(req).await.map_err(io::Error::other)?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    driver.abort();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_path_strips_scheme_and_authority() {
        assert_eq!(
            location_path("http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=y"),
            "/v2/a/blobs/uploads/x?_state=y"
        );
        assert_eq!(
            location_path("/v2/a/blobs/uploads/x"),
            "/v2/a/blobs/uploads/x"
        );
        assert_eq!(location_path("http://host"), "/");
    }
}
