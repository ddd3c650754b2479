//! Deterministic OCI test images and the registry v2 push protocol.
//!
//! Layers are tars with fixed mtimes (0), uid/gid 0 and sorted entries, so digests are the
//! same on every run. [`push_test_images`] builds the standard `berth-test/busybox` images
//! from the host's dynamic `/bin/busybox` and the static programs in `e2e/testprogs/`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::http;
use crate::registry::Registry;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker v2 schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Repository the standard test images are pushed to.
pub const TEST_REPOSITORY: &str = "berth-test/busybox";
/// Tags pushed by [`push_test_images`].
pub const TEST_TAGS: [&str; 5] = ["oci", "docker", "multi-oci", "multi-docker", "latest"];
/// `PATH` in the test images' config.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const EPOCH: &str = "1970-01-01T00:00:00Z";
const BUSYBOX: &str = "/bin/busybox";
/// Applets linked in `/bin`, kept only if the host's busybox has them.
const APPLETS: &str = "\
    sh ash ls cat echo sleep true false env id hostname ps mount umount touch mkdir \
    rmdir rm cp mv ln wc head tail grep sed awk date kill uname whoami test [ stat find \
    nc wget chmod chown pwd readlink printf tr cut sort uniq tee xargs dd df du free \
    nproc timeout sync basename dirname expr seq yes vi less mkfifo mknod ip ifconfig \
    ping netstat nslookup nsenter unshare setsid top watch which groups md5sum \
    sha256sum tar gzip gunzip zcat hexdump od sysctl usleep httpd stty";

// ---------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar; the blob digest equals the diff_id.
    None,
    /// gzip (the common case).
    Gzip,
    /// zstd (OCI only).
    Zstd,
}

impl Compression {
    fn compress(self, tar: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(tar.to_vec()),
            Compression::Gzip => {
                let out = Vec::with_capacity(tar.len() / 2);
                let mut encoder =
                    flate2::write::GzEncoder::new(out, flate2::Compression::default());
                encoder.write_all(tar)?;
                encoder.finish()
            }
            Compression::Zstd => zstd::encode_all(tar, 3),
        }
    }

    /// Decompresses a blob made with this compression back into the tar.
    pub fn decompress(self, blob: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(blob.to_vec()),
            Compression::Gzip => {
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(blob).read_to_end(&mut tar)?;
                Ok(tar)
            }
            Compression::Zstd => zstd::decode_all(blob),
        }
    }
}

/// Which manifest family (and so which media types) an image is pushed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestFormat {
    /// OCI image manifest / index.
    Oci,
    /// Docker v2 schema 2 manifest / manifest list.
    Docker,
}

