//! Talking to registries through `oci-client`: endpoints (mirrors, then the registry itself),
//! plain-http registries, and credentials from the request or from the config.
//!
//! Manifests are fetched here with a plain GET rather than oci-client's `pull_manifest_raw`,
//! which reads the whole body before berth could check its size: a hostile registry could make
//! berthd buffer gigabytes. This GET refuses a declared length over [`MAX_MANIFEST_BYTES`] and
//! stops reading when the body passes it. oci-client still does the auth handshake (its token
//! goes on the GET) and fetches blobs, which are streamed and checked against their
//! descriptors.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::manifest::{ACCEPTED_MANIFESTS, MAX_MANIFEST_BYTES};
use crate::reference::ImageRef;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// A registry token sent as `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

impl Credential {
    /// Builds a credential from the fields of a CRI `AuthConfig` or a config entry:
    /// a registry token wins, then username/password, then `auth` (base64 `user:password`),
    /// then an identity token (sent as the password, as Docker credential helpers do).
    /// `Ok(None)` when every field is empty.
    pub fn from_fields(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Option<Credential>, String> {
        if !registry_token.is_empty() {
            return Ok(Some(Credential::Bearer(registry_token.into())));
        }
        if !username.is_empty() && !password.is_empty() {
            return Ok(Some(Credential::Basic {
                username: username.into(),
                password: password.into(),
            }));
        }
        if !auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("auth is not base64: {e}"))?;
            let text = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| "auth must encode `username:password`".to_string())?;
            return Ok(Some(Credential::Basic {
                username: u.into(),
                password: p.into(),
            }));
        }
        if !identity_token.is_empty() {
            let username = if username.is_empty() {
                "<token>"
            } else {
                username
            };
            return Ok(Some(Credential::Basic {
                username: username.into(),
                password: identity_token.into(),
            }));
        }
        if !username.is_empty() || !password.is_empty() {
            return Err("username and password must be given together".into());
        }
        Ok(None)
    }

    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credential::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credential::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// Registry settings, from berthd's config.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Hosts reached over plain http.
    pub insecure: Vec<String>,
    /// Mirror endpoints (`http(s)://host[:port]`) per registry host.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Credentials per registry host, used when a pull carries none.
    pub credentials: BTreeMap<String, Credential>,
}

/// One place an image can be fetched from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub mirror: bool,
    reference: Reference,
}

/// Builds sessions for pulls.
pub struct RegistryClient {
    options: RegistryOptions,
    protocol: ClientProtocol,
    http_hosts: Vec<String>,
    anonymous: Client,
    /// For manifest GETs (see the module doc); shares nothing with oci-client's client.
    http: reqwest::Client,
}

impl RegistryClient {
    pub fn new(options: RegistryOptions) -> Result<RegistryClient, ImageError> {
        let mut http_hosts = options.insecure.clone();
        for mirrors in options.mirrors.values() {
            for m in mirrors {
                if let Some(host) = m.strip_prefix("http://") {
                    http_hosts.push(host.trim_end_matches('/').to_string());
                }
            }
        }
        let protocol = ClientProtocol::HttpsExcept(http_hosts.clone());
        let anonymous = new_client(&protocol)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                ImageError::io("build the registry HTTP client", std::io::Error::other(e))
            })?;
        Ok(RegistryClient {
            options,
            protocol,
            http_hosts,
            anonymous,
            http,
        })
    }

    /// Mirrors configured for the image's registry, in order, then the registry itself.
    pub fn endpoints(&self, image: &ImageRef) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if let Some(mirrors) = self.options.mirrors.get(image.registry()) {
            for m in mirrors {
                let host = m
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                let host = host.split('/').next().unwrap_or(host).to_string();
                out.push(Endpoint {
                    reference: image.at_registry(&host),
                    host,
                    mirror: true,
                });
            }
        }
        out.push(Endpoint {
            host: image.registry().to_string(),
            mirror: false,
            reference: image.oci().clone(),
        });
        out
    }

    /// A session on `endpoint`: the request's credential for the registry itself, else the
    /// configured one for that host, else anonymous.
    pub fn session(
        &self,
        endpoint: &Endpoint,
        request: Option<&Credential>,
    ) -> Result<Session, ImageError> {
        let configured = self.options.credentials.get(&endpoint.host);
        let cred = if endpoint.mirror {
            configured
        } else {
            request.or(configured)
        };
        let (client, auth) = match cred {
            // oci-client remembers the first credential per registry, so credentialed pulls get
            // their own client; anonymous ones share one (and its token cache).
            Some(c) => (new_client(&self.protocol)?, c.to_auth()),
            None => (self.anonymous.clone(), RegistryAuth::Anonymous),
        };
        let registry = endpoint.reference.resolve_registry();
        let scheme = if self.http_hosts.iter().any(|h| h == registry) {
            "http"
        } else {
            "https"
        };
        Ok(Session {
            client,
            auth,
            reference: endpoint.reference.clone(),
            host: endpoint.host.clone(),
            http: self.http.clone(),
            scheme,
            authorization: None,
        })
    }
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// An oci-client client. Built with `try_from`: `Client::new` falls back to a default client
/// whose construction panics where TLS cannot be set up (a host without CA certificates).
fn new_client(protocol: &ClientProtocol) -> Result<Client, ImageError> {
    Client::try_from(ClientConfig {
        protocol: protocol.clone(),
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..Default::default()
    })
    .map_err(|e| client_error(&e))
}

