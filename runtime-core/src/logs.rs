//! The CRI container log writer: turns a container's stdout/stderr bytes into the file kubelet
//! asked for (`LogPath`), in the format kubelet and `crictl logs` read:
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F a complete line
//! 2016-10-06T00:17:09.669794202Z stderr P the first 16 KiB of a long line ...
//! ```
//!
//! Behaviour follows containerd's CRI logger: only the final `\n` of a line is stripped (a `\r`
//! stays in the content), a line longer than the maximum is cut into `P` records of exactly that
//! many bytes followed by an `F` record, and an unterminated line at EOF is written as `F`.
//! Used by the single-threaded, blocking `berth-shim`: no threads, no async.
//!
//! ```no_run
//! use runtime_core::logs::{LogWriter, Stream};
//! # fn main() -> std::io::Result<()> {
//! let mut log = LogWriter::open("/var/log/pods/ns_pod_uid/app/0.log".as_ref())?;
//! log.write(Stream::Stdout, b"hello\nwor")?; // writes "hello", buffers "wor"
//! log.close_stream(Stream::Stdout)?; // writes "wor" as a full line
//! # Ok(())
//! # }
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

/// containerd's default `max_container_log_line_size`: longer lines become `P` records.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Mode of a newly created log file (before umask), as containerd creates them.
const LOG_FILE_MODE: u32 = 0o640;
/// Mode of a directory created for a log file (kubelet creates them 0755).
const LOG_DIR_MODE: u32 = 0o755;
/// Most bytes one stream keeps buffered beyond one line while writes fail (disk full, say):
/// the shim keeps reading the container's output, so older bytes are dropped past this.
pub const MAX_PENDING: usize = 1 << 20;

/// Which container output a record came from. A TTY container has one combined stream: `Stdout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's name in a log record.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Whether a record ends its line (`F`) or the line continues in the next record (`P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Full,
    Partial,
}

impl Tag {
    fn as_byte(self) -> u8 {
        match self {
            Tag::Full => b'F',
            Tag::Partial => b'P',
        }
    }
}

/// One record to cut from the front of a stream's pending bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    content_len: usize,
    tag: Tag,
    /// Bytes consumed: the content plus its `\n`, if any.
    consumed: usize,
}

/// Bytes read from one stream and not yet written to the file: normally an unterminated line,
/// after a failed write also the complete lines that could not be written.
#[derive(Debug, Default)]
struct PendingBytes {
    bytes: Vec<u8>,
    /// Leading bytes known to hold no `\n`, so appending a few bytes to a long partial line does
    /// not rescan it.
    newline_free: usize,
}

/// Writes container output to a CRI log file. See the [module docs](self).
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    /// The log directory the path must stay beneath; `None` for a bare path (only its last
    /// component is opened without following symlinks).
    dir: Option<PathBuf>,
    file: File,
    max_line: usize,
    pending: [PendingBytes; 2],
    /// Reused buffer in which each record is built, so it reaches the file in one `write`.
    record: Vec<u8>,
}

