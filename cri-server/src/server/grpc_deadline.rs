//! Honours the caller's gRPC deadline (`grpc-timeout`) the way gRPC-Go servers (containerd,
//! CRI-O) do: when it passes, the call ends with `DEADLINE_EXCEEDED`. tonic enforces the header
//! too, but answers `CANCELLED` ("Timeout expired"); kubelet and critest expect the former
//! (critest's "public image should timeout if requested"). This layer sits inside tonic's and
//! fires a moment before it, dropping the handler's future exactly as tonic would.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::{Layer, Service};

/// How much earlier than tonic's own timer this layer's fires (both start when the call does).
const AHEAD: Duration = Duration::from_millis(1);

/// Adds deadline enforcement to a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service [`DeadlineLayer`] wraps around the CRI services.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, ReqBody> Service<Request<ReqBody>> for Deadline<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let method = req.uri().path().to_string();
        let response = self.inner.call(req);
        Box::pin(async move {
            let Some(timeout) = timeout else {
                return response.await;
            };
            match tokio::time::timeout(timeout.saturating_sub(AHEAD), response).await {
                Ok(r) => r,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "{method}: the caller's deadline of {timeout:?} passed"
                ))
                .into_http()),
            }
        })
    }
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values_parse_by_unit() {
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("120S"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("999999u"),
            Some(Duration::from_micros(999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    /// A handler slower than the caller's deadline ends DEADLINE_EXCEEDED; one within it is
    /// untouched. (End to end, critest's "should timeout if requested" covers it: a tonic
    /// client enforces deadlines itself, so it cannot show the server's answer.)
    #[tokio::test]
    async fn calls_past_their_deadline_end_deadline_exceeded() {
        let slow = tower::service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, std::convert::Infallible>(Response::new(tonic::body::Body::empty()))
        });
        let mut svc = DeadlineLayer.layer(slow);
        let call = |timeout: &str| {
            Request::builder()
                .uri("/runtime.v1.ImageService/PullImage")
                .header("grpc-timeout", timeout)
                .body(())
                .expect("request")
        };
        let resp = svc.call(call("10m")).await.expect("response");
        assert_eq!(resp.headers()["grpc-status"], "4");
        let resp = svc.call(call("5S")).await.expect("response");
        assert!(resp.headers().get("grpc-status").is_none());
        let plain = Request::builder().body(()).expect("request");
        let resp = svc.call(plain).await.expect("response");
        assert!(resp.headers().get("grpc-status").is_none());
    }
}
