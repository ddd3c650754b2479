//! The CRI log writer against real files: what kubelet and `crictl logs` would read back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use runtime_core::logs::{LogWriter, Stream, format_timestamp, parse_line};

/// One parsed record: (stream, partial, content).
type Record = (Stream, bool, Vec<u8>);

struct LogUnderTest {
    log: LogWriter,
    _dir: tempfile::TempDir,
}

fn open_log() -> LogUnderTest {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = LogWriter::open(&dir.path().join("app/0.log")).expect("open log");
    LogUnderTest { log, _dir: dir }
}

fn records(path: &Path) -> Vec<Record> {
    let contents = std::fs::read(path).expect("read log");
    assert!(
        contents.is_empty() || contents.ends_with(b"\n"),
        "torn last record"
    );
    contents
        .split_inclusive(|&b| b == b'\n')
        .map(|line| {
            let (ts, stream, partial, content) = parse_line(line)
                .unwrap_or_else(|| panic!("not a CRI line: {:?}", String::from_utf8_lossy(line)));
            assert_eq!(ts.len(), 30, "timestamp {ts}");
            (stream, partial, content)
        })
        .collect()
}

fn full(stream: Stream, content: &[u8]) -> Record {
    (stream, false, content.to_vec())
}

fn partial(stream: Stream, content: &[u8]) -> Record {
    (stream, true, content.to_vec())
}

#[test]
fn open_creates_parent_dir_and_file_with_mode_0640() {
    let t = open_log();
    let path = t.log.path();
    assert!(path.ends_with("app/0.log"));
    let mode = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    // The umask may only remove bits.
    assert_eq!(mode & !0o640, 0, "mode {mode:o}");
}

#[test]
fn open_appends_to_existing_file() {
    let t = open_log();
    let path = t.log.path().to_path_buf();
    std::fs::write(&path, "2016-10-06T00:17:09.669794202Z stdout F before\n").expect("seed");
    let mut log = LogWriter::open(&path).expect("open");
    log.write(Stream::Stdout, b"after\n").expect("write");
    assert_eq!(
        records(&path),
        [
            full(Stream::Stdout, b"before"),
            full(Stream::Stdout, b"after")
        ]
    );
}

#[test]
fn line_split_across_many_writes_is_one_record() {
    let mut t = open_log();
    for byte in b"hello, world" {
        t.log.write(Stream::Stdout, &[*byte]).expect("write");
    }
    assert_eq!(records(t.log.path()), []);
    t.log.write(Stream::Stdout, b"\n").expect("write");
    assert_eq!(
        records(t.log.path()),
        [full(Stream::Stdout, b"hello, world")]
    );
}

#[test]
fn many_lines_in_one_write_are_separate_records() {
    let mut t = open_log();
    t.log
        .write(Stream::Stdout, b"one\ntwo\nthree\nfou")
        .expect("write");
    assert_eq!(
        records(t.log.path()),
        [
            full(Stream::Stdout, b"one"),
            full(Stream::Stdout, b"two"),
            full(Stream::Stdout, b"three"),
        ]
    );
    t.log.close_stream(Stream::Stdout).expect("close");
    assert_eq!(records(t.log.path())[3], partial(Stream::Stdout, b"fou"));
}

#[test]
fn long_line_becomes_partial_records_of_max_line_then_full() {
    let mut t = open_log();
    let line: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    t.log.set_max_line(4096);
    for chunk in line.chunks(1000) {
        t.log.write(Stream::Stderr, chunk).expect("write");
    }
    t.log.write(Stream::Stderr, b"\n").expect("write");
    assert_eq!(
        records(t.log.path()),
        [
            partial(Stream::Stderr, &line[..4096]),
            partial(Stream::Stderr, &line[4096..8192]),
            full(Stream::Stderr, &line[8192..]),
        ]
    );
}

#[test]
fn default_max_line_is_16_kib() {
    let mut t = open_log();
    let line = vec![b'x'; 40 * 1024];
    t.log.write(Stream::Stdout, &line).expect("write");
    t.log.write(Stream::Stdout, b"\n").expect("write");
    let got = records(t.log.path());
    let sizes: Vec<(bool, usize)> = got.iter().map(|(_, p, c)| (*p, c.len())).collect();
    assert_eq!(sizes, [(true, 16384), (true, 16384), (false, 8192)]);
}

#[test]
fn line_of_exactly_max_line_is_one_full_record() {
    let mut t = open_log();
    t.log.set_max_line(8);
    t.log.write(Stream::Stdout, b"12345678").expect("write");
    t.log.write(Stream::Stdout, b"\nabcdefgh\n").expect("write");
    t.log
        .write(Stream::Stdout, b"1234567812345678\n")
        .expect("write");
    assert_eq!(
        records(t.log.path()),
        [
            full(Stream::Stdout, b"12345678"),
            full(Stream::Stdout, b"abcdefgh"),
            partial(Stream::Stdout, b"12345678"),
            full(Stream::Stdout, b"12345678"),
        ]
    );
}

