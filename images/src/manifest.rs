//! Manifests, indexes and image configs, OCI and Docker v2 schema 2 alike; platform selection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Media types berth asks registries for, most specific first.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// Largest manifest or index berth reads (the distribution spec's recommended limit).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest image config berth reads.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An os/architecture/variant triple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The platform of this node, as OCI names it.
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.into(),
        os: "linux".into(),
        variant: variant.map(Into::into),
    }
}

/// An image manifest (OCI or Docker v2s2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// OCI manifest annotations (e.g. a checkpoint image's `org.criu.checkpoint.container.name`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An index (OCI image index or Docker manifest list).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A fetched manifest document.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Index),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: String,
    manifests: Option<serde_json::Value>,
}

/// Parses a manifest; `content_type` is the registry's Content-Type, used when the document
/// has no `mediaType`. Schema 1 manifests are rejected with a clear message.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, String> {
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    let media_type = if probe.media_type.is_empty() {
        content_type.unwrap_or_default()
    } else {
        probe.media_type.as_str()
    };
    if probe.schema_version == 1
        || media_type == DOCKER_SCHEMA1
        || media_type == DOCKER_SCHEMA1_SIGNED
    {
        return Err(
            "Docker image manifest schema 1 is not supported (deprecated since 2019); \
                    push the image again with a schema 2 or OCI manifest"
                .into(),
        );
    }
    if probe.schema_version != 2 {
        return Err(format!(
            "unsupported manifest schemaVersion {}",
            probe.schema_version
        ));
    }
    let is_index = match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => probe.manifests.is_some(),
        other => return Err(format!("unsupported manifest media type `{other}`")),
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(Manifest::Index)
            .map_err(|e| format!("bad image index: {e}"))
    } else {
        serde_json::from_slice(bytes)
            .map(Manifest::Image)
            .map_err(|e| format!("bad image manifest: {e}"))
    }
}

/// The index entry for `want`: same os and architecture, and the same variant when both name
/// one (an entry without a variant matches any).
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let candidates = index.manifests.iter().filter(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
    });
    let mut fallback = None;
    for d in candidates {
        let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        match (variant, want.variant.as_deref()) {
            (Some(v), Some(w)) if v == w => return Some(d),
            (None, _) | (_, None) => fallback = fallback.or(Some(d)),
            _ => {}
        }
    }
    fallback
}

/// The parts of an image config berth uses (OCI and Docker share the layout).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

/// Defaults for containers run from the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// The layer diff IDs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, Option<&str>)]) -> Index {
        Index {
            annotations: BTreeMap::new(),
            manifests: entries
                .iter()
                .enumerate()
                .map(|(i, (os, arch, variant))| Descriptor {
                    media_type: OCI_MANIFEST.into(),
                    digest: format!("sha256:{i}"),
                    size: 1,
                    platform: Some(Platform {
                        os: (*os).into(),
                        architecture: (*arch).into(),
                        variant: variant.map(Into::into),
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn schema1_is_rejected_clearly() {
        let err = parse(br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#, None).expect_err("s1");
        assert!(err.contains("schema 1 is not supported"), "{err}");
        let err = parse(br#"{"schemaVersion":2}"#, Some(DOCKER_SCHEMA1_SIGNED)).expect_err("s1");
        assert!(err.contains("schema 1"), "{err}");
    }

    #[test]
    fn index_and_manifest_are_told_apart_with_or_without_media_type() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse(idx, None), Ok(Manifest::Index(_))));
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"x","digest":"sha256:a","size":1},"layers":[]}"#;
        assert!(matches!(parse(m, None), Ok(Manifest::Image(_))));
        let err = parse(br#"{"schemaVersion":2,"mediaType":"text/html"}"#, None).expect_err("html");
        assert!(err.contains("text/html"), "{err}");
    }

    #[test]
    fn platform_selection_skips_decoys_and_matches_variants() {
        let i = index(&[("linux", "arm64", Some("v8")), ("linux", "amd64", None)]);
        let amd = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(select_platform(&i, &amd).expect("amd64").digest, "sha256:1");
        let arm7 = Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: Some("v7".into()),
        };
        let i = index(&[("linux", "arm", Some("v6")), ("linux", "arm", Some("v7"))]);
        assert_eq!(select_platform(&i, &arm7).expect("v7").digest, "sha256:1");
        let i = index(&[("windows", "amd64", None)]);
        assert!(select_platform(&i, &amd).is_none());
    }
}