fn client_error(e: &dyn std::error::Error) -> ImageError {
    ImageError::io(
        "set up the registry client (TLS needs the system's CA certificates: is ca-certificates installed?)",
        std::io::Error::other(e.to_string()),
    )
}

/// An authenticated conversation with one endpoint about one repository.
#[derive(Clone)]
pub struct Session {
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
    host: String,
    http: reqwest::Client,
    scheme: &'static str,
    /// The `Authorization` header manifest GETs send, set by [`Session::authenticate`].
    authorization: Option<String>,
}

impl Session {
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Performs the registry's auth handshake (a token request when it asks for one) and keeps
    /// what manifest requests must send.
    pub async fn authenticate(&mut self) -> Result<(), ImageError> {
        let token = self
            .client
            .auth(&self.reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.error(e))?;
        self.authorization = match (token, &self.auth) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, RegistryAuth::Bearer(token)) => Some(format!("Bearer {token}")),
            (None, RegistryAuth::Basic(user, password)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            (None, RegistryAuth::Anonymous) => None,
        };
        Ok(())
    }

    /// Fetches the manifest the reference names (by digest if it has one, else by tag).
    pub async fn top_manifest(&self) -> Result<(Bytes, String), ImageError> {
        self.manifest(&self.reference.clone()).await
    }

    /// Fetches a manifest by digest within the same repository.
    pub async fn manifest_by_digest(&self, digest: &str) -> Result<(Bytes, String), ImageError> {
        let r = self.reference.clone_with_digest(digest.into());
        self.manifest(&r).await
    }

    async fn manifest(&self, r: &Reference) -> Result<(Bytes, String), ImageError> {
        let wanted = r.digest().or(r.tag()).unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{wanted}{}",
            self.scheme,
            r.resolve_registry(),
            r.repository(),
            r.namespace()
                .map(|ns| format!("?ns={ns}"))
                .unwrap_or_default()
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, ACCEPTED_MANIFESTS.join(", "));
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.registry_error(format!("GET {url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body = read_limited(response, ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            let message = format!(
                "GET {url}: {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
            return Err(match status.as_u16() {
                401 | 403 => ImageError::Unauthorized {
                    registry: self.host.clone(),
                    reference: r.to_string(),
                    message,
                },
                404 => ImageError::NotFound(format!("{r} (on {}): {message}", self.host)),
                _ => self.registry_error(message),
            });
        }
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_limited(response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| self.registry_error(format!("manifest {wanted}: {e}")))?;
        let digest = Digest::of(&bytes).to_string();
        // The content decides: a digest the reference names, or the registry claims, must match.
        for claimed in [r.digest(), header_digest.as_deref()].into_iter().flatten() {
            if claimed.starts_with("sha256:") && claimed != digest {
                return Err(self.registry_error(format!(
                    "manifest {wanted} has digest {digest}, not {claimed}"
                )));
            }
        }
        Ok((bytes, digest))
    }

    /// Streams a blob; the caller verifies size and digest.
    pub async fn blob_stream(
        &self,
        digest: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, ImageError> {
        let sized = self
            .client
            .pull_blob_stream(&self.reference, digest)
            .await
            .map_err(|e| self.error(e))?;
        Ok(sized.stream)
    }

    fn registry_error(&self, message: String) -> ImageError {
        ImageError::Registry {
            reference: self.reference.to_string(),
            message,
        }
    }

    fn error(&self, e: OciDistributionError) -> ImageError {
        let reference = self.reference.to_string();
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => ImageError::Unauthorized {
                registry: self.host.clone(),
                reference,
                message: e.to_string(),
            },
            OciDistributionError::ImageManifestNotFoundError(_) => {
                ImageError::NotFound(format!("{reference} (on {})", self.host))
            }
            OciDistributionError::RegistryError { ref envelope, .. }
                if envelope.errors.iter().any(|x| {
                    matches!(
                        x.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                    )
                }) =>
            {
                ImageError::NotFound(format!("{reference} (on {}): {e}", self.host))
            }
            OciDistributionError::RegistryError { ref envelope, .. }
                if envelope.errors.iter().any(|x| {
                    matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                ImageError::Unauthorized {
                    registry: self.host.clone(),
                    reference,
                    message: e.to_string(),
                }
            }
            other => ImageError::Registry {
                reference,
                message: format!("{} ({})", other, self.host),
            },
        }
    }
}

