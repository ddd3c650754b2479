//! Layer media types and the streaming decompressors that turn a layer blob into its tar.
//!
//! ```
//! use images::decompress::{decoder, Compression};
//! let c = Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip").unwrap();
//! assert_eq!(c, Compression::Gzip);
//! # let _ = decoder(Compression::None, std::io::empty());
//! ```

use std::io::{self, BufReader, Read};

/// Read buffer in front of a decompressor: big reads from the blob stream, few syscalls.
const INPUT_BUFFER: usize = 256 * 1024;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer media type berth cannot unpack.
#[derive(Debug, thiserror::Error)]
#[error("unsupported layer media type `{0}`")]
pub struct UnsupportedMediaType(pub String);

impl Compression {
    /// Maps an OCI or Docker layer media type to its compression; anything else is rejected.
    pub fn from_media_type(media_type: &str) -> Result<Compression, UnsupportedMediaType> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            other => Err(UnsupportedMediaType(other.to_string())),
        }
    }
}

/// Wraps `r` (the blob as fetched) in a reader yielding the uncompressed tar stream.
///
/// Gzip accepts concatenated members, zstd concatenated frames, as their CLI tools do.
pub fn decoder<'a, R: Read + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(INPUT_BUFFER, r),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(
            BufReader::with_capacity(INPUT_BUFFER, r),
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decode(c: Compression, blob: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(c, blob)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("gzip write");
        enc.finish().expect("gzip finish")
    }

    #[test]
    fn oci_and_docker_media_types_map_to_compression() {
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Compression::None,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
        ];
        for (media_type, want) in cases {
            let got = Compression::from_media_type(media_type).expect(media_type);
            assert_eq!(got, want, "{media_type}");
        }
    }

    #[test]
    fn unknown_media_type_is_rejected_by_name() {
        for media_type in [
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip; charset=x",
            "",
        ] {
            let err = Compression::from_media_type(media_type).expect_err(media_type);
            assert!(
                err.to_string().contains(&format!("`{media_type}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn uncompressed_passes_through() {
        assert_eq!(
            decode(Compression::None, b"plain").expect("decode"),
            b"plain"
        );
    }

    #[test]
    fn gzip_round_trips_including_concatenated_members() {
        let mut blob = gzip(b"hello ");
        blob.extend(gzip(b"world"));
        assert_eq!(
            decode(Compression::Gzip, &blob).expect("decode"),
            b"hello world"
        );
    }

    #[test]
    fn zstd_round_trips_including_concatenated_frames() {
        let mut blob = zstd::encode_all(&b"hello "[..], 3).expect("zstd");
        blob.extend(zstd::encode_all(&b"world"[..], 3).expect("zstd"));
        assert_eq!(
            decode(Compression::Zstd, &blob).expect("decode"),
            b"hello world"
        );
    }

    #[test]
    fn corrupt_input_is_an_error() {
        assert!(decode(Compression::Gzip, b"not gzip at all").is_err());
        assert!(decode(Compression::Zstd, b"not zstd at all").is_err());
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let blob = gzip(&[7u8; 100_000]);
        assert!(decode(Compression::Gzip, &blob[..blob.len() / 2]).is_err());
    }

    #[test]
    fn truncated_zstd_is_an_error() {
        let blob = zstd::encode_all(&[7u8; 100_000][..], 3).expect("zstd");
        assert!(decode(Compression::Zstd, &blob[..blob.len() - 4]).is_err());
    }
}
