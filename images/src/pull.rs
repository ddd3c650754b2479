//! PullImage: resolve the manifest (through mirrors, then the registry), pick the node's
//! platform, fetch the config, and stream every missing layer into its snapshot: downloaded
//! in parallel (bounded), digest- and size-checked while streaming, unpacked as it arrives,
//! and fetched once even when several pulls want it at the same time.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OnceCell, Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::decompress::{self, Compression};
use crate::digest::{self, Digest, Hasher};
use crate::error::ImageError;
use crate::manifest::{self, Descriptor, ImageConfig, Manifest, Platform};
use crate::metadata::ImageRecord;
use crate::reference::ImageRef;
use crate::registry::{Credential, Endpoint, RegistryClient, Session};
use crate::snapshot::SnapshotInfo;
use crate::store::ImageStore;
use crate::unpack::{self, UnpackError};

/// Chunks buffered between the download and the unpacker of one layer.
const CHUNKS_IN_FLIGHT: usize = 64;

/// Pulls images into an [`ImageStore`].
pub struct Puller {
    store: Arc<ImageStore>,
    registry: RegistryClient,
    platform: Platform,
    layer_slots: Arc<Semaphore>,
    inflight: Mutex<HashMap<Digest, Arc<OnceCell<()>>>>,
}

/// What a finished pull produced.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    pub image_id: String,
    /// Layers fetched by this pull (the others were already present or fetched by another).
    pub layers_fetched: usize,
    pub bytes_fetched: u64,
}

struct Resolved {
    top_digest: String,
    manifest_digest: String,
    blobs: Vec<(Digest, Bytes)>,
    config: ImageConfig,
    config_desc: Descriptor,
    layers: Vec<Descriptor>,
}