impl LogWriter {
    /// Opens (creating, append mode, 0640) the log file; creates the parent directory if missing.
    /// The last component is never followed if it is a symlink, and must be a regular file.
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        LogWriter::open_location(path.to_path_buf(), None)
    }

    /// Opens `dir/rel` like [`open`](Self::open), but every component of `rel` is opened from a
    /// handle of `dir` without following symlinks, and `rel` must be relative and free of `..`:
    /// whatever a container or a user can create inside the log directory, the log cannot end
    /// up outside it. Missing directories under `dir` (and `dir` itself) are created.
    pub fn open_beneath(dir: &Path, rel: &Path) -> io::Result<LogWriter> {
        LogWriter::open_location(dir.join(rel), Some(dir.to_path_buf()))
    }

    fn open_location(path: PathBuf, dir: Option<PathBuf>) -> io::Result<LogWriter> {
        let file = open_log_file(&path, dir.as_deref())?;
        Ok(LogWriter {
            path,
            dir,
            file,
            max_line: DEFAULT_MAX_LINE,
            pending: Default::default(),
            record: Vec::new(),
        })
    }

    /// Feeds bytes read from a container pipe: every complete line is written as an `F` record, an
    /// unterminated line stays buffered, and while more than `max_line` bytes of one line are
    /// buffered the first `max_line` are written as a `P` record.
    ///
    /// On error nothing is lost: the bytes not yet written stay buffered and go out with the next
    /// successful `write`, `close_stream` or after `reopen`. The buffer is unbounded, so a caller
    /// facing repeated errors should stop reading the pipe to push back on the container.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        self.pending[stream.index()].bytes.extend_from_slice(data);
        let result = self.flush(stream, false);
        let dropped = self.bound_pending(stream);
        match result {
            Err(e) if dropped > 0 => Err(io::Error::new(
                e.kind(),
                format!("{e}; dropped {dropped} buffered bytes"),
            )),
            other => other,
        }
    }

    /// Keeps at most [`MAX_PENDING`] bytes (plus one line) of a stream buffered, dropping the
    /// oldest; returns how many were dropped.
    fn bound_pending(&mut self, stream: Stream) -> usize {
        let limit = MAX_PENDING + self.max_line;
        let pending = &mut self.pending[stream.index()];
        let excess = pending.bytes.len().saturating_sub(limit);
        if excess > 0 {
            pending.bytes.drain(..excess);
            pending.newline_free = 0;
        }
        excess
    }

    /// The stream ended (EOF): everything buffered is written, an unterminated line as `F`.
    pub fn close_stream(&mut self, stream: Stream) -> io::Result<()> {
        self.flush(stream, true)
    }

    /// kubelet rotated the file (renamed it away): opens a new file at the same path. Buffered
    /// bytes stay buffered and go to the new file.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_log_file(&self.path, self.dir.as_deref())?;
        tracing::debug!(path = %self.path.display(), "reopened container log");
        Ok(())
    }

    /// The log file's path, as kubelet gave it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the longest line written as one record ([`DEFAULT_MAX_LINE`] by default); 0 means no
    /// limit, like containerd's `-1`. Takes effect on the next `write` or `close_stream`.
    pub fn set_max_line(&mut self, n: usize) {
        self.max_line = n;
    }

    /// Writes every record the stream's pending bytes hold and keeps the rest (and, on error,
    /// everything from the failed record on).
    fn flush(&mut self, stream: Stream, eof: bool) -> io::Result<()> {
        let mut pending = std::mem::take(&mut self.pending[stream.index()]);
        let timestamp = format_timestamp(SystemTime::now());
        let mut start = 0;
        let mut skip = pending.newline_free;
        let mut result = Ok(());
        while let Some(cut) = next_cut(&pending.bytes[start..], skip, self.max_line, eof) {
            let content = &pending.bytes[start..start + cut.content_len];
            if let Err(e) = self.write_record(&timestamp, stream, cut.tag, content) {
                result = Err(e);
                break;
            }
            start += cut.consumed;
            skip = 0;
        }
        pending.bytes.drain(..start);
        pending.newline_free = if result.is_ok() {
            pending.bytes.len()
        } else {
            0
        };
        self.pending[stream.index()] = pending;
        result
    }

    /// Writes one record with a single `write`. A short write (disk full) is cut off the file
    /// again, so a reader never keeps half a record and a retry writes it whole.
    fn write_record(
        &mut self,
        timestamp: &str,
        stream: Stream,
        tag: Tag,
        content: &[u8],
    ) -> io::Result<()> {
        build_record(&mut self.record, timestamp, stream, tag, content);
        let written = loop {
            match self.file.write(&self.record) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match written {
            Ok(n) if n == self.record.len() => Ok(()),
            Ok(n) => Err(self.undo_short_write(n)),
            Err(e) => Err(self.context(e)),
        }
    }

    /// Truncates the `n` bytes of a short write away and returns the error to report.
    fn undo_short_write(&mut self, n: usize) -> io::Error {
        let short = io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", self.record.len()),
        );
        let truncated = self.file.metadata().and_then(|meta| {
            let len = meta.len().saturating_sub(n as u64);
            self.file.set_len(len)
        });
        match truncated {
            Ok(()) => self.context(short),
            Err(e) => self.context(io::Error::new(
                e.kind(),
                format!("{short}; removing the partial record failed: {e}"),
            )),
        }
    }

    fn context(&self, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("write container log {}: {e}", self.path.display()),
        )
    }
}

