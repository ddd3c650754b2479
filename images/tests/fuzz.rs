//! Randomized tests of the parsers that read bytes from registries and images: image
//! references, manifests and indexes, and layer tar streams (headers, PAX and GNU extensions,
//! whole-layer unpack). Each runs a bounded number of cases from a fixed seed
//! (`BERTH_FUZZ_SEED` and `BERTH_FUZZ_CASES` change them) under `cargo nextest` on stable; the
//! property is that bad input gives an error, never a panic, and an unpack never writes outside
//! its destination.

use std::path::Path;

use images::manifest;
use images::reference::ImageRef;
use images::unpack::unpack_layer;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tar::{EntryType, Header};

fn rng(test: &str) -> StdRng {
    let seed = std::env::var("BERTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b0e7_u64);
    eprintln!("{test}: seed {seed} (set BERTH_FUZZ_SEED to replay another)");
    StdRng::seed_from_u64(seed ^ test.len() as u64)
}

fn cases(default: usize) -> usize {
    std::env::var("BERTH_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut v = vec![0u8; rng.random_range(0..=max)];
    rng.fill_bytes(&mut v);
    v
}

fn mutate(rng: &mut StdRng, mut data: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..4) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] = rng.random();
            }
            2 => data.truncate(rng.random_range(0..=data.len())),
            _ => data.extend(random_bytes(rng, 16)),
        }
    }
    data
}

#[test]
fn image_references_never_panic() {
    const ALPHABET: &[u8] = b"abcz09.-_/:@+ AZ";
    let mut rng = rng("image_references");
    let valid = [
        "busybox",
        "library/busybox:1.36",
        "registry:5000/a/b:tag",
        "name@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ];
    for _ in 0..cases(5_000) {
        let s: String = (0..rng.random_range(0..40))
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        let _ = ImageRef::parse(&s);
        let base = valid[rng.random_range(0..valid.len())].as_bytes().to_vec();
        let mutated = String::from_utf8_lossy(&mutate(&mut rng, base)).into_owned();
        if let Ok(r) = ImageRef::parse(&mutated) {
            // What parses prints back as something that parses again.
            ImageRef::parse(&r.to_string()).expect("display of a parsed reference parses");
        }
    }
}

#[test]
fn manifests_never_panic() {
    let mut rng = rng("manifests");
    let digest = format!("sha256:{}", "ab".repeat(32));
    let docs = [
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":10}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{digest}","size":20}}]}}"#
        ),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":30,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        ),
    ];
    let types = [
        None,
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    ];
    for doc in &docs {
        manifest::parse(doc.as_bytes(), None).expect("valid manifest parses");
    }
    for _ in 0..cases(20_000) {
        let content_type = types[rng.random_range(0..types.len())];
        let doc = docs[rng.random_range(0..docs.len())].as_bytes().to_vec();
        let _ = manifest::parse(&mutate(&mut rng, doc), content_type);
        let _ = manifest::parse(&random_bytes(&mut rng, 64), content_type);
    }
}

/// A small valid layer: directories, files, a symlink, a hard link, PAX and GNU long names.
fn sample_layer(rng: &mut StdRng) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |kind: EntryType, path: &str, link: &str, data: &[u8]| {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        if kind == EntryType::Link || kind == EntryType::Symlink {
            b.append_link(&mut h, path, link).expect("link");
        } else {
            b.append_data(&mut h, path, data).expect("append");
        }
    };
    add(EntryType::Directory, "d", "", b"");
    add(EntryType::Regular, "d/f", "", &random_bytes(rng, 600));
    add(EntryType::Symlink, "d/s", "../etc/passwd", b"");
    add(EntryType::Link, "d/h", "d/f", b"");
    add(EntryType::Regular, &"n".repeat(150), "", b"long");
    add(EntryType::Regular, "d/.wh.gone", "", b"");
    b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..]), ("path", b"d/p")])
        .expect("pax");
    let mut h = Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(8);
    b.append_data(&mut h, "ignored", &b"pax path"[..])
        .expect("append");
    b.into_inner().expect("tar")
}

#[test]
fn layer_unpack_of_mutated_tars_never_panics_or_escapes() {
    let mut rng = rng("layer_unpack");
    let tmp = tempfile::tempdir().expect("tempdir");
    let sentinel = tmp.path().join("sentinel");
    std::fs::write(&sentinel, "original").expect("sentinel");
    let valid = sample_layer(&mut rng);
    std::fs::create_dir(tmp.path().join("valid")).expect("dest");
    unpack_layer(valid.as_slice(), &tmp.path().join("valid")).expect("valid layer unpacks");
    for i in 0..cases(300) {
        let dest = tmp.path().join(format!("dest{i}"));
        std::fs::create_dir(&dest).expect("dest");
        let layer = sample_layer(&mut rng);
        let input = mutate(&mut rng, layer);
        let _ = unpack_layer(input.as_slice(), &dest);
        std::fs::remove_dir_all(&dest).expect("clean dest");
    }
    let mut left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["sentinel", "valid"]);
    assert_eq!(
        std::fs::read_to_string(&sentinel).expect("read"),
        "original"
    );
    assert!(!Path::new("/etc/passwd-berth-fuzz").exists());
}

#[test]
fn tar_headers_from_random_blocks_never_panic() {
    let mut rng = rng("tar_headers");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("dest");
    for _ in 0..cases(800) {
        std::fs::create_dir_all(&dest).expect("dest");
        // A header with random fields but a valid checksum, so parsing goes past it.
        let mut block = [0u8; 512];
        rng.fill_bytes(&mut block);
        let mut h = Header::new_old();
        h.as_mut_bytes().copy_from_slice(&block);
        h.set_cksum();
        let mut input = h.as_bytes().to_vec();
        input.extend(random_bytes(&mut rng, 1024));
        input.extend([0u8; 1024]);
        let _ = unpack_layer(input.as_slice(), &dest);
        std::fs::remove_dir_all(&dest).expect("clean dest");
    }
}