impl Puller {
    pub fn new(
        store: Arc<ImageStore>,
        registry: RegistryClient,
        max_parallel_layers: usize,
    ) -> Puller {
        Puller {
            store,
            registry,
            platform: manifest::host_platform(),
            layer_slots: Arc::new(Semaphore::new(max_parallel_layers.max(1))),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Pulls `image` and returns its ID (the config digest). Mirrors are tried in order, then
    /// the registry itself; the error names every endpoint that failed.
    pub async fn pull(
        &self,
        image: &str,
        cred: Option<&Credential>,
    ) -> Result<PullOutcome, ImageError> {
        let image_ref = ImageRef::parse(image)?;
        let mut failures = Vec::new();
        for endpoint in self.registry.endpoints(&image_ref) {
            match self.pull_from(&image_ref, &endpoint, cred).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if endpoint.mirror => {
                    warn!(image, mirror = %endpoint.host, error = %e, "mirror failed; trying the next endpoint");
                    failures.push(format!("mirror {}: {e}", endpoint.host));
                }
                Err(e) if failures.is_empty() => return Err(e),
                Err(e) => {
                    failures.push(e.to_string());
                    return Err(match e {
                        ImageError::NotFound(_) => ImageError::NotFound(failures.join("; ")),
                        _ => ImageError::Registry {
                            reference: image.into(),
                            message: failures.join("; "),
                        },
                    });
                }
            }
        }
        unreachable_endpoint(image)
    }

    async fn pull_from(
        &self,
        image_ref: &ImageRef,
        endpoint: &Endpoint,
        cred: Option<&Credential>,
    ) -> Result<PullOutcome, ImageError> {
        let mut session = self.registry.session(endpoint, cred)?;
        session.authenticate().await?;
        let resolved = self.resolve(image_ref, &session).await?;
        let diff_ids = parse_diff_ids(image_ref, &resolved)?;
        let chains = digest::chain_ids(&diff_ids);

        let mut tasks = JoinSet::new();
        for ((layer, diff_id), chain) in resolved.layers.iter().zip(&diff_ids).zip(&chains) {
            let job = LayerJob {
                reference: image_ref.to_string(),
                layer: layer.clone(),
                diff_id: diff_id.clone(),
                chain: chain.clone(),
            };
            let fut = self.ensure_layer(session.clone(), job);
            tasks.spawn(fut);
        }
        // Every layer task runs to its end, even after one failed, so that a failed pull
        // returns with no layer work left running (the caller then removes what it stored).
        let (mut fetched, mut bytes, mut failure) = (0, 0, None);
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(|e| ImageError::io("layer task", io::Error::other(e))) {
                Ok(Ok(Some(n))) => {
                    fetched += 1;
                    bytes += n;
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) | Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }

        let record = self.record(image_ref, &resolved, &chains);
        let image_id = record.id.clone();
        let store = self.store.clone();
        let blobs = resolved.blobs;
        tokio::task::spawn_blocking(move || {
            for (d, b) in &blobs {
                store.content.write(d, b)?;
            }
            store.record(record)
        })
        .await
        .map_err(|e| ImageError::io("record image", io::Error::other(e)))??;
        info!(image = %image_ref, image_id, layers_fetched = fetched, bytes, "pulled image");
        Ok(PullOutcome {
            image_id,
            layers_fetched: fetched,
            bytes_fetched: bytes,
        })
    }

    async fn resolve(
        &self,
        image_ref: &ImageRef,
        session: &Session,
    ) -> Result<Resolved, ImageError> {
        let reference = image_ref.to_string();
        let unsupported = |message: String| ImageError::Unsupported {
            reference: reference.clone(),
            message,
        };
        let (top, top_digest) = session.top_manifest().await?;
        let mut blobs = vec![(parse_digest(&reference, &top_digest)?, top.clone())];
        let (manifest_digest, image) = match manifest::parse(&top, None).map_err(unsupported)? {
            Manifest::Image(m) => (top_digest.clone(), m),
            Manifest::Index(index) => {
                let entry = manifest::select_platform(&index, &self.platform).ok_or_else(|| {
                    let offered: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                        .collect();
                    ImageError::NotFound(format!(
                        "{reference}: no manifest for platform {} (the index offers: {})",
                        self.platform,
                        offered.join(", ")
                    ))
                })?;
                let (bytes, digest) = session.manifest_by_digest(&entry.digest).await?;
                check_blob(&reference, entry, &bytes)?;
                blobs.push((parse_digest(&reference, &digest)?, bytes.clone()));
                match manifest::parse(&bytes, Some(&entry.media_type)).map_err(unsupported)? {
                    Manifest::Image(m) => (digest, m),
                    Manifest::Index(_) => {
                        return Err(ImageError::Unsupported {
                            reference,
                            message: "nested image indexes are not supported".into(),
                        });
                    }
                }
            }
        };
        if image.config.size > manifest::MAX_CONFIG_BYTES {
            return Err(ImageError::Unsupported {
                reference,
                message: format!("image config of {} bytes is too large", image.config.size),
            });
        }
        let config_bytes = fetch_small_blob(session, &reference, &image.config).await?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| ImageError::Corrupt {
                reference: reference.clone(),
                digest: image.config.digest.clone(),
                message: format!("image config does not parse: {e}"),
            })?;
        blobs.push((
            parse_digest(&reference, &image.config.digest)?,
            config_bytes,
        ));
        Ok(Resolved {
            top_digest,
            manifest_digest,
            blobs,
            config,
            config_desc: image.config,
            layers: image.layers,
        })
    }

    /// Makes sure the layer's snapshot exists; `Some(bytes)` if this call downloaded it.
    fn ensure_layer(
        &self,
        session: Session,
        job: LayerJob,
    ) -> impl std::future::Future<Output = Result<Option<u64>, ImageError>> + Send + 'static {
        let store = self.store.clone();
        let slots = self.layer_slots.clone();
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(job.chain.clone()).or_default().clone()
        };
        async move {
            let mut fetched = None;
            cell.get_or_try_init(|| async {
                if store.snapshots.exists(&job.chain) {
                    return Ok(());
                }
                let _slot = slots
                    .acquire()
                    .await
                    .map_err(|e| ImageError::io("layer slot", io::Error::other(e)))?;
                if store.snapshots.exists(&job.chain) {
                    return Ok(());
                }
                fetched = Some(fetch_layer(&store, &session, &job).await?);
                Ok::<(), ImageError>(())
            })
            .await?;
            Ok(fetched)
        }
    }

    fn record(&self, image_ref: &ImageRef, r: &Resolved, chains: &[Digest]) -> ImageRecord {
        let size = r.config_desc.size + r.layers.iter().map(|l| l.size).sum::<u64>();
        let user = r
            .config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default();
        ImageRecord {
            id: r.config_desc.digest.clone(),
            repo_tags: image_ref.repo_tag().into_iter().collect(),
            repo_digests: vec![image_ref.repo_digest(&r.top_digest)],
            size,
            user,
            pinned: false,
            manifest_digest: r.manifest_digest.clone(),
            blobs: r.blobs.iter().map(|(d, _)| d.to_string()).collect(),
            chain_ids: chains.iter().map(ToString::to_string).collect(),
            pulled_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Forgets finished in-flight entries (their snapshots are on disk now).
    pub fn sweep_inflight(&self) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        inflight.retain(|_, cell| !cell.initialized() && Arc::strong_count(cell) > 1);
    }
}

