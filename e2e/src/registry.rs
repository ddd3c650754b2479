//! A real OCI registry (Debian's `docker-registry`, distribution v2.8) on a free loopback
//! port with its own temporary storage, stopped when dropped.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(3);
const START_ATTEMPTS: usize = 4;

/// A running `docker-registry` serving plain HTTP on `127.0.0.1:<port>`.
///
/// ```no_run
/// let registry = e2e::registry::Registry::start()?;
/// println!("push to {}", registry.host());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    storage: PathBuf,
}

/// How to start a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth with this username and password (an htpasswd file made with
    /// `htpasswd -B` from apache2-utils).
    pub basic_auth: Option<(String, String)>,
    /// Serve another registry's storage (e.g. an auth-enabled twin of an open registry).
    pub storage: Option<PathBuf>,
}

impl Registry {
    /// Starts a registry on a free port and waits (up to 15 s) until `GET /v2/` answers 200.
    pub fn start() -> io::Result<Registry> {
        Registry::start_with(&RegistryOptions::default())
    }

    /// Starts a registry with `opts`; an auth-enabled one is ready when `/v2/` answers 401.
    pub fn start_with(opts: &RegistryOptions) -> io::Result<Registry> {
        if !Path::new(REGISTRY_BIN).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{REGISTRY_BIN} not found: run `apt-get install docker-registry`"),
            ));
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(opts) {
                Ok(registry) => return Ok(registry),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("registry did not start")))
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory holding the registry's blobs and repositories.
    pub fn storage_dir(&self) -> PathBuf {
        self.storage.clone()
    }

    /// Number of `GET` requests for blob `digest` in the access log so far.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let log = fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        let needle = format!("/blobs/{digest} ");
        log.lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&needle))
            .count()
    }

    /// What the registry has written to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn start_once(opts: &RegistryOptions) -> io::Result<Registry> {
        let port = free_port()?;
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()?;
        let config = dir.path().join("config.yml");
        let storage = match &opts.storage {
            Some(s) => s.clone(),
            None => {
                let s = dir.path().join("storage");
                fs::create_dir(&s).map_err(|e| {
                    io::Error::new(e.kind(), format!("create {}: {e}", s.display()))
                })?;
                s
            }
        };
        let mut yaml = config_yaml(&storage, port);
        if let Some((user, password)) = &opts.basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            write_htpasswd(&htpasswd, user, password)?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-e2e\n    path: {}\n",
                htpasswd.display()
            ));
        }
        fs::write(&config, yaml)
            .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", config.display())))?;
        let child = spawn(&config, dir.path())?;
        let mut registry = Registry {
            child,
            port,
            dir,
            storage,
        };
        let ready_status = if opts.basic_auth.is_some() {
            b"401"
        } else {
            b"200"
        };
        registry.wait_ready(ready_status)?;
        Ok(registry)
    }

    fn wait_ready(&mut self, ready_status: &[u8; 3]) -> io::Result<()> {
        let deadline =
            Instant::now() + crate::daemon::ready_timeout().max(crate::daemon::slow(READY_TIMEOUT));
        loop {
            if let Some(status) = self.child.try_wait()? {
                let stderr = self.stderr();
                let kind = if stderr.contains("address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                let msg = format!("docker-registry exited early ({status}); stderr:\n{stderr}");
                return Err(io::Error::new(kind, msg));
            }
            if probe_v2(self.port, ready_status) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "docker-registry on {} did not answer GET /v2/ within {:?}; stderr:\n{}",
                        self.host(),
                        crate::daemon::slow(READY_TIMEOUT),
                        self.stderr()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| io::Error::new(e.kind(), format!("bind 127.0.0.1:0: {e}")))?;
    Ok(listener.local_addr()?.port())
}

fn config_yaml(storage: &Path, port: u16) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:{port}
  secret: berth-e2e-{port}
health:
  storagedriver:
    enabled: false
",
        storage = storage.display()
    )
}

fn write_htpasswd(path: &Path, user: &str, password: &str) -> io::Result<()> {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("run htpasswd (apt-get install apache2-utils): {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    fs::write(path, out.stdout)
}

fn spawn(config: &Path, dir: &Path) -> io::Result<Child> {
    let stderr_log = dir.join("stderr.log");
    let stderr = fs::File::create(&stderr_log)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", stderr_log.display())))?;
    // The access log (one line per request) goes to stdout.
    let access_log = dir.join("access.log");
    let stdout = fs::File::create(&access_log)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", access_log.display())))?;
    let mut command = Command::new(REGISTRY_BIN);
    command
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(key);
        }
    }
    command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn {REGISTRY_BIN}: {e}")))
}

/// True if `GET /v2/` on the port answers `status`.
fn probe_v2(port: u16, status: &[u8; 3]) -> bool {
    let try_get = || -> io::Result<bool> {
        let addr = ([127, 0, 0, 1], port).into();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == status)
    };
    try_get().unwrap_or(false)
}
