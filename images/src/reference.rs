//! Image references as kubelet sends them, normalized like Docker: `busybox` is
//! `docker.io/library/busybox:latest`.
//!
//! Parsed by hand after distribution/reference's grammar rather than with oci-spec's
//! `Reference::try_from`: that one compiles a regex whose Unicode `\w{0,127}` leaves berthd
//! holding ~5 MiB of automaton for good after the first parse (a quarter of its idle memory),
//! and its Unicode `\w` takes tags that Docker's ASCII `\w` refuses.

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
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(check_digest(digest).map_err(invalid)?)),
            None => (s, None),
        };
        // A tag follows the last `:` after the last `/` (an earlier `:` is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (name, tag) = rest.split_at(last_slash + i);
                (name, Some(check_tag(&tag[1..]).map_err(invalid)?))
            }
            None => (rest, None),
        };
        let (registry, repository) = split_domain(name).map_err(invalid)?;
        if repository.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "repository name longer than {MAX_NAME_LEN} bytes"
            )));
        }
        let inner = match (tag, digest) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d),
            (None, Some(d)) => Reference::with_digest(registry, repository, d),
            (t, None) => {
                Reference::with_tag(registry, repository, t.unwrap_or_else(|| "latest".into()))
            }
        };
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

/// Longest repository name a registry accepts (distribution's `NameTotalLengthMax`).
const MAX_NAME_LEN: usize = 255;

/// `algorithm:hex`: algorithm components `[A-Za-z][A-Za-z0-9]*` joined by `+ . - _`, at least
/// 32 hex digits, and the length its algorithm gives (sha256, sha384, sha512; others refused).
fn check_digest(d: &str) -> Result<String, String> {
    let (algorithm, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("digest `{d}` is not algorithm:hex"))?;
    let algorithm_ok = algorithm.split(['+', '.', '-', '_']).all(|c| {
        c.starts_with(|ch: char| ch.is_ascii_alphabetic())
            && c.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "digest `{d}` is not algorithm:hex (32 or more hex digits)"
        ));
    }
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(format!("digest algorithm {other} is not supported")),
    };
    if hex.len() != want {
        return Err(format!(
            "{algorithm} digest `{d}` must have {want} hex digits"
        ));
    }
    Ok(d.to_string())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (Docker's ASCII `\w`).
fn check_tag(t: &str) -> Result<String, String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = t.len() <= 128
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if !ok {
        return Err(format!(
            "tag `{t}` must be 1 to 128 of A-Z a-z 0-9 _ . - and not start with . or -"
        ));
    }
    Ok(t.to_string())
}

/// Splits `name` into registry and repository as Docker does: the first component is a
/// registry when it has a `.` or `:` or is `localhost`; otherwise the registry is Docker Hub,
/// whose one-component names live under `library/`.
fn split_domain(name: &str) -> Result<(String, String), String> {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            check_host(first)?;
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    check_path(path)?;
    let registry = if registry == "index.docker.io" {
        "docker.io"
    } else {
        registry
    };
    let path = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    Ok((registry.to_string(), path))
}

/// `host[:port]`, the host being DNS labels (`[A-Za-z0-9]` with inner `-`) joined by dots.
fn check_host(h: &str) -> Result<(), String> {
    let (host, port) = match h.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !host.split('.').all(label_ok) || !port_ok {
        return Err(format!("registry `{h}` is not host[:port]"));
    }
    Ok(())
}

/// Path components of `[a-z0-9]` runs joined by `.`, `_`, `__` or dashes, separated by `/`.
fn check_path(path: &str) -> Result<(), String> {
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    if !path.split('/').all(path_component_ok) {
        return Err(format!(
            "repository `{path}` must be components of a-z 0-9 joined by . _ __ or -, separated by /"
        ));
    }
    Ok(())
}

fn path_component_ok(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.first().is_none_or(|&x| !alnum(x)) || b.last().is_none_or(|&x| !alnum(x)) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
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
    fn the_grammar_matches_docker() {
        for good in [
            "localhost/a",
            "localhost:5000/a/b_c__d-e--f.g:v1.0-rc_1",
            "index.docker.io/busybox",
            "a.b-c.d:1/x",
            "x:_tag",
            "x:A_b.c-D",
        ] {
            ImageRef::parse(good).expect(good);
        }
        assert_eq!(
            ImageRef::parse("index.docker.io/busybox")
                .expect("parse")
                .name(),
            "docker.io/library/busybox"
        );
        let long_tag = format!("x:{}", "t".repeat(129));
        let long_name = format!("r.io/{}", "a".repeat(256));
        for bad in [
            "a/b.",
            "a/-b",
            "a/b___c",
            "a/b._c",
            "-h.io/a",
            "h.io:/a",
            "h.io:x1/a",
            "x:.tag",
            "x:t\u{e9}",
            long_tag.as_str(),
            long_name.as_str(),
            "x@md5:0123456789abcdef0123456789abcdef",
            "x@sha256:0123456789abcdef0123456789abcdef",
            "a@b@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
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