fn unreachable_endpoint(image: &str) -> Result<PullOutcome, ImageError> {
    Err(ImageError::Registry {
        reference: image.into(),
        message: "no endpoint to pull from".into(),
    })
}

fn parse_digest(reference: &str, d: &str) -> Result<Digest, ImageError> {
    Digest::parse(d).map_err(|message| ImageError::Unsupported {
        reference: reference.into(),
        message,
    })
}

fn check_blob(reference: &str, desc: &Descriptor, bytes: &[u8]) -> Result<(), ImageError> {
    let actual = Digest::of(bytes);
    if actual.to_string() != desc.digest || bytes.len() as u64 != desc.size {
        return Err(ImageError::Corrupt {
            reference: reference.into(),
            digest: desc.digest.clone(),
            message: format!(
                "got {} bytes hashing to {actual}, descriptor says {} bytes",
                bytes.len(),
                desc.size
            ),
        });
    }
    Ok(())
}

async fn fetch_small_blob(
    session: &Session,
    reference: &str,
    desc: &Descriptor,
) -> Result<Bytes, ImageError> {
    let mut stream = session.blob_stream(&desc.digest).await?;
    let mut buf = Vec::with_capacity(desc.size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ImageError::Registry {
            reference: reference.into(),
            message: format!("read blob {}: {e}", desc.digest),
        })?;
        if (buf.len() + chunk.len()) as u64 > desc.size {
            return Err(ImageError::Corrupt {
                reference: reference.into(),
                digest: desc.digest.clone(),
                message: format!(
                    "blob is larger than the {} bytes its descriptor says",
                    desc.size
                ),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    check_blob(reference, desc, &buf)?;
    Ok(buf.into())
}

fn parse_diff_ids(image_ref: &ImageRef, r: &Resolved) -> Result<Vec<Digest>, ImageError> {
    let reference = image_ref.to_string();
    let ids = &r.config.rootfs.diff_ids;
    if ids.len() != r.layers.len() {
        return Err(ImageError::Corrupt {
            reference,
            digest: r.config_desc.digest.clone(),
            message: format!(
                "image config lists {} diff IDs for {} layers",
                ids.len(),
                r.layers.len()
            ),
        });
    }
    ids.iter().map(|d| parse_digest(&reference, d)).collect()
}

struct LayerJob {
    reference: String,
    layer: Descriptor,
    diff_id: Digest,
    chain: Digest,
}

/// Downloads one layer and unpacks it into its snapshot; returns the bytes downloaded.
async fn fetch_layer(
    store: &Arc<ImageStore>,
    session: &Session,
    job: &LayerJob,
) -> Result<u64, ImageError> {
    let compression = Compression::from_media_type(&job.layer.media_type).map_err(|e| {
        ImageError::Unsupported {
            reference: job.reference.clone(),
            message: e.to_string(),
        }
    })?;
    debug!(layer = %job.layer.digest, size = job.layer.size, "fetching layer");
    let mut stream = session.blob_stream(&job.layer.digest).await?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let unpacker = {
        let store = store.clone();
        let job = LayerJob {
            reference: job.reference.clone(),
            layer: job.layer.clone(),
            diff_id: job.diff_id.clone(),
            chain: job.chain.clone(),
        };
        tokio::task::spawn_blocking(move || unpack_into_snapshot(&store, &job, compression, rx))
    };
    let mut network_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if tx.send(Ok(bytes)).await.is_err() {
                    break; // the unpacker stopped early; its error says why
                }
            }
            Err(e) => {
                network_error = Some(e.to_string());
                let _ = tx.send(Err(io::Error::other(e))).await;
                break;
            }
        }
    }
    drop(tx);
    let result = unpacker
        .await
        .map_err(|e| ImageError::io("unpack task", io::Error::other(e)))?;
    if let Some(message) = network_error {
        return Err(ImageError::Registry {
            reference: job.reference.clone(),
            message: format!("download layer {}: {message}", job.layer.digest),
        });
    }
    result
}