impl ManifestFormat {
    /// Media type of a single-platform manifest.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_MANIFEST,
            ManifestFormat::Docker => DOCKER_MANIFEST,
        }
    }

    /// Media type of a multi-platform index / manifest list.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_INDEX,
            ManifestFormat::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    /// Media type of the image config blob.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_CONFIG,
            ManifestFormat::Docker => DOCKER_CONFIG,
        }
    }

    /// Media type of a layer blob with `compression`.
    pub fn layer_media_type(self, compression: Compression) -> &'static str {
        match (self, compression) {
            (ManifestFormat::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (ManifestFormat::Oci, Compression::Gzip) => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            (ManifestFormat::Docker, Compression::None) => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            (ManifestFormat::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            // Docker has no zstd media type; registries and runtimes use the OCI one.
            (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Clone, Debug)]
enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

#[derive(Clone, Debug)]
struct Entry {
    kind: EntryKind,
    mode: u32,
}

/// Builds a layer tar deterministically: entries sorted by path, mtime 0, uid/gid 0.
///
/// Paths are absolute or relative to the layer root; missing parent directories are added
/// with mode 0755. Later additions at the same path replace earlier ones.
#[derive(Clone, Debug, Default)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.insert(path, EntryKind::Dir, mode)
    }

    /// Adds a regular file with `data` and `mode` (e.g. 0o755).
    pub fn file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.insert(path, EntryKind::File(data.into()), mode)
    }

    /// Adds a symlink at `path` pointing to `target` (stored verbatim).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.insert(path, EntryKind::Symlink(target.to_string()), 0o777)
    }

    /// Adds a whiteout (`.wh.<name>`) deleting `path` from lower layers.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let path = normalize(path);
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
        let marker = join(parent, &format!(".wh.{name}"));
        self.insert(&marker, EntryKind::File(Vec::new()), 0o644)
    }

    /// Adds an opaque whiteout (`.wh..wh..opq`) hiding lower-layer contents of `dir`.
    pub fn opaque_whiteout(&mut self, dir: &str) -> &mut Self {
        let marker = join(&normalize(dir), ".wh..wh..opq");
        self.insert(&marker, EntryKind::File(Vec::new()), 0o644)
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in self.with_parents() {
            append_entry(&mut builder, path, entry)
                .map_err(|e| io::Error::new(e.kind(), format!("add {path:?} to layer tar: {e}")))?;
        }
        builder.into_inner()
    }

    /// Builds the tar, compresses it and computes digest and diff_id.
    pub fn build(&self, compression: Compression) -> io::Result<Layer> {
        Layer::from_tar(&self.tar()?, compression)
    }

    fn insert(&mut self, path: &str, kind: EntryKind, mode: u32) -> &mut Self {
        let path = normalize(path);
        if !path.is_empty() {
            self.entries.insert(path, Entry { kind, mode });
        }
        self
    }

    /// All entries plus implicit parent directories (`None`), sorted by path.
    fn with_parents(&self) -> BTreeMap<&str, Option<&Entry>> {
        let mut all: BTreeMap<&str, Option<&Entry>> = BTreeMap::new();
        for (path, entry) in &self.entries {
            for (i, _) in path.match_indices('/') {
                let parent = &path[..i];
                if parent
                    .split('/')
                    .any(|c| c == ".." || c == "." || c.is_empty())
                {
                    break;
                }
                all.entry(parent).or_insert(None);
            }
            all.insert(path, Some(entry));
        }
        all
    }
}

fn normalize(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn append_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    entry: Option<&Entry>,
) -> io::Result<()> {
    let implicit_dir = Entry {
        kind: EntryKind::Dir,
        mode: 0o755,
    };
    let entry = entry.unwrap_or(&implicit_dir);
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mode(entry.mode);
    match &entry.kind {
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            append_named(builder, header, &format!("{path}/"), &[][..])
        }
        EntryKind::File(data) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            append_named(builder, header, path, &data[..])
        }
        EntryKind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            if target.len() > 100 || path.len() > 100 {
                return builder.append_link(&mut header, path, target);
            }
            header.set_link_name_literal(target)?;
            append_named(builder, header, path, &[][..])
        }
    }
}

/// Appends with the name stored verbatim when it fits (so tests can build hostile names
/// like `../x`), else through the tar crate's GNU long-name support.
fn append_named(
    builder: &mut tar::Builder<Vec<u8>>,
    mut header: tar::Header,
    path: &str,
    data: &[u8],
) -> io::Result<()> {
    if path.len() > 100 {
        return builder.append_data(&mut header, path, data);
    }
    let name = &mut header.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_cksum();
    builder.append(&header, data)
}

/// A built layer blob with its digests.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The (compressed) blob as pushed.
    pub blob: Bytes,
    /// `sha256:` digest of `blob`.
    pub digest: String,
    /// `sha256:` digest of the uncompressed tar.
    pub diff_id: String,
    /// How `blob` is compressed.
    pub compression: Compression,
}

impl Layer {
    /// A layer whose uncompressed tar is `tar` as it is (e.g. a checkpoint archive, whose files
    /// `buildah add archive.tar /` puts at the layer's root).
    pub fn from_tar(tar: &[u8], compression: Compression) -> io::Result<Layer> {
        let blob = compression.compress(tar)?;
        Ok(Layer {
            digest: sha256_digest(&blob),
            diff_id: sha256_digest(tar),
            blob: Bytes::from(blob),
            compression,
        })
    }

