//! A registry that answers a manifest request with more than the distribution spec's 4 MiB
//! (an endless body, or a huge declared length) must not make berthd buffer it: the pull fails
//! naming the limit, and berth stops reading soon after the limit. The registry here is the
//! attacker: a plain TCP server on loopback speaking just enough HTTP/1.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use images::{Images, RegistryOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the hostile registry answers a manifest GET.
#[derive(Clone, Copy)]
enum Manifest {
    /// `Transfer-Encoding: chunked`, 64 KiB chunks for ever.
    Endless,
    /// `Content-Length` of 1 GiB, then a few bytes.
    HugeLength,
}

/// Starts the registry; returns its `host:port` and the count of manifest body bytes it sent.
async fn hostile_registry(mode: Manifest) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, mode, counter.clone()));
        }
    });
    (host, sent)
}

async fn serve(mut conn: TcpStream, mode: Manifest, sent: Arc<AtomicU64>) {
    loop {
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte).await {
                Ok(1) => request.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&request);
        if !head.contains("/manifests/") {
            let ok =
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}";
            if conn.write_all(ok.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let media = "application/vnd.oci.image.manifest.v1+json";
        match mode {
            Manifest::HugeLength => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nContent-Length: {}\r\n\r\n{{",
                    1u64 << 30
                );
                let _ = conn.write_all(head.as_bytes()).await;
                sent.fetch_add(1, Ordering::Relaxed);
                // Hold the connection as a slow attacker would; berth must not wait for it.
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            Manifest::Endless => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nTransfer-Encoding: chunked\r\n\r\n"
                );
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 << 10];
                let framed = [
                    format!("{:x}\r\n", chunk.len()).into_bytes(),
                    chunk,
                    b"\r\n".to_vec(),
                ]
                .concat();
                while conn.write_all(&framed).await.is_ok() {
                    sent.fetch_add(64 << 10, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}

async fn pull_from(mode: Manifest) -> (String, u64) {
    let (host, sent) = hostile_registry(mode).await;
    let root = tempfile::tempdir().expect("tempdir");
    let images = Images::open(
        root.path(),
        RegistryOptions {
            insecure: vec![host.clone()],
            ..Default::default()
        },
        1,
    )
    .expect("open store");
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        images.pull(&format!("{host}/hostile/manifest:1"), None),
    )
    .await
    .expect("the pull must not wait for the whole body");
    let err = result.expect_err("an oversized manifest must be refused");
    (err.to_string(), sent.load(Ordering::Relaxed))
}

#[tokio::test]
async fn an_endless_manifest_is_cut_off_at_the_limit() {
    let (err, sent) = pull_from(Manifest::Endless).await;
    assert!(err.contains("4194304 byte limit"), "{err}");
    // The limit is 4 MiB; socket buffers hold a few MiB more. Reading the whole body would
    // never end, so anything near the limit shows berth stopped.
    assert!(sent < 32 << 20, "berth read {sent} bytes of the manifest");
}

#[tokio::test]
async fn a_manifest_declaring_a_huge_length_is_refused_before_reading() {
    let (err, _) = pull_from(Manifest::HugeLength).await;
    assert!(
        err.contains("1073741824 bytes exceed the 4194304 byte limit"),
        "{err}"
    );
}
