//! Streaming URLs handed out by `Exec`, `Attach` and `PortForward`: a random, single-use
//! token per request, valid for `streaming.token_ttl_seconds`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use proto::cri::{AttachRequest, ExecRequest, PortForwardRequest};
use rand::Rng;
use tonic::Status;

/// Tokens waiting to be used; more answer `ResourceExhausted` (kubelet asks for one URL per
/// `kubectl exec`, so this is far above any real load).
const MAX_PENDING: usize = 4096;

/// kubelet's rules for the streams of an exec or attach: at least one, and a terminal merges
/// stderr into stdout.
pub fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be set: a terminal merges stderr into stdout",
        ));
    }
    Ok(())
}

/// What a token was minted for.
#[derive(Debug, Clone)]
pub enum StreamRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl StreamRequest {
    /// The URL path segment: `exec`, `attach` or `portforward`.
    fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec(_) => "exec",
            StreamRequest::Attach(_) => "attach",
            StreamRequest::PortForward(_) => "portforward",
        }
    }
}

/// The pending tokens and the server's base URL.
pub struct StreamTokens {
    ttl: Duration,
    base_url: OnceLock<String>,
    pending: Mutex<HashMap<String, (Instant, StreamRequest)>>,
}

impl StreamTokens {
    pub fn new(ttl: Duration) -> StreamTokens {
        StreamTokens {
            ttl,
            base_url: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Set once the streaming server listens, e.g. `http://127.0.0.1:41234`.
    pub fn set_base_url(&self, url: String) {
        let _ = self.base_url.set(url);
    }

    /// A fresh URL for `req`.
    pub fn mint(&self, req: StreamRequest) -> Result<String, Status> {
        let base = self
            .base_url
            .get()
            .ok_or_else(|| Status::unavailable("the streaming server is not running"))?;
        let token = random_token();
        let kind = req.kind();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        pending.retain(|_, (expires, _)| *expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(Status::resource_exhausted(format!(
                "{MAX_PENDING} streaming URLs are waiting to be used; try again later"
            )));
        }
        pending.insert(token.clone(), (now + self.ttl, req));
        Ok(format!("{base}/{kind}/{token}"))
    }

    /// Takes the request behind `token` if it is of `kind` and still valid; a token works
    /// once.
    pub fn redeem(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (expires, req) = pending.remove(token)?;
        if expires <= Instant::now() || req.kind() != kind {
            return None;
        }
        Some(req)
    }
}

/// 16 random bytes, URL-safe (base64url without padding): unguessable.
fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..22)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> StreamRequest {
        StreamRequest::Exec(ExecRequest::default())
    }

    #[test]
    fn tokens_are_single_use_and_bound_to_their_kind() {
        let t = StreamTokens::new(Duration::from_secs(60));
        assert!(t.mint(exec()).is_err(), "no URL before the server listens");
        t.set_base_url("http://127.0.0.1:1".into());
        let url = t.mint(exec()).expect("mint");
        let token = url.rsplit('/').next().expect("token").to_string();
        assert!(url.starts_with("http://127.0.0.1:1/exec/"), "{url}");
        assert_eq!(token.len(), 22);
        assert!(t.redeem("attach", &token).is_none(), "wrong kind");
        let url = t.mint(exec()).expect("mint");
        let token = url.rsplit('/').next().expect("token").to_string();
        assert!(t.redeem("exec", &token).is_some());
        assert!(t.redeem("exec", &token).is_none(), "reused");
        assert!(t.redeem("exec", "nope").is_none());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = StreamTokens::new(Duration::ZERO);
        t.set_base_url("http://x".into());
        let url = t.mint(exec()).expect("mint");
        let token = url.rsplit('/').next().expect("token");
        assert!(t.redeem("exec", token).is_none());
    }
}