    /// Size of the blob in bytes.
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }

    /// The descriptor facts for this layer in a manifest of `format`.
    pub fn info(&self, format: ManifestFormat) -> LayerInfo {
        LayerInfo {
            digest: self.digest.clone(),
            diff_id: self.diff_id.clone(),
            size: self.size(),
            media_type: format.layer_media_type(self.compression).to_string(),
        }
    }
}

/// A layer as referenced from a pushed manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// Blob digest.
    pub digest: String,
    /// Digest of the uncompressed tar (as in the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Layer media type in the manifest.
    pub media_type: String,
}

// ---------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------

/// An OS/architecture(/variant) as in image configs and index entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// GOARCH style, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// e.g. `v8` for arm64.
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`.
    pub fn linux_amd64() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// `linux/arm64/v8`.
    pub fn linux_arm64_v8() -> Self {
        Self {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        }
    }

    fn to_json(&self) -> Value {
        let mut platform = json!({ "os": self.os, "architecture": self.architecture });
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// A reference to a blob or manifest: media type, digest, size (and platform in an index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:` digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform, for index / manifest-list entries.
    pub platform: Option<Platform>,
}

impl Descriptor {
    fn to_json(&self) -> Value {
        let mut descriptor = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        });
        if let Some(platform) = &self.platform {
            descriptor["platform"] = platform.to_json();
        }
        descriptor
    }
}

/// Assembles an image config and manifest from layers; see [`ImageBuilder::push`].
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    platform: Platform,
    layers: Vec<Layer>,
    env: Vec<String>,
    cmd: Vec<String>,
    entrypoint: Option<Vec<String>>,
    working_dir: String,
    user: String,
    annotations: BTreeMap<String, String>,
}

/// An image manifest pushed by digest, ready to be tagged or listed in an index.
#[derive(Clone, Debug)]
pub struct PushedImage {
    /// Descriptor of the manifest (with the image's platform).
    pub manifest: Descriptor,
    /// The manifest bytes, to re-push under a tag.
    pub manifest_bytes: Bytes,
    /// Digest of the config blob (the image ID).
    pub config_digest: String,
    /// The manifest's layers.
    pub layers: Vec<LayerInfo>,
}

impl ImageBuilder {
    /// An image for `platform` with `PATH` set, `Cmd ["/bin/sh"]`, `WorkingDir "/"`, no layers.
    pub fn new(platform: Platform) -> Self {
        Self {
            platform,
            layers: Vec::new(),
            env: vec![DEFAULT_PATH.to_string()],
            cmd: vec!["/bin/sh".to_string()],
            entrypoint: None,
            working_dir: "/".to_string(),
            user: String::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// Adds a manifest annotation (OCI manifests only carry them; `buildah config
    /// --annotation` sets these).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    /// Appends a layer (applied on top of the previous ones).
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Replaces the config's `Env` (`NAME=value` strings).
    pub fn env(mut self, env: &[&str]) -> Self {
        self.env = env.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Replaces the config's `Cmd`.
    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = cmd.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the config's `Entrypoint`.
    pub fn entrypoint(mut self, entrypoint: &[&str]) -> Self {
        self.entrypoint = Some(entrypoint.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Sets the config's `WorkingDir`.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = dir.to_string();
        self
    }

    /// Sets the config's `User` (e.g. `"1000"`, `"berth"`, `"1000:2000"`).
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    /// The image config JSON (same bytes for OCI and Docker manifests).
    pub fn config_json(&self) -> Vec<u8> {
        let mut config = json!({
            "Env": self.env,
            "Cmd": self.cmd,
            "WorkingDir": self.working_dir,
            "User": self.user,
        });
        if let Some(entrypoint) = &self.entrypoint {
            config["Entrypoint"] = json!(entrypoint);
        }
        let mut image = self.platform.to_json();
        image["created"] = json!(EPOCH);
        image["config"] = config;
        image["rootfs"] = json!({ "type": "layers", "diff_ids": self.diff_ids() });
        image["history"] = json!(self.history());
        json_bytes(&image)
    }

    /// The manifest JSON in `format` referencing `config` (the bytes of [`Self::config_json`]).
    pub fn manifest_json(&self, format: ManifestFormat, config: &[u8]) -> Vec<u8> {
        let config = Descriptor {
            media_type: format.config_media_type().to_string(),
            digest: sha256_digest(config),
            size: config.len() as u64,
            platform: None,
        };
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|layer| layer_descriptor(layer, format).to_json())
            .collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_media_type(),
            "config": config.to_json(),
            "layers": layers,
        });
        if !self.annotations.is_empty() {
            manifest["annotations"] = json!(self.annotations);
        }
        json_bytes(&manifest)
    }

    /// Pushes layers, config and the manifest (by digest) to `repository`.
    pub async fn push(
        &self,
        registry: &Registry,
        repository: &str,
        format: ManifestFormat,
    ) -> io::Result<PushedImage> {
        for layer in &self.layers {
            push_blob(registry, repository, &layer.blob).await?;
        }
        let config = self.config_json();
        let config_digest = push_blob(registry, repository, &config).await?;
        let manifest = self.manifest_json(format, &config);
        let digest = sha256_digest(&manifest);
        let media_type = format.manifest_media_type();
        push_manifest(registry, repository, &digest, media_type, &manifest).await?;
        Ok(PushedImage {
            manifest: Descriptor {
                media_type: media_type.to_string(),
                digest,
                size: manifest.len() as u64,
                platform: Some(self.platform.clone()),
            },
            manifest_bytes: Bytes::from(manifest),
            config_digest,
            layers: self.layers.iter().map(|l| l.info(format)).collect(),
        })
    }

    fn diff_ids(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.diff_id.as_str()).collect()
    }