#[test]
fn close_stream_writes_unterminated_line_as_partial() {
    let mut t = open_log();
    t.log
        .write(Stream::Stdout, b"no newline at end")
        .expect("write");
    t.log.close_stream(Stream::Stdout).expect("close");
    t.log.close_stream(Stream::Stdout).expect("close twice");
    assert_eq!(
        records(t.log.path()),
        [partial(Stream::Stdout, b"no newline at end")]
    );
}

#[test]
fn close_stream_after_complete_line_writes_nothing_more() {
    let mut t = open_log();
    t.log.write(Stream::Stdout, b"done\n").expect("write");
    t.log.close_stream(Stream::Stdout).expect("close");
    assert_eq!(records(t.log.path()), [full(Stream::Stdout, b"done")]);
}

#[test]
fn stdout_and_stderr_keep_separate_buffers() {
    let mut t = open_log();
    t.log.write(Stream::Stdout, b"out-").expect("write");
    t.log.write(Stream::Stderr, b"err-").expect("write");
    t.log.write(Stream::Stdout, b"line\nout2").expect("write");
    t.log.write(Stream::Stderr, b"line\n").expect("write");
    t.log.close_stream(Stream::Stderr).expect("close stderr");
    t.log.close_stream(Stream::Stdout).expect("close stdout");
    assert_eq!(
        records(t.log.path()),
        [
            full(Stream::Stdout, b"out-line"),
            full(Stream::Stderr, b"err-line"),
            partial(Stream::Stdout, b"out2"),
        ]
    );
}

#[test]
fn empty_lines_are_full_records_with_empty_content() {
    let mut t = open_log();
    t.log.write(Stream::Stdout, b"\n\na\n\n").expect("write");
    let raw = std::fs::read_to_string(t.log.path()).expect("read");
    assert!(
        raw.lines().next().expect("line").ends_with(" stdout F "),
        "{raw}"
    );
    assert_eq!(
        records(t.log.path()),
        [
            full(Stream::Stdout, b""),
            full(Stream::Stdout, b""),
            full(Stream::Stdout, b"a"),
            full(Stream::Stdout, b""),
        ]
    );
}

#[test]
fn carriage_return_stays_in_content() {
    let mut t = open_log();
    t.log
        .write(Stream::Stdout, b"dos\r\n\r\nbare\rcr\n")
        .expect("write");
    assert_eq!(
        records(t.log.path()),
        [
            full(Stream::Stdout, b"dos\r"),
            full(Stream::Stdout, b"\r"),
            full(Stream::Stdout, b"bare\rcr"),
        ]
    );
}

#[test]
fn reopen_after_rename_loses_and_duplicates_nothing() {
    let mut t = open_log();
    let path = t.log.path().to_path_buf();
    let rotated = path.with_extension("log.20240229-120000");
    t.log
        .write(Stream::Stdout, b"before\nhalf-")
        .expect("write");
    t.log.write(Stream::Stderr, b"err-").expect("write");
    std::fs::rename(&path, &rotated).expect("rotate");
    // Written between kubelet's rename and its ReopenContainerLog: lands in the rotated file.
    t.log.write(Stream::Stdout, b"way\n").expect("write");
    t.log.write(Stream::Stdout, b"unterminated").expect("write");
    t.log.reopen().expect("reopen");
    t.log
        .write(Stream::Stdout, b" line\nafter\n")
        .expect("write");
    t.log.write(Stream::Stderr, b"line\n").expect("write");
    assert_eq!(
        records(&rotated),
        [
            full(Stream::Stdout, b"before"),
            full(Stream::Stdout, b"half-way")
        ]
    );
    assert_eq!(
        records(&path),
        [
            full(Stream::Stdout, b"unterminated line"),
            full(Stream::Stdout, b"after"),
            full(Stream::Stderr, b"err-line"),
        ]
    );
}

#[test]
fn reopen_recreates_missing_parent_dir() {
    let mut t = open_log();
    let path = t.log.path().to_path_buf();
    std::fs::remove_dir_all(path.parent().expect("parent")).expect("remove dir");
    t.log.reopen().expect("reopen");
    t.log.write(Stream::Stdout, b"x\n").expect("write");
    assert_eq!(records(&path), [full(Stream::Stdout, b"x")]);
}