/// Bytes of a refused request's body kept for its error message.
const ERROR_BODY_BYTES: usize = 1024;

/// Reads a response body, refusing one that declares or delivers more than `limit` bytes
/// (without reading the rest).
async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    use futures_util::StreamExt as _;
    if let Some(len) = response.content_length()
        && len > limit as u64
    {
        return Err(format!("{len} bytes exceed the {limit} byte limit"));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("read: {e}"))?;
        if body.len() + chunk.len() > limit {
            return Err(format!("more than the {limit} byte limit"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_precedence_and_auth_decoding() {
        let c = Credential::from_fields("", "", "", "", "tok").expect("ok");
        assert_eq!(c, Some(Credential::Bearer("tok".into())));
        let c = Credential::from_fields("u", "p", "", "", "").expect("ok");
        assert_eq!(
            c,
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        let auth = base64::engine::general_purpose::STANDARD.encode("me:s3:cret");
        let c = Credential::from_fields("", "", &auth, "", "").expect("ok");
        assert_eq!(
            c,
            Some(Credential::Basic {
                username: "me".into(),
                password: "s3:cret".into()
            })
        );
        assert!(Credential::from_fields("", "", "!!", "", "").is_err());
        assert!(Credential::from_fields("u", "", "", "", "").is_err());
        assert_eq!(
            Credential::from_fields("", "", "", "", "").expect("none"),
            None
        );
        let c = Credential::from_fields("", "", "", "idt", "").expect("ok");
        assert!(matches!(c, Some(Credential::Basic { ref password, .. }) if password == "idt"));
    }

    #[test]
    fn credentials_never_print() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn mirrors_come_before_the_registry() {
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            "docker.io".to_string(),
            vec![
                "http://127.0.0.1:5001/".to_string(),
                "https://m.example".to_string(),
            ],
        );
        let client = RegistryClient::new(RegistryOptions {
            mirrors,
            ..Default::default()
        })
        .expect("client");
        let eps = client.endpoints(&ImageRef::parse("busybox:1").expect("ref"));
        let hosts: Vec<_> = eps.iter().map(|e| (e.host.as_str(), e.mirror)).collect();
        assert_eq!(
            hosts,
            vec![
                ("127.0.0.1:5001", true),
                ("m.example", true),
                ("docker.io", false)
            ]
        );
        assert_eq!(
            eps[0].reference.to_string(),
            "127.0.0.1:5001/library/busybox:1"
        );
    }
}