    fn history(&self) -> Vec<Value> {
        (0..self.layers.len())
            .map(|i| json!({ "created": EPOCH, "created_by": format!("berth-e2e layer {i}") }))
            .collect()
    }
}

fn layer_descriptor(layer: &Layer, format: ManifestFormat) -> Descriptor {
    Descriptor {
        media_type: format.layer_media_type(layer.compression).to_string(),
        digest: layer.digest.clone(),
        size: layer.size(),
        platform: None,
    }
}

/// An OCI index or Docker manifest list (per `format`) over `manifests`.
pub fn index_json(format: ManifestFormat, manifests: &[Descriptor]) -> Vec<u8> {
    let manifests: Vec<Value> = manifests.iter().map(Descriptor::to_json).collect();
    json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": format.index_media_type(),
        "manifests": manifests,
    }))
}

fn json_bytes(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

// ---------------------------------------------------------------------------------------
// Registry v2 push protocol
// ---------------------------------------------------------------------------------------

/// Uploads `data` as a blob unless the registry has it; returns its digest.
pub async fn push_blob(registry: &Registry, repository: &str, data: &[u8]) -> io::Result<String> {
    let host = registry.host();
    let digest = sha256_digest(data);
    let blob_path = format!("/v2/{repository}/blobs/{digest}");
    let head = http::request(&host, Method::HEAD, &blob_path, &[], Bytes::new()).await?;
    if head.status == 200 {
        return Ok(digest);
    }
    let uploads = format!("/v2/{repository}/blobs/uploads/");
    let started = http::request(&host, Method::POST, &uploads, &[], Bytes::new()).await?;
    expect_status(&started, 202, &format!("POST {uploads}"))?;
    let location = started.header("location").ok_or_else(|| {
        io::Error::other(format!("POST {uploads}: 202 without a Location header"))
    })?;
    let upload = http::location_path(location);
    let separator = if upload.contains('?') { '&' } else { '?' };
    let put_path = format!("{upload}{separator}digest={digest}");
    let headers = [("content-type", "application/octet-stream")];
    let body = Bytes::copy_from_slice(data);
    let put = http::request(&host, Method::PUT, &put_path, &headers, body).await?;
    expect_status(&put, 201, &format!("PUT blob {digest} to {repository}"))?;
    Ok(digest)
}

/// Puts a manifest under `reference` (tag or digest) with `media_type`; returns its digest.
pub async fn push_manifest(
    registry: &Registry,
    repository: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
) -> io::Result<String> {
    let digest = sha256_digest(manifest);
    let path = format!("/v2/{repository}/manifests/{reference}");
    let headers = [("content-type", media_type)];
    let body = Bytes::copy_from_slice(manifest);
    let put = http::request(&registry.host(), Method::PUT, &path, &headers, body).await?;
    expect_status(&put, 201, &format!("PUT manifest {repository}:{reference}"))?;
    match put.header("docker-content-digest") {
        Some(returned) if returned != digest => Err(io::Error::other(format!(
            "PUT manifest {repository}:{reference}: registry says digest {returned}, expected {digest}"
        ))),
        _ => Ok(digest),
    }
}

fn expect_status(response: &http::Response, expected: u16, what: &str) -> io::Result<()> {
    if response.status == expected {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what}: status {} (expected {expected}): {}",
        response.status,
        response.body_text()
    )))
}

