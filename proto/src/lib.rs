//! berth's wire types.
//!
//! - [`cri`]: the Kubernetes CRI v1 types, clients and server traits, generated from the
//!   pinned upstream `cri/api.proto` (k8s.io/cri-api v0.36.3, see `cri/README.md`), so every
//!   berth crate uses one type set.
//! - [`shim`]: the protocol between `berthd` and `berth-shim`: prost messages carried as
//!   length-prefixed frames over a unix socket.
//! - [`nri`]: the Node Resource Interface (containerd/nri v0.12.1) messages, generated from
//!   the unchanged upstream `proto/nri/api.proto`; the `nri` crate carries them over ttrpc.

/// The CRI v1 (`runtime.v1`) types and services.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod cri {
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));

    /// Upstream marks the credentials `debug_redact`: they never appear in logs.
    impl std::fmt::Debug for AuthConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            fn redacted(s: &str) -> &'static str {
                if s.is_empty() { "" } else { "[REDACTED]" }
            }
            f.debug_struct("AuthConfig")
                .field("username", &self.username)
                .field("password", &redacted(&self.password))
                .field("auth", &redacted(&self.auth))
                .field("server_address", &self.server_address)
                .field("identity_token", &redacted(&self.identity_token))
                .field("registry_token", &redacted(&self.registry_token))
                .finish()
        }
    }
}

pub mod cri_serde;
pub mod shim;

/// NRI v0.12.1 messages (package `nri.pkg.api.v1alpha1`).
#[allow(clippy::all, missing_docs)]
pub mod nri {
    include!(concat!(env!("OUT_DIR"), "/nri.pkg.api.v1alpha1.rs"));
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    /// The CRI contract is the upstream file, unchanged: a change to it must be deliberate.
    const CRI_PROTO_SHA256: &str =
        "6d130c2651d335bfc755d25efc63072a1cd1eba3591ead6422dc0a27f20167f3";

    #[test]
    fn cri_proto_is_the_pinned_upstream_file() {
        let text = include_bytes!("../cri/api.proto");
        assert_eq!(hex::encode(sha2::Sha256::digest(text)), CRI_PROTO_SHA256);
        // Where the workplace's pinned copy sits beside the checkout, they must be equal.
        let shared = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/proto/cri-api-v0.36.3/api.proto"
        );
        if let Ok(upstream) = std::fs::read(shared) {
            assert_eq!(
                upstream,
                text.to_vec(),
                "proto/cri/api.proto differs from {shared}"
            );
        }
    }

    #[test]
    fn auth_config_debug_hides_credentials() {
        let a = crate::cri::AuthConfig {
            username: "u".into(),
            password: "hunter2".into(),
            auth: "dTpodW50ZXIy".into(),
            identity_token: "s3cr3t-id".into(),
            ..Default::default()
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("dTpo") && !shown.contains("s3cr3t"));
        assert!(shown.contains("[REDACTED]") && shown.contains("\"u\""));
    }
}