fn open_log_file(path: &Path, dir: Option<&Path>) -> io::Result<File> {
    let context = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    let (base, rel) = match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| context("create log directory for", e))?;
            let rel = path.strip_prefix(dir).map_err(|_| {
                context(
                    "open container log",
                    io::Error::other("not beneath the log directory"),
                )
            })?;
            (dir.to_path_buf(), rel.to_path_buf())
        }
        None => match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
                std::fs::create_dir_all(parent)
                    .map_err(|e| context("create directory for container log", e))?;
                (parent.to_path_buf(), PathBuf::from(name))
            }
            (_, Some(name)) => (PathBuf::from("."), PathBuf::from(name)),
            _ => return Err(context("open container log", Errno::EINVAL.into())),
        },
    };
    open_beneath(&base, &rel).map_err(|e| context("open container log", e))
}

/// Opens (creating) `rel` beneath `base`, component by component, never following a symlink;
/// the file must be a regular file (a FIFO planted there would block the shim).
fn open_beneath(base: &Path, rel: &Path) -> io::Result<File> {
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir: OwnedFd = open(base, dir_flags, Mode::empty())?;
    let mut components = rel.components().peekable();
    while let Some(component) = components.next() {
        let Component::Normal(name) = component else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "log path must be relative to the log directory, without `..`",
            ));
        };
        if components.peek().is_none() {
            let flags = OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC;
            let fd = openat(&dir, name, flags, Mode::from_bits_truncate(LOG_FILE_MODE))?;
            let stat = fstat(&fd)?;
            if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                return Err(io::Error::other("not a regular file"));
            }
            fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_APPEND))?;
            return Ok(File::from(fd));
        }
        match mkdirat(&dir, name, Mode::from_bits_truncate(LOG_DIR_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = openat(&dir, name, dir_flags | OFlag::O_NOFOLLOW, Mode::empty())?;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "empty log path",
    ))
}

/// Finds the next record at the front of `pending`, whose first `skip` bytes hold no `\n`.
/// `None` when what is left must wait for more bytes (or nothing is left).
fn next_cut(pending: &[u8], skip: usize, max_line: usize, eof: bool) -> Option<Cut> {
    // A line of exactly `max_line` bytes is still full when its `\n` follows: look one byte past.
    let search_end = match max_line {
        0 => pending.len(),
        max => pending.len().min(max + 1),
    };
    let newline = pending
        .get(skip..search_end)
        .and_then(|window| window.iter().position(|&b| b == b'\n'))
        .map(|i| skip + i);
    if let Some(len) = newline {
        return Some(Cut {
            content_len: len,
            tag: Tag::Full,
            consumed: len + 1,
        });
    }
    if max_line > 0 && pending.len() > max_line {
        return Some(Cut {
            content_len: max_line,
            tag: Tag::Partial,
            consumed: max_line,
        });
    }
    // An unterminated last chunk is partial, as containerd writes it: kubelet reads `F` as a
    // complete line and would add a newline the container never wrote (a termination
    // message from logs, `FallbackToLogsOnError`, would then end in one).
    if eof && !pending.is_empty() {
        return Some(Cut {
            content_len: pending.len(),
            tag: Tag::Partial,
            consumed: pending.len(),
        });
    }
    None
}

/// `<timestamp> <stream> <tag> <content>\n` into `buf`, replacing what it held.
fn build_record(buf: &mut Vec<u8>, timestamp: &str, stream: Stream, tag: Tag, content: &[u8]) {
    buf.clear();
    buf.extend_from_slice(timestamp.as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(stream.as_str().as_bytes());
    buf.push(b' ');
    buf.push(tag.as_byte());
    buf.push(b' ');
    buf.extend_from_slice(content);
    buf.push(b'\n');
}

/// Formats a time as CRI log timestamps do: RFC 3339 in UTC with exactly 9 fraction digits,
/// e.g. `2016-10-06T00:17:09.669794202Z`.
pub fn format_timestamp(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let before = e.duration();
            match before.subsec_nanos() {
                0 => (-(before.as_secs() as i64), 0),
                n => (-(before.as_secs() as i64) - 1, 1_000_000_000 - n),
            }
        }
    };
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard Hinnant's
/// `civil_from_days`: eras of 400 years, years starting in March so leap days come last.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day)
}

/// Parses one CRI log line (with or without its `\n`) into (timestamp, stream, partial,
/// content), as kubelet does: the first of `:`-separated tags decides `P` or `F`. `None` when the
/// line is not in CRI format.
pub fn parse_line(line: &[u8]) -> Option<(String, Stream, bool, Vec<u8>)> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(fields.next()?).ok()?;
    if !looks_like_rfc3339(timestamp) {
        return None;
    }
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()?.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = fields.next()?;
    Some((timestamp.to_string(), stream, partial, content.to_vec()))
}