// ---------------------------------------------------------------------------------------
// The standard test images
// ---------------------------------------------------------------------------------------

/// Directory holding the static test programs compiled by `build.rs`.
pub fn testprogs_dir() -> &'static Path {
    Path::new(env!("BERTH_TESTPROGS_DIR"))
}

/// Layer 1: dynamic busybox with its libraries and loader, applet links, users and groups.
pub fn busybox_layer() -> io::Result<LayerBuilder> {
    let mut layer = LayerBuilder::new();
    for (dir, mode) in [
        ("/bin", 0o755),
        ("/etc", 0o755),
        ("/tmp", 0o1777),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/dev", 0o755),
        ("/root", 0o700),
        ("/home/berth", 0o755),
    ] {
        layer.dir(dir, mode);
    }
    add_host_file(&mut layer, Path::new(BUSYBOX), BUSYBOX)?;
    for library in shared_libraries(Path::new(BUSYBOX))? {
        add_library(&mut layer, &library)?;
    }
    for applet in busybox_applets()? {
        layer.symlink(&format!("/bin/{applet}"), "busybox");
    }
    layer.file("/etc/passwd", PASSWD, 0o644);
    layer.file("/etc/group", GROUP, 0o644);
    Ok(layer)
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
berth:x:1000:1000:berth:/home/berth:/bin/sh
";

const GROUP: &str = "root:x:0:
extra:x:2000:berth
berth:x:1000:
nogroup:x:65534:
";

/// Layer 2: the static test programs in `/usr/local/bin` plus files for layer 3 to remove.
pub fn testprogs_layer() -> io::Result<LayerBuilder> {
    let mut layer = LayerBuilder::new();
    for name in ["pause", "exitwith", "printenv-args", "memhog", "swapdir"] {
        let host_path = testprogs_dir().join(name);
        add_host_file(&mut layer, &host_path, &format!("/usr/local/bin/{name}"))?;
    }
    layer.file(
        "/removed-by-whiteout",
        "this file is deleted by layer 3\n",
        0o644,
    );
    layer.file(
        "/opaque-dir/old-file",
        "hidden by layer 3's opaque whiteout\n",
        0o644,
    );
    Ok(layer)
}

/// Layer 3: a whiteout for `/removed-by-whiteout` and an opaque `/opaque-dir`.
pub fn whiteout_layer() -> LayerBuilder {
    let mut layer = LayerBuilder::new();
    layer
        .whiteout("/removed-by-whiteout")
        .opaque_whiteout("/opaque-dir")
        .file("/opaque-dir/new-file", "added by layer 3\n", 0o644);
    layer
}

/// The single layer of the arm64 decoy image: just `/DECOY-ARM64`.
pub fn decoy_layer() -> LayerBuilder {
    let mut layer = LayerBuilder::new();
    layer.file("/DECOY-ARM64", "this is not the amd64 image\n", 0o644);
    layer
}

/// Adds the contents of `host_path` (symlinks followed) as a regular file at `image_path`.
pub fn add_host_file(
    layer: &mut LayerBuilder,
    host_path: &Path,
    image_path: &str,
) -> io::Result<()> {
    let context =
        |e: io::Error| io::Error::new(e.kind(), format!("read {}: {e}", host_path.display()));
    let data = std::fs::read(host_path).map_err(context)?;
    let mode = std::fs::metadata(host_path)
        .map_err(context)?
        .permissions()
        .mode()
        & 0o7777;
    layer.file(image_path, data, mode);
    Ok(())
}

/// Adds a library at its ldd path and at every path its symlink chain passes through.
fn add_library(layer: &mut LayerBuilder, library: &Path) -> io::Result<()> {
    let mut path = library.to_path_buf();
    for _ in 0..8 {
        add_host_file(layer, library, &path.to_string_lossy())?;
        let Ok(target) = std::fs::read_link(&path) else {
            break;
        };
        path = match path.parent() {
            Some(parent) if target.is_relative() => parent.join(target),
            _ => target,
        };
    }
    Ok(())
}

/// Absolute paths `ldd` reports for `binary` (libraries and the dynamic loader).
fn shared_libraries(binary: &Path) -> io::Result<Vec<PathBuf>> {
    let stdout = run_stdout(Command::new("ldd").arg(binary))?;
    let libraries = stdout
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect::<Vec<_>>();
    if libraries.is_empty() {
        return Err(io::Error::other(format!(
            "ldd {} listed no libraries; is it the dynamic busybox (apt-get install busybox)?",
            binary.display()
        )));
    }
    Ok(libraries)
}

fn busybox_applets() -> io::Result<Vec<&'static str>> {
    let list = run_stdout(Command::new(BUSYBOX).arg("--list"))?;
    let available: Vec<&str> = list.lines().map(str::trim).collect();
    Ok(APPLETS
        .split_whitespace()
        .filter(|a| available.contains(a))
        .collect())
}