#[test]
fn records_round_trip_through_parse_line() {
    let mut t = open_log();
    t.log.set_max_line(5);
    let before = format_timestamp(std::time::SystemTime::now());
    t.log
        .write(Stream::Stdout, b"a b  c\tdefgh\n\xff\xfe\n")
        .expect("write");
    let after = format_timestamp(std::time::SystemTime::now());
    let contents = std::fs::read(t.log.path()).expect("read");
    let parsed: Vec<_> = contents
        .split_inclusive(|&b| b == b'\n')
        .map(|line| parse_line(line).expect("parse"))
        .collect();
    for (ts, ..) in &parsed {
        // Fixed-width UTC timestamps sort as text.
        assert!(before <= *ts && *ts <= after, "{before} <= {ts} <= {after}");
    }
    let got: Vec<Record> = parsed.into_iter().map(|(_, s, p, c)| (s, p, c)).collect();
    assert_eq!(
        got,
        [
            partial(Stream::Stdout, b"a b  "),
            partial(Stream::Stdout, b"c\tdef"),
            full(Stream::Stdout, b"gh"),
            full(Stream::Stdout, b"\xff\xfe"),
        ]
    );
    // Joining P records up to the next F gives back the original lines, as kubelet does.
    let mut lines = Vec::new();
    let mut line = Vec::new();
    for (_, is_partial, content) in got {
        line.extend_from_slice(&content);
        if !is_partial {
            lines.push(std::mem::take(&mut line));
        }
    }
    assert_eq!(lines, [&b"a b  c\tdefgh"[..], b"\xff\xfe"]);
}

/// Set in the child processes [`write_error_returns_err_and_keeps_data_for_the_next_file`] and
/// [`short_write_leaves_no_torn_record`] start; holds the log dir.
const CHILD_DIR_ENV: &str = "BERTH_TEST_LOGS_CHILD_DIR";

/// Runs the ignored test `name` alone in a child process with [`CHILD_DIR_ENV`] set:
/// RLIMIT_FSIZE is per process, so other tests keep writing freely.
fn run_child(name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args([name, "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .expect("run child test");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{report}");
    assert!(report.contains("1 passed"), "child did not run:\n{report}");
}

#[test]
fn write_error_returns_err_and_keeps_data_for_the_next_file() {
    run_child("write_error_child");
}

#[test]
#[ignore = "run by write_error_returns_err_and_keeps_data_for_the_next_file in its own process"]
fn write_error_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let path = dir.join("0.log");
    let mut log = LogWriter::open(&path).expect("open");
    // A file size limit of 0 fails every write with EFBIG, as a full disk fails it with ENOSPC
    // (the log is opened without following symlinks, so /dev/full cannot stand in).
    // SAFETY: plain syscall in a single-test process; SIGXFSZ would otherwise kill it.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let original = file_size_limit();
    set_file_size_limit(0);
    let err = log
        .write(Stream::Stdout, b"one\ntw")
        .expect_err("file size limit");
    assert!(
        err.to_string().contains("0.log"),
        "error without path: {err}"
    );
    log.write(Stream::Stderr, b"err\n")
        .expect_err("file size limit");
    log.write(Stream::Stdout, b"o\n")
        .expect_err("file size limit");
    set_file_size_limit(original);
    std::fs::remove_file(&path).expect("remove log");
    log.reopen().expect("reopen");
    log.write(Stream::Stdout, b"three\n").expect("write");
    log.close_stream(Stream::Stderr).expect("close stderr");
    assert_eq!(
        records(&path),
        [
            full(Stream::Stdout, b"one"),
            full(Stream::Stdout, b"two"),
            full(Stream::Stdout, b"three"),
            full(Stream::Stderr, b"err"),
        ]
    );
}

#[test]
fn short_write_leaves_no_torn_record() {
    run_child("short_write_child");
}

#[test]
#[ignore = "run by short_write_leaves_no_torn_record in its own process"]
fn short_write_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let path = dir.join("0.log");
    let mut log = LogWriter::open(&path).expect("open");
    log.write(Stream::Stdout, b"first\n").expect("write first");
    let first_len = std::fs::metadata(&path).expect("stat").len();

    // A file size limit 10 bytes past the first record: the next write is cut short.
    // SAFETY: plain syscalls in a single-test process; SIGXFSZ would otherwise kill it.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let original = file_size_limit();
    set_file_size_limit(first_len + 10);
    let err = log
        .write(Stream::Stdout, b"second line, longer than ten bytes\n")
        .expect_err("file size limit");
    assert!(err.to_string().contains("short write: 10 of"), "{err}");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        first_len,
        "torn record left"
    );

    set_file_size_limit(original);
    log.write(Stream::Stdout, b"third\n").expect("write third");
    assert_eq!(
        records(&path),
        [
            full(Stream::Stdout, b"first"),
            full(Stream::Stdout, b"second line, longer than ten bytes"),
            full(Stream::Stdout, b"third"),
        ]
    );
}

fn file_size_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    limit.rlim_cur
}

/// Sets the soft limit only: lowering and raising it back needs no privilege.
fn set_file_size_limit(bytes: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only access the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    limit.rlim_cur = bytes;
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}