/// Shape check only (`YYYY-MM-DDTHH:MM:SS` then fraction and zone): kubelet does the real parse.
/// Accepts offsets other than `Z`, as CRI-O writes local time.
fn looks_like_rfc3339(timestamp: &str) -> bool {
    let b = timestamp.as_bytes();
    b.len() >= "1970-01-01T00:00:00Z".len()
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamp_of_epoch() {
        assert_eq!(
            format_timestamp(UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn timestamp_of_cri_spec_example() {
        assert_eq!(
            format_timestamp(at(1_475_713_029, 669_794_202)),
            "2016-10-06T00:17:09.669794202Z"
        );
    }

    #[test]
    fn timestamp_keeps_nine_fraction_digits() {
        assert_eq!(format_timestamp(at(0, 1)), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(
            format_timestamp(at(1, 500_000_000)),
            "1970-01-01T00:00:01.500000000Z"
        );
    }

    #[test]
    fn timestamp_of_leap_days() {
        assert_eq!(
            format_timestamp(at(951_782_400, 0)),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            format_timestamp(at(1_709_251_199, 999_999_999)),
            "2024-02-29T23:59:59.999999999Z"
        );
    }

    #[test]
    fn timestamp_of_2100_which_is_not_a_leap_year() {
        assert_eq!(
            format_timestamp(at(4_107_542_399, 123_456_789)),
            "2100-02-28T23:59:59.123456789Z"
        );
        assert_eq!(
            format_timestamp(at(4_107_542_400, 0)),
            "2100-03-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn timestamp_of_last_rfc3339_second() {
        assert_eq!(
            format_timestamp(at(253_402_300_799, 0)),
            "9999-12-31T23:59:59.000000000Z"
        );
    }

    #[test]
    fn timestamp_before_epoch() {
        let t = UNIX_EPOCH - Duration::new(0, 1);
        assert_eq!(format_timestamp(t), "1969-12-31T23:59:59.999999999Z");
        let t = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(format_timestamp(t), "1969-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn civil_from_days_matches_day_by_day_count() {
        let mut expected = (1970, 1, 1);
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            expected = next_day(expected);
        }
    }

    fn next_day((y, m, d): (i64, u32, u32)) -> (i64, u32, u32) {
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let month_len = match m {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        match (m, d) {
            (12, 31) => (y + 1, 1, 1),
            (_, d) if d == month_len => (y, m + 1, 1),
            _ => (y, m, d + 1),
        }
    }

    fn cut(content_len: usize, tag: Tag, consumed: usize) -> Option<Cut> {
        Some(Cut {
            content_len,
            tag,
            consumed,
        })
    }

    #[test]
    fn cut_complete_line_strips_only_newline() {
        assert_eq!(next_cut(b"ab\r\ncd", 0, 16, false), cut(3, Tag::Full, 4));
        assert_eq!(next_cut(b"\n", 0, 16, false), cut(0, Tag::Full, 1));
    }

    #[test]
    fn cut_waits_for_rest_of_short_line() {
        assert_eq!(next_cut(b"abc", 0, 4, false), None);
        assert_eq!(next_cut(b"abcd", 0, 4, false), None);
        assert_eq!(next_cut(b"", 0, 4, true), None);
    }

    #[test]
    fn cut_line_of_exactly_max_is_full() {
        assert_eq!(next_cut(b"abcd\n", 0, 4, false), cut(4, Tag::Full, 5));
    }

    #[test]
    fn cut_line_over_max_is_partial() {
        assert_eq!(next_cut(b"abcde", 0, 4, false), cut(4, Tag::Partial, 4));
        assert_eq!(next_cut(b"abcde\n", 0, 4, false), cut(4, Tag::Partial, 4));
    }

    #[test]
    fn cut_at_eof_flushes_unterminated_line() {
        assert_eq!(next_cut(b"abc", 0, 4, true), cut(3, Tag::Partial, 3));
    }

    #[test]
    fn cut_without_limit_waits_for_newline() {
        let long = vec![b'x'; 100_000];
        assert_eq!(next_cut(&long, 0, 0, false), None);
        assert_eq!(
            next_cut(&long, 0, 0, true),
            cut(100_000, Tag::Partial, 100_000)
        );
    }

    #[test]
    fn cut_skips_bytes_known_to_hold_no_newline() {
        assert_eq!(next_cut(b"abc\n", 2, 16, false), cut(3, Tag::Full, 4));
        assert_eq!(next_cut(b"abc", 3, 16, false), None);
    }

    #[test]
    fn record_has_cri_layout() {
        let mut buf = b"stale".to_vec();
        let ts = "2016-10-06T00:17:09.669794202Z";
        build_record(&mut buf, ts, Stream::Stderr, Tag::Partial, b"a b");
        assert_eq!(buf, b"2016-10-06T00:17:09.669794202Z stderr P a b\n");
    }

    #[test]
    fn parse_reads_kubelet_style_tags() {
        let line = b"2016-10-06T00:17:09.669794202Z stdout P:x  two  spaces\n";
        let (ts, stream, partial, content) = parse_line(line).expect("parse");
        assert_eq!(ts, "2016-10-06T00:17:09.669794202Z");
        assert_eq!(stream, Stream::Stdout);
        assert!(partial);
        assert_eq!(content, b" two  spaces");
    }

    #[test]
    fn parse_accepts_timestamps_with_offset() {
        let line = b"2016-10-06T02:17:09.669794202+02:00 stderr F x";
        let (ts, stream, partial, content) = parse_line(line).expect("parse");
        assert_eq!(ts, "2016-10-06T02:17:09.669794202+02:00");
        assert_eq!(
            (stream, partial, content.as_slice()),
            (Stream::Stderr, false, &b"x"[..])
        );
    }

    #[test]
    fn parse_rejects_malformed_lines() {
        let ts = "2016-10-06T00:17:09.669794202Z";
        assert!(parse_line(format!("{ts} stdin F x").as_bytes()).is_none());
        assert!(parse_line(format!("{ts} stdout X x").as_bytes()).is_none());
        assert!(parse_line(format!("{ts} stdout F").as_bytes()).is_none());
        assert!(parse_line(b"hello stdout F x").is_none());
        assert!(parse_line(b"").is_none());
    }

    #[test]
    fn write_error_keeps_unwritten_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut log = LogWriter::open(&path).expect("open");
        let real = std::mem::replace(&mut log.file, File::create("/dev/full").expect("/dev/full"));
        log.write(Stream::Stdout, b"one\ntw")
            .expect_err("disk full");
        log.write(Stream::Stdout, b"o\nthr").expect_err("disk full");
        log.file = real;
        log.write(Stream::Stdout, b"ee\n").expect("write");
        let contents = std::fs::read(&path).expect("read");
        let lines: Vec<Vec<u8>> = contents
            .split_inclusive(|&b| b == b'\n')
            .map(|l| parse_line(l).expect("parse").3)
            .collect();
        assert_eq!(lines, [&b"one"[..], b"two", b"three"]);
    }

    #[test]
    fn open_beneath_refuses_symlinks_and_dotdot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&logs).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(outside.join("x"), logs.join("link.log")).expect("symlink");
        std::os::unix::fs::symlink(&outside, logs.join("linkdir")).expect("symlink");
        for rel in [
            "link.log",
            "linkdir/0.log",
            "../outside/0.log",
            "a/../../outside/0.log",
        ] {
            let err = LogWriter::open_beneath(&logs, Path::new(rel)).expect_err(rel);
            assert!(
                err.to_string().contains("open container log"),
                "{rel}: {err}"
            );
        }
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 0);
        let mut log = LogWriter::open_beneath(&logs, Path::new("app/0.log")).expect("open");
        log.write(Stream::Stdout, b"x\n").expect("write");
        assert!(logs.join("app/0.log").is_file());
    }

    #[test]
    fn open_refuses_a_fifo_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("0.log");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).expect("mkfifo");
        // No reader: ENXIO; with one (not tested here) the type check refuses it.
        LogWriter::open_beneath(dir.path(), Path::new("0.log")).expect_err("fifo");
    }

    #[test]
    fn failing_writes_keep_a_bounded_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogWriter::open(&dir.path().join("0.log")).expect("open");
        log.file = File::create("/dev/full").expect("/dev/full");
        let chunk = vec![b'y'; 64 * 1024];
        let mut line = chunk.clone();
        line.push(b'\n');
        for _ in 0..64 {
            let _ = log.write(Stream::Stdout, &line);
        }
        let kept = log.pending[Stream::Stdout.index()].bytes.len();
        assert!(
            kept <= MAX_PENDING + DEFAULT_MAX_LINE,
            "{kept} bytes buffered"
        );
    }
}