/// The blocking half: read the compressed stream from the channel, hash it, decompress, hash
/// the tar, unpack; commit the snapshot only if size, digest and diff ID all match.
fn unpack_into_snapshot(
    store: &ImageStore,
    job: &LayerJob,
    compression: Compression,
    rx: mpsc::Receiver<io::Result<Bytes>>,
) -> Result<u64, ImageError> {
    let corrupt = |message: String| ImageError::Corrupt {
        reference: job.reference.clone(),
        digest: job.layer.digest.clone(),
        message,
    };
    let pending = store.snapshots.prepare(&job.chain)?;
    let mut blob = ChannelReader::new(rx, job.layer.size);
    let oversize = blob.oversize.clone();
    let stats = {
        let decoder = decompress::decoder(compression, &mut blob)
            .map_err(|e| corrupt(format!("decompress: {e}")))?;
        let mut tar = HashingReader::new(decoder);
        let stats = unpack::unpack_layer(&mut tar, &pending.fs_dir()).map_err(|source| {
            if oversize.get() {
                return corrupt(format!(
                    "blob is larger than the {} bytes its descriptor says",
                    job.layer.size
                ));
            }
            match source {
                UnpackError::Rejected { .. } => ImageError::UnsafeLayer {
                    reference: job.reference.clone(),
                    digest: job.layer.digest.clone(),
                    source,
                },
                UnpackError::Io { path, op, source } => ImageError::io(
                    format!("unpack layer {}: {op} {}", job.layer.digest, path.display()),
                    source,
                ),
                other => corrupt(other.to_string()),
            }
        })?;
        io::copy(&mut tar, &mut io::sink()).map_err(|e| corrupt(format!("decompress: {e}")))?;
        let diff = tar.hasher.finish();
        if diff != job.diff_id {
            return Err(corrupt(format!(
                "uncompressed layer hashes to {diff}, the image config says {}",
                job.diff_id
            )));
        }
        stats
    };
    io::copy(&mut blob, &mut io::sink()).map_err(|e| corrupt(format!("read: {e}")))?;
    let size = blob.hasher.len();
    let digest = blob.hasher.finish();
    if size != job.layer.size || digest.to_string() != job.layer.digest {
        return Err(corrupt(format!(
            "got {size} bytes hashing to {digest}, descriptor says {} bytes",
            job.layer.size
        )));
    }
    pending.commit(&SnapshotInfo {
        chain_id: job.chain.to_string(),
        diff_id: job.diff_id.to_string(),
        blob_digest: job.layer.digest.clone(),
        blob_size: size,
        unpacked_bytes: stats.bytes,
        entries: stats.entries,
    })?;
    failpoint::hit("pull.after_layer");
    Ok(size)
}

/// `Read` over chunks sent from the async download, hashing and counting as it goes and
/// refusing more bytes than the descriptor announced.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    hasher: Hasher,
    limit: u64,
    oversize: std::rc::Rc<std::cell::Cell<bool>>,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>, limit: u64) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
            hasher: Hasher::default(),
            limit,
            oversize: Default::default(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => self.current = b,
            }
        }
        let n = buf.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        if self.hasher.len() + n as u64 > self.limit {
            self.oversize.set(true);
            return Err(io::Error::other(format!(
                "blob is larger than the {} bytes its descriptor says",
                self.limit
            )));
        }
        self.hasher.update(&chunk);
        buf[..n].copy_from_slice(&chunk);
        Ok(n)
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