fn run_stdout(command: &mut Command) -> io::Result<String> {
    let what = format!("{command:?}");
    let output = command
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("run {what}: {e}")))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One pushed tag of the standard test images.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// Full reference, e.g. `127.0.0.1:PORT/berth-test/busybox:oci`.
    pub reference: String,
    /// Repository, e.g. `berth-test/busybox`.
    pub repository: String,
    /// Tag, e.g. `oci`.
    pub tag: String,
    /// Digest of the tagged manifest (or index / manifest list).
    pub manifest_digest: String,
    /// Media type of the tagged manifest.
    pub manifest_media_type: String,
    /// Config digest of the amd64 image: the image ID kubelet sees.
    pub config_digest: String,
    /// The amd64 image's layers.
    pub layers: Vec<LayerInfo>,
    /// For an index: `(platform, manifest digest)` per entry, e.g. `("linux/arm64/v8", ..)`.
    pub platform_manifests: Vec<(String, String)>,
}

impl TestImage {
    /// `reference` pinned by digest: `127.0.0.1:PORT/berth-test/busybox@sha256:...`.
    pub fn digest_reference(&self) -> String {
        let (registry_and_repo, _) = self
            .reference
            .rsplit_once(':')
            .unwrap_or((&self.reference, ""));
        format!("{registry_and_repo}@{}", self.manifest_digest)
    }
}

/// The standard test images, by tag.
#[derive(Clone, Debug, Default)]
pub struct TestImages {
    images: BTreeMap<String, TestImage>,
}

impl TestImages {
    /// The image pushed under `tag` (one of [`TEST_TAGS`]).
    pub fn get(&self, tag: &str) -> Option<&TestImage> {
        self.images.get(tag)
    }

    /// All pushed tags' images, sorted by tag.
    pub fn iter(&self) -> impl Iterator<Item = &TestImage> {
        self.images.values()
    }

    fn insert(&mut self, registry: &Registry, tag: &str, tagged: Tagged<'_>) {
        let image = TestImage {
            reference: format!("{}/{TEST_REPOSITORY}:{tag}", registry.host()),
            repository: TEST_REPOSITORY.to_string(),
            tag: tag.to_string(),
            manifest_digest: tagged.digest,
            manifest_media_type: tagged.media_type,
            config_digest: tagged.image.config_digest.clone(),
            layers: tagged.image.layers.clone(),
            platform_manifests: tagged.platforms,
        };
        self.images.insert(tag.to_string(), image);
    }
}

