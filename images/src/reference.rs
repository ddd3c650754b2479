//! Image references as kubelet sends them, normalized like Docker: `busybox` is
//! `docker.io/library/busybox:latest`.

use oci_client::Reference;

use crate::error::ImageError;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses any form kubelet sends: `busybox`, `library/busybox:1.36`,
    /// `registry:5000/a/b:tag`, `name@sha256:…`, `name:tag@sha256:…`.
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: s.into(),
            reason,
        };
        if s.trim() != s || s.is_empty() {
            return Err(invalid("empty or surrounded by whitespace".into()));
        }
        let inner = Reference::try_from(s).map_err(|e| invalid(e.to_string()))?;
        // oci-client accepts `Name/x` when `Name` is not a host, then normalizes it to
        // `docker.io/Name/x`, which neither it nor a registry accepts.
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase".into()));
        }
        Ok(ImageRef { inner })
    }

    /// Registry host as named (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// Repository path within the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// `registry/repository:tag`, when the reference has a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for a given manifest digest.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The oci-client reference pointing at `registry` instead (for mirrors).
    pub fn at_registry(&self, registry: &str) -> Reference {
        match (self.tag(), self.digest()) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(
                registry.into(),
                self.repository().into(),
                t.into(),
                d.into(),
            ),
            (None, Some(d)) => {
                Reference::with_digest(registry.into(), self.repository().into(), d.into())
            }
            (t, None) => Reference::with_tag(
                registry.into(),
                self.repository().into(),
                t.unwrap_or("latest").into(),
            ),
        }
    }

    /// The oci-client reference for the registry itself.
    pub fn oci(&self) -> &Reference {
        &self.inner
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn short_names_normalize_to_docker_hub_library_latest() {
        let r = ImageRef::parse("busybox").expect("parse");
        assert_eq!(
            r.repo_tag().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        let r = ImageRef::parse("library/busybox:1.36").expect("parse");
        assert_eq!(
            r.repo_tag().as_deref(),
            Some("docker.io/library/busybox:1.36")
        );
        let r = ImageRef::parse("someone/app").expect("parse");
        assert_eq!(r.name(), "docker.io/someone/app");
    }

    #[test]
    fn registry_with_port_and_nested_path() {
        let r = ImageRef::parse("registry:5000/a/b:tag").expect("parse");
        assert_eq!(r.registry(), "registry:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("tag"));
    }

    #[test]
    fn digest_forms() {
        let r = ImageRef::parse(&format!("busybox@{D}")).expect("parse");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.repo_digest(D), format!("docker.io/library/busybox@{D}"));
        let r = ImageRef::parse(&format!("busybox:1.36@{D}")).expect("parse");
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(r.digest(), Some(D));
    }

    #[test]
    fn bad_references_are_rejected_with_a_reason() {
        for bad in [
            "",
            " busybox",
            "Busybox",
            "busybox@sha256:abc",
            "a//b",
            "busybox:",
        ] {
            let err = ImageRef::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("image reference"), "{bad}: {err}");
        }
    }

    #[test]
    fn mirror_reference_keeps_repository_and_tag() {
        let r = ImageRef::parse("busybox:1.36").expect("parse");
        let m = r.at_registry("127.0.0.1:5000");
        assert_eq!(m.to_string(), "127.0.0.1:5000/library/busybox:1.36");
    }
}
