//! SPDY/3 name/value header blocks: the block format and its zlib compression.
//!
//! A block is a count followed by length-prefixed names and values (names lowercase, several
//! values of one name joined with NUL). Blocks are deflated with the SPDY/3 dictionary, one
//! compression context per direction for the whole connection, each block ending in a sync
//! flush: a [`HeaderEncoder`] and a [`HeaderDecoder`] must therefore see every block of their
//! direction, in order.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Largest inflated header block accepted: Kubernetes clients send a few short headers, so
/// anything near this is an attempt to exhaust memory.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// The SPDY/3 compression dictionary (draft 3, section 2.6.10.1): length-prefixed header names
/// and values, then a run of common strings. Its Adler-32, `0xe3c6a7c2`, is the dictionary id
/// every SPDY/3 peer writes into the zlib header.
pub const DICTIONARY: [u8; DICTIONARY_LEN] = dictionary();

const DICTIONARY_LEN: usize = 1423;

const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

const fn dictionary() -> [u8; DICTIONARY_LEN] {
    let mut out = [0u8; DICTIONARY_LEN];
    let mut pos = 0;
    let mut i = 0;
    while i < DICTIONARY_WORDS.len() {
        let word = DICTIONARY_WORDS[i].as_bytes();
        let len = (word.len() as u32).to_be_bytes();
        let mut j = 0;
        while j < 4 {
            out[pos] = len[j];
            pos += 1;
            j += 1;
        }
        j = 0;
        while j < word.len() {
            out[pos] = word[j];
            pos += 1;
            j += 1;
        }
        i += 1;
    }
    let tail = DICTIONARY_TAIL.as_bytes();
    let mut j = 0;
    while j < tail.len() {
        out[pos] = tail[j];
        pos += 1;
        j += 1;
    }
    assert!(pos == DICTIONARY_LEN);
    out
}

/// Why a header block could not be (de)compressed or parsed.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header block inflates beyond {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    #[error("header block compression: {0}")]
    Zlib(String),
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
}