/// What a tag points at: the amd64 image, directly or through an index.
struct Tagged<'a> {
    image: &'a PushedImage,
    digest: String,
    media_type: String,
    platforms: Vec<(String, String)>,
}

struct TestLayers {
    busybox: Layer,
    testprogs: Layer,
    whiteouts: Layer,
    decoy: Layer,
}

fn build_test_layers() -> io::Result<TestLayers> {
    Ok(TestLayers {
        busybox: busybox_layer()?.build(Compression::Gzip)?,
        testprogs: testprogs_layer()?.build(Compression::Gzip)?,
        whiteouts: whiteout_layer().build(Compression::Gzip)?,
        decoy: decoy_layer().build(Compression::Gzip)?,
    })
}

/// Builds and pushes the standard images to `berth-test/busybox` (tags in [`TEST_TAGS`]).
pub async fn push_test_images(registry: &Registry) -> io::Result<TestImages> {
    let layers = tokio::task::spawn_blocking(build_test_layers)
        .await
        .map_err(|e| io::Error::other(format!("build test layers: {e}")))??;
    let amd64 = ImageBuilder::new(Platform::linux_amd64())
        .layer(layers.busybox)
        .layer(layers.testprogs)
        .layer(layers.whiteouts);
    let arm64 = ImageBuilder::new(Platform::linux_arm64_v8()).layer(layers.decoy);
    let mut images = TestImages::default();
    for format in [ManifestFormat::Oci, ManifestFormat::Docker] {
        let (single_tag, multi_tag) = match format {
            ManifestFormat::Oci => ("oci", "multi-oci"),
            ManifestFormat::Docker => ("docker", "multi-docker"),
        };
        let image = amd64.push(registry, TEST_REPOSITORY, format).await?;
        let decoy = arm64.push(registry, TEST_REPOSITORY, format).await?;
        let single = tag_image(registry, &image, single_tag).await?;
        images.insert(registry, single_tag, single);
        let multi = tag_index(registry, format, &image, &decoy.manifest, multi_tag).await?;
        images.insert(registry, multi_tag, multi);
        if format == ManifestFormat::Oci {
            let latest = tag_image(registry, &image, "latest").await?;
            images.insert(registry, "latest", latest);
        }
    }
    Ok(images)
}

async fn tag_image<'a>(
    registry: &Registry,
    image: &'a PushedImage,
    tag: &str,
) -> io::Result<Tagged<'a>> {
    let media_type = image.manifest.media_type.clone();
    let digest = push_manifest(
        registry,
        TEST_REPOSITORY,
        tag,
        &media_type,
        &image.manifest_bytes,
    )
    .await?;
    Ok(Tagged {
        image,
        digest,
        media_type,
        platforms: Vec::new(),
    })
}

