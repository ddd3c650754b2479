//! Content digests (`sha256:<hex>`) and chain IDs.

use std::fmt;

use aws_lc_rs::digest::{Context, SHA256};

/// A validated `sha256:` content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`; other algorithms are rejected by name.
    pub fn parse(s: &str) -> Result<Digest, String> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(format!("`{s}` is not a digest (expected sha256:<hex>)"));
        };
        if algo != "sha256" {
            return Err(format!("digest `{s}` uses {algo}; berth supports sha256"));
        }
        Digest::from_hex(hex).ok_or_else(|| format!("digest `{s}` is not 64 lowercase hex digits"))
    }

    /// A digest from its 64 hex digits, if well formed.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Digest { hex: hex.into() })
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(aws_lc_rs::digest::digest(&SHA256, bytes)),
        }
    }

    /// The hex part, used as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Chain IDs of a layer stack from its diff IDs, per the OCI image spec:
/// `chain[0] = diff[0]`, `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// An incremental sha256 that also counts bytes. Uses aws-lc's assembly SHA-256 (already
/// linked for TLS), about twice as fast as the portable `sha2` crate on layer-sized input.
#[derive(Clone)]
pub struct Hasher {
    sha: Context,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            sha: Context::new(&SHA256),
            len: 0,
        }
    }
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.sha.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha256_and_rejects_others() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).expect("parse"), d);
        assert!(Digest::parse("sha512:abc").unwrap_err().contains("sha512"));
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::parse("nocolon").is_err());
    }

    #[test]
    fn chain_ids_follow_the_oci_formula() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn hasher_matches_one_shot_digest() {
        let mut h = Hasher::default();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }
}