/// The headers of a SYN_STREAM, SYN_REPLY or HEADERS frame, in wire order.
///
/// Names are lowercase (lookups ignore case, so `requestID` finds `requestid`); a name sent
/// with several values keeps them NUL-separated, as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers (what a SYN_REPLY carries).
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Builder form of [`Headers::insert`].
    pub fn with(mut self, name: &str, value: &str) -> Headers {
        self.insert(name, value);
        self
    }

    /// Adds a value for `name` (lowercased); a second value of the same name joins the first.
    pub fn insert(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push('\0');
                v.push_str(value);
            }
            None => self.0.push((name, value.to_string())),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every value of `name`.
    pub fn get_all<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s str> + use<'s, 'n> {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split('\0'))
    }

    /// `(name, value)` pairs in wire order, several values still NUL-joined.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many distinct names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The uncompressed block.
    pub fn to_block(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (name, value) in &self.0 {
            for s in [name, value] {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    /// Parses an uncompressed block. Names are lowercased and a repeated name joins the
    /// first; empty names and trailing bytes are errors.
    pub fn from_block(block: &[u8]) -> Result<Headers, HeaderError> {
        let mut p = block;
        let count = take_u32(&mut p)? as usize;
        if count > p.len() / 8 {
            return Err(HeaderError::Malformed("more headers than bytes"));
        }
        let mut headers = Headers::new();
        for _ in 0..count {
            let name = take_string(&mut p)?;
            if name.is_empty() {
                return Err(HeaderError::Malformed("empty header name"));
            }
            let value = take_string(&mut p)?;
            headers.insert(&name, &value);
        }
        if !p.is_empty() {
            return Err(HeaderError::Malformed("bytes after the last header"));
        }
        Ok(headers)
    }
}

fn take_u32(p: &mut &[u8]) -> Result<u32, HeaderError> {
    let (head, rest) = p
        .split_first_chunk::<4>()
        .ok_or(HeaderError::Malformed("truncated length"))?;
    *p = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_string(p: &mut &[u8]) -> Result<String, HeaderError> {
    let len = take_u32(p)? as usize;
    if len > p.len() {
        return Err(HeaderError::Malformed("length beyond the block"));
    }
    let (s, rest) = p.split_at(len);
    *p = rest;
    Ok(String::from_utf8_lossy(s).into_owned())
}

/// Compresses the header blocks of one direction of a connection.
pub struct HeaderEncoder {
    z: Compress,
    primed: bool,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        HeaderEncoder::new()
    }
}

impl HeaderEncoder {
    /// A fresh context, for the first block a side sends on a connection.
    pub fn new() -> HeaderEncoder {
        HeaderEncoder {
            z: Compress::new(Compression::best(), true),
            primed: false,
        }
    }

    /// The compressed block for `headers`, ending in a sync flush.
    pub fn encode(&mut self, headers: &Headers) -> Result<Bytes, HeaderError> {
        if !self.primed {
            self.z
                .set_dictionary(&DICTIONARY)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            self.primed = true;
        }
        let raw = headers.to_block();
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.z.total_in();
            self.z
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            pos += (self.z.total_in() - before) as usize;
            if pos == raw.len() && out.len() < out.capacity() {
                return Ok(Bytes::from(out));
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// Inflates the header blocks of one direction of a connection.
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder::new()
    }
}

impl HeaderDecoder {
    /// A fresh context, for the first block a side receives on a connection.
    pub fn new() -> HeaderDecoder {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }

    /// Inflates and parses the next block of this direction.
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        Headers::from_block(&self.inflate(block)?)
    }

    /// Inflates one block, at most [`MAX_HEADER_BLOCK`] bytes of output.
    pub fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(block.len().saturating_mul(2).clamp(64, 4096));
        let mut pos = 0;
        loop {
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let status = self
                .z
                .decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync);
            let consumed = (self.z.total_in() - in_before) as usize;
            pos += consumed;
            match status {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Zlib(e.to_string())),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(HeaderError::TooLarge);
            }
            if pos == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                if out.len() == MAX_HEADER_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                let more = out.len().max(256).min(MAX_HEADER_BLOCK - out.len());
                out.reserve_exact(more);
            } else if consumed == 0 && out.len() == out_before {
                return Err(HeaderError::Zlib("inflate made no progress".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_has_the_spdy3_adler32() {
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn blocks_round_trip_through_one_context_per_direction() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new();
        let blocks = [
            Headers::new().with("streamtype", "error"),
            Headers::new(),
            Headers::new()
                .with("port", "80")
                .with("requestID", "0")
                .with("streamtype", "data"),
        ];
        for h in &blocks {
            let z = enc.encode(h).unwrap();
            assert_eq!(&dec.decode(&z).unwrap(), h);
        }
        assert_eq!(blocks[2].get("requestid"), Some("0"));
        assert_eq!(blocks[2].iter().nth(1), Some(("requestid", "0")));
    }

    #[test]
    fn repeated_names_are_nul_joined() {
        let h = Headers::new().with("a", "1").with("A", "2");
        assert_eq!(h.len(), 1);
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(Headers::from_block(&h.to_block()).unwrap(), h);
    }

    #[test]
    fn blocks_inflating_beyond_the_limit_are_rejected() {
        let big = "x".repeat(MAX_HEADER_BLOCK);
        let z = HeaderEncoder::new()
            .encode(&Headers::new().with("big", &big))
            .unwrap();
        assert!(z.len() < 4096, "compresses well: {}", z.len());
        assert!(matches!(
            HeaderDecoder::new().decode(&z),
            Err(HeaderError::TooLarge)
        ));
    }

    #[test]
    fn random_and_corrupted_blocks_never_panic() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = HeaderEncoder::new()
            .encode(
                &Headers::new()
                    .with("streamtype", "stdout")
                    .with("port", "80"),
            )
            .unwrap();
        for round in 0..5_000 {
            let mut block: Vec<u8> = if round % 2 == 0 {
                valid.to_vec()
            } else {
                (0..noise() % 64).map(|_| noise() as u8).collect()
            };
            if let Some(b) = block.get_mut((noise() as usize) % (valid.len() + 1)) {
                *b ^= noise() as u8 | 1;
            }
            let _ = HeaderDecoder::new().decode(&block);
            let _ = Headers::from_block(&block);
        }
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        for bad in [
            &[][..],
            &[0, 0, 0, 1][..],
            &[0, 0, 0, 1, 0, 0, 0, 9, b'a'][..],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[0xff, 0xff, 0xff, 0xff][..],
            &[0, 0, 0, 0, 1][..],
        ] {
            assert!(Headers::from_block(bad).is_err(), "{bad:?}");
        }
        assert!(HeaderDecoder::new().decode(b"not zlib at all").is_err());
        // A zlib stream asking for another dictionary.
        assert!(
            HeaderDecoder::new()
                .decode(&[0x78, 0xf9, 0, 0, 0, 1, 0x63, 0, 0])
                .is_err()
        );
    }
}
