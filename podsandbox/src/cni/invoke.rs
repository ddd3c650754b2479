//! Running one CNI plugin executable: environment, stdin, output, timeout.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{CniError, PluginCall};

/// `PATH` for plugins: enough to find iptables, ip and friends.
const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Output beyond this is read and discarded, so a chatty plugin cannot exhaust memory.
const MAX_OUTPUT: u64 = 4 << 20;
/// Longest plugin output quoted in an error message.
const MAX_QUOTED: usize = 4096;
/// How long to wait for a killed plugin to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// The per-attachment `CNI_*` environment shared by every plugin of a list.
#[derive(Debug, Clone)]
pub(crate) struct PluginEnv {
    pub(crate) container_id: String,
    pub(crate) netns: PathBuf,
    pub(crate) ifname: String,
    pub(crate) args: String,
}

/// Runs plugins found in `bin_dirs`, each bounded by `timeout`.
pub(crate) struct PluginRunner<'a> {
    pub(crate) bin_dirs: &'a [PathBuf],
    pub(crate) timeout: Duration,
    pub(crate) env: &'a PluginEnv,
}

struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl PluginRunner<'_> {
    /// Runs the plugin of `call` with `config` on stdin; returns its stdout on success.
    pub(crate) async fn run(&self, call: &PluginCall, config: &[u8]) -> Result<Vec<u8>, CniError> {
        let path = self.find(call)?;
        tracing::debug!(
            plugin = %call.plugin,
            command = %call.command,
            container_id = %self.env.container_id,
            "running CNI plugin"
        );
        let mut child = self
            .command(&path, call)
            .spawn()
            .map_err(|source| spawn_error(call, &path, source))?;
        let group = ProcessGroup::of(&child);
        let exchanged = tokio::time::timeout(self.timeout, exchange(&mut child, config)).await;
        let output = match exchanged {
            Ok(Ok(output)) => output,
            Ok(Err(source)) => return Err(spawn_error(call, &path, source)),
            Err(_elapsed) => {
                group.kill();
                reap(&mut child).await;
                return Err(CniError::Timeout {
                    call: call.clone(),
                    timeout: self.timeout,
                });
            }
        };
        group.disarm();
        check_output(call, output)
    }

    fn find(&self, call: &PluginCall) -> Result<PathBuf, CniError> {
        self.bin_dirs
            .iter()
            .map(|dir| dir.join(&call.plugin))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(|| CniError::PluginNotFound {
                network: call.network.clone(),
                plugin: call.plugin.clone(),
                bin_dirs: self.bin_dirs.to_vec(),
            })
    }

    fn command(&self, path: &Path, call: &PluginCall) -> Command {
        let mut command = Command::new(path);
        command
            .env_clear()
            .env("CNI_COMMAND", call.command.as_str())
            .env("CNI_CONTAINERID", &self.env.container_id)
            .env("CNI_NETNS", &self.env.netns)
            .env("CNI_IFNAME", &self.env.ifname)
            .env("CNI_ARGS", &self.env.args)
            .env("CNI_PATH", join_bin_dirs(self.bin_dirs))
            .env("PATH", PLUGIN_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn join_bin_dirs(dirs: &[PathBuf]) -> OsString {
    let mut joined = OsString::new();
    for (index, dir) in dirs.iter().enumerate() {
        if index > 0 {
            joined.push(":");
        }
        joined.push(dir);
    }
    joined
}

fn spawn_error(call: &PluginCall, path: &Path, source: io::Error) -> CniError {
    CniError::Spawn {
        call: call.clone(),
        path: path.to_path_buf(),
        source,
    }
}

/// Feeds the config, collects stdout and stderr, and waits for the exit.
async fn exchange(child: &mut Child, config: &[u8]) -> io::Result<Output> {
    let stdin = child.stdin.take();
    let write = async move {
        let Some(mut stdin) = stdin else {
            return Ok(());
        };
        match stdin.write_all(config).await {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    };
    let (written, stdout, stderr) = tokio::join!(
        write,
        read_limited(child.stdout.take()),
        read_limited(child.stderr.take())
    );
    written?;
    let status = child.wait().await?;
    Ok(Output {
        status,
        stdout: stdout?,
        stderr: stderr?,
    })
}

async fn read_limited<R: AsyncRead + Unpin>(pipe: Option<R>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        (&mut pipe).take(MAX_OUTPUT).read_to_end(&mut buf).await?;
        tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await?;
    }
    Ok(buf)
}

/// Reaps a killed plugin so nothing is left behind, without hanging on it.
async fn reap(child: &mut Child) {
    if tokio::time::timeout(REAP_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(pid = ?child.id(), "killed CNI plugin not reaped in time");
    }
}

/// The plugin's process group: killed as a whole on timeout or cancellation,
/// so helpers it started (an IPAM plugin, a shell's children) die with it.
struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    fn of(child: &Child) -> ProcessGroup {
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        ProcessGroup { pgid }
    }

    /// Kills the group; valid only while the leader is not yet reaped.
    fn kill(self) {
        drop(self);
    }

    /// The leader was reaped: its id may be reused, so never signal it again.
    fn disarm(mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Some(pgid) = self.pgid.take() else {
            return;
        };
        if let Err(errno) = killpg(pgid, Signal::SIGKILL) {
            tracing::debug!(%pgid, %errno, "kill CNI plugin process group");
        }
    }
}

#[derive(Deserialize)]
struct WireError {
    code: u64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

fn check_output(call: &PluginCall, output: Output) -> Result<Vec<u8>, CniError> {
    let stderr = quote(&output.stderr);
    if output.status.success() {
        if !stderr.is_empty() {
            tracing::debug!(
                plugin = %call.plugin,
                command = %call.command,
                %stderr,
                "CNI plugin stderr"
            );
        }
        return Ok(output.stdout);
    }
    match serde_json::from_slice::<WireError>(&output.stdout) {
        Ok(error) => Err(CniError::Plugin {
            call: call.clone(),
            code: error.code,
            msg: error.msg,
            details: error.details,
        }),
        Err(_) => Err(CniError::PluginFailed {
            call: call.clone(),
            status: output.status,
            stderr,
            stdout: quote(&output.stdout),
        }),
    }
}

/// Plugin output as text for a message: trimmed and bounded.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}