async fn tag_index<'a>(
    registry: &Registry,
    format: ManifestFormat,
    image: &'a PushedImage,
    decoy: &Descriptor,
    tag: &str,
) -> io::Result<Tagged<'a>> {
    let entries = [image.manifest.clone(), decoy.clone()];
    let index = index_json(format, &entries);
    let media_type = format.index_media_type();
    let digest = push_manifest(registry, TEST_REPOSITORY, tag, media_type, &index).await?;
    let platforms = entries
        .iter()
        .map(|entry| {
            let platform = entry
                .platform
                .as_ref()
                .map(Platform::to_string)
                .unwrap_or_default();
            (platform, entry.digest.clone())
        })
        .collect();
    Ok(Tagged {
        image,
        digest,
        media_type: media_type.to_string(),
        platforms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_names(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        let entries = archive.entries().expect("read tar entries");
        entries
            .map(|e| {
                let e = e.expect("read tar entry");
                String::from_utf8_lossy(&e.path_bytes()).into_owned()
            })
            .collect()
    }

    fn sample(reverse: bool) -> LayerBuilder {
        let mut steps: [fn(&mut LayerBuilder); 4] = [
            |l| {
                l.file("/etc/hostname", "x\n", 0o644);
            },
            |l| {
                l.symlink("/bin/sh", "busybox");
            },
            |l| {
                l.dir("/tmp", 0o1777);
            },
            |l| {
                l.whiteout("/gone").opaque_whiteout("/etc/opaque");
            },
        ];
        if reverse {
            steps.reverse();
        }
        let mut layer = LayerBuilder::new();
        steps.iter().for_each(|step| step(&mut layer));
        layer
    }

    #[test]
    fn same_input_gives_same_digest_regardless_of_insertion_order() {
        let a = sample(false).build(Compression::Gzip).expect("build a");
        let b = sample(true).build(Compression::Gzip).expect("build b");
        let c = sample(false).build(Compression::Gzip).expect("build c");
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.digest, c.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(a.digest, a.diff_id);
    }

    #[test]
    fn entries_are_sorted_with_implicit_parents_and_whiteouts() {
        let tar = sample(true).tar().expect("tar");
        assert_eq!(
            entry_names(&tar),
            [
                ".wh.gone",
                "bin/",
                "bin/sh",
                "etc/",
                "etc/hostname",
                "etc/opaque/",
                "etc/opaque/.wh..wh..opq",
                "tmp/",
            ]
        );
    }

    #[test]
    fn headers_have_zero_mtime_and_owner() {
        let tar = sample(false).tar().expect("tar");
        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let header = entry.header();
            assert_eq!(header.mtime().expect("mtime"), 0);
            assert_eq!(header.uid().expect("uid"), 0);
            assert_eq!(header.gid().expect("gid"), 0);
        }
    }

    #[test]
    fn diff_id_is_digest_of_decompressed_blob() {
        let gzip = sample(false).build(Compression::Gzip).expect("gzip");
        let tar = Compression::Gzip.decompress(&gzip.blob).expect("gunzip");
        assert_eq!(sha256_digest(&tar), gzip.diff_id);
        let plain = sample(false).build(Compression::None).expect("plain");
        assert_eq!(plain.digest, plain.diff_id);
        assert_eq!(plain.diff_id, gzip.diff_id);
    }

    #[test]
    fn hostile_short_names_are_kept_verbatim() {
        let mut layer = LayerBuilder::new();
        layer
            .file("../escape", "x", 0o644)
            .symlink("link", "/etc/../../");
        let names = entry_names(&layer.tar().expect("tar"));
        assert_eq!(names, ["../escape", "link"]);
    }

    #[test]
    fn long_names_use_gnu_long_name() {
        let long = format!("/d/{}", "x".repeat(150));
        let mut layer = LayerBuilder::new();
        layer.file(&long, "x", 0o644);
        let names = entry_names(&layer.tar().expect("tar"));
        assert_eq!(names, ["d/".to_string(), long[1..].to_string()]);
    }

    #[test]
    fn platform_display_includes_variant() {
        assert_eq!(Platform::linux_arm64_v8().to_string(), "linux/arm64/v8");
        assert_eq!(Platform::linux_amd64().to_string(), "linux/amd64");
    }

    #[test]
    fn config_lists_diff_ids_in_layer_order() {
        let a = sample(false).build(Compression::Gzip).expect("a");
        let b = decoy_layer().build(Compression::None).expect("b");
        let image = ImageBuilder::new(Platform::linux_amd64())
            .layer(a.clone())
            .layer(b.clone());
        let config: Value = serde_json::from_slice(&image.config_json()).expect("config json");
        assert_eq!(config["rootfs"]["diff_ids"], json!([a.diff_id, b.diff_id]));
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["config"]["Cmd"], json!(["/bin/sh"]));
        let manifest: Value = serde_json::from_slice(
            &image.manifest_json(ManifestFormat::Docker, &image.config_json()),
        )
        .expect("manifest json");
        assert_eq!(
            manifest["layers"][1]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar"
        );
    }
}
