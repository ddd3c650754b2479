#!/usr/bin/env bash
# berth's node installer, run by the chart's DaemonSet in a privileged pod with the host's root
# filesystem at $HOST_ROOT and the host's PID namespace (to reach its systemd).
#
#   berth-install.sh install            binaries, config, unit; enable and (re)start berth.service;
#                                       wait until berth answers on its socket
#   berth-install.sh uninstall          restore kubelet, stop and disable berth, remove what
#                                       install wrote (state in /var/lib/berth stays)
#   berth-install.sh configure-kubelet  point kubelet at berth (backing up its files), restart it
#   berth-install.sh restore-kubelet    put kubelet's files back, restart it
#   berth-install.sh probe              exit 0 when the last command finished and (after install)
#                                       berth answers HTTP/2 on its socket
#
# Environment (defaults for the chart's pod):
#   HOST_ROOT=/host                 where the host's / is mounted
#   BERTH_PAYLOAD=/opt/berth/bin    berthd and berth-shim to install
#   BERTH_CHART_DIR=/berth-chart    berth.toml, berth.service, berth-tmpfiles.conf from the chart
#   BERTH_SOCKET=/run/berth/berth.sock   the CRI socket as the host sees it
#   BERTH_SYSTEMCTL=nsenter         "nsenter": systemctl in PID 1's mount namespace;
#                                   "none": write files only (no systemd: scratch roots, CI)
#   BERTH_READY_TIMEOUT=120         seconds to wait for the socket after (re)starting berth
#   KUBELET_CONFIG=/var/lib/kubelet/config.yaml          KubeletConfiguration file
#   KUBELET_FLAGS_FILE=/var/lib/kubelet/kubeadm-flags.env   kubeadm's flags file (if present)
#   KUBELET_SERVICE=kubelet.service
#   BERTH_STATUS_DIR=/run/berth-installer   where the pod keeps its status (inside the pod)
set -euo pipefail

HOST_ROOT=${HOST_ROOT:-/host}
BERTH_PAYLOAD=${BERTH_PAYLOAD:-/opt/berth/bin}
BERTH_CHART_DIR=${BERTH_CHART_DIR:-/berth-chart}
BERTH_SOCKET=${BERTH_SOCKET:-/run/berth/berth.sock}
BERTH_SYSTEMCTL=${BERTH_SYSTEMCTL:-nsenter}
BERTH_READY_TIMEOUT=${BERTH_READY_TIMEOUT:-120}
KUBELET_CONFIG=${KUBELET_CONFIG:-/var/lib/kubelet/config.yaml}
KUBELET_FLAGS_FILE=${KUBELET_FLAGS_FILE:-/var/lib/kubelet/kubeadm-flags.env}
KUBELET_SERVICE=${KUBELET_SERVICE:-kubelet.service}
BERTH_STATUS_DIR=${BERTH_STATUS_DIR:-/run/berth-installer}

BIN_DIR=/usr/local/bin
UNIT=/etc/systemd/system/berth.service
TMPFILES=/etc/tmpfiles.d/berth.conf
CONFIG=/etc/berth/berth.toml
# The first line of every config this installer writes.
MARKER="# Written by the berth Helm chart's installer; edit the chart's values, not this file."
BACKUP_SUFFIX=.pre-berth

log() { echo "berth-install: $*" >&2; }
die() { log "error: $*"; exit 1; }
host() { echo "${HOST_ROOT%/}$1"; }

host_systemctl() {
    case $BERTH_SYSTEMCTL in
        nsenter) nsenter --target 1 --mount --uts --ipc --net -- systemctl "$@" ;;
        none) log "no systemd (BERTH_SYSTEMCTL=none): skipped systemctl $*" ;;
        *) die "BERTH_SYSTEMCTL must be nsenter or none, not $BERTH_SYSTEMCTL" ;;
    esac
}

host_tmpfiles() {
    case $BERTH_SYSTEMCTL in
        nsenter) nsenter --target 1 --mount -- systemd-tmpfiles --create berth.conf ;;
        *) install -d -m 0711 "$(host /run/berth)" ;;
    esac
}

# Writes stdin to a host path atomically (temp file + rename) if its content differs.
# Exit status 0 when the file changed, 1 when it was already equal.
put_file() {
    local dest mode tmp
    dest=$(host "$1")
    mode=$2
    tmp=$(mktemp "$(dirname "$dest")/.berth-install.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest" && [[ $(stat -c %a "$dest") == "${mode#0}" ]]; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$dest"
    log "wrote $1"
    return 0
}

# Keeps a file install is about to replace (once), for uninstall to put back.
backup_once() {
    local f
    f=$(host "$1")
    if [[ -e $f && ! -e $f$BACKUP_SUFFIX ]]; then
        cp -a "$f" "$f$BACKUP_SUFFIX"
        log "kept the previous $1 as $1$BACKUP_SUFFIX"
    fi
}

# 0 when an HTTP/2 server answers on the socket: a unix connect, the client preface and an
# empty SETTINGS frame, answered by the server's SETTINGS frame (what gRPC servers send first).
# A stale socket (berthd killed) refuses the connection; a hung berthd does not answer.
socket_answers() {
    local socket
    socket=$(host "$BERTH_SOCKET")
    [[ -S $socket ]] || return 1
    perl -MIO::Socket::UNIX -e '
        $SIG{ALRM} = sub { exit 1 }; alarm 5;
        my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or exit 1;
        print $s "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", pack("CnCCN", 0, 0, 4, 0, 0);
        my $got = "";
        while (length($got) < 9) { my $n = sysread($s, $got, 9 - length($got), length($got)); exit 1 unless $n; }
        exit(ord(substr($got, 3, 1)) == 4 ? 0 : 1);
    ' "$socket"
}

wait_for_berth() {
    local deadline=$((SECONDS + BERTH_READY_TIMEOUT))
    until socket_answers; do
        ((SECONDS < deadline)) || die "berth does not answer on $BERTH_SOCKET after ${BERTH_READY_TIMEOUT}s (journalctl -u berth)"
        sleep 1
    done
    log "berth answers on $BERTH_SOCKET"
}

set_status() {
    mkdir -p "$BERTH_STATUS_DIR"
    echo "$1" >"$BERTH_STATUS_DIR/status"
}

cmd_install() {
    local changed=0 unit_changed=0 b
    for b in berthd berth-shim; do
        [[ -x $BERTH_PAYLOAD/$b ]] || die "$BERTH_PAYLOAD/$b missing from the installer image"
    done
    for f in berth.toml berth.service berth-tmpfiles.conf; do
        [[ -f $BERTH_CHART_DIR/$f ]] || die "$BERTH_CHART_DIR/$f missing (the chart mounts it)"
    done
    # A config berthd rejects must not reach the node.
    "$BERTH_PAYLOAD/berthd" --check-config --config "$BERTH_CHART_DIR/berth.toml" >/dev/null ||
        die "berthd rejects the chart's berth.toml (values.config)"
    install -d -m 0755 "$(host $BIN_DIR)" "$(host /etc/berth)" "$(host /etc/systemd/system)" "$(host /etc/tmpfiles.d)"

    # Binaries: rename over the old ones. Running shims keep their own (old) executable and
    # berthd keeps running until the restart below.
    for b in berthd berth-shim; do
        if put_file "$BIN_DIR/$b" 0755 <"$BERTH_PAYLOAD/$b"; then changed=1; fi
    done
    if [[ -f $(host $CONFIG) ]] && ! head -n1 "$(host $CONFIG)" | grep -qxF "$MARKER"; then
        backup_once "$CONFIG"
    fi
    if { echo "$MARKER"; cat "$BERTH_CHART_DIR/berth.toml"; } | put_file "$CONFIG" 0600; then changed=1; fi
    [[ -f $(host $UNIT) ]] && ! grep -q "berth-install" "$(host $UNIT)" && backup_once "$UNIT"
    if { echo "# Installed by berth-install (the berth Helm chart)."; cat "$BERTH_CHART_DIR/berth.service"; } |
        put_file "$UNIT" 0644; then unit_changed=1; fi
    if put_file "$TMPFILES" 0644 <"$BERTH_CHART_DIR/berth-tmpfiles.conf"; then unit_changed=1; fi

    host_tmpfiles
    if ((unit_changed)); then host_systemctl daemon-reload; fi
    host_systemctl enable berth.service
    if [[ $BERTH_SYSTEMCTL == none ]]; then
        set_status installed
        log "installed into $HOST_ROOT (not started: no systemd)"
        return
    fi
    if ((changed || unit_changed)) && host_systemctl --quiet is-active berth.service; then
        # KillMode=process: pods keep running; the new berthd picks them up.
        log "restarting berth.service with the new binaries or config"
        host_systemctl restart berth.service
    else
        host_systemctl start berth.service
    fi
    wait_for_berth
    set_status installed
}

cmd_uninstall() {
    cmd_restore_kubelet
    host_systemctl disable --now berth.service || true
    local f
    for f in "$BIN_DIR/berthd" "$BIN_DIR/berth-shim" "$UNIT" "$TMPFILES" "$CONFIG"; do
        rm -f "$(host "$f")"
        if [[ -e $(host "$f")$BACKUP_SUFFIX ]]; then
            mv -f "$(host "$f")$BACKUP_SUFFIX" "$(host "$f")"
            log "restored the previous $f"
        fi
    done
    rmdir "$(host /etc/berth)" 2>/dev/null || true
    host_systemctl daemon-reload
    set_status uninstalled
    log "uninstalled; berth's state in /var/lib/berth and /run/berth is left (see docs/operations.md)"
}

# Sets a top-level key of a YAML file (kubelet's config): replaces its line or appends one.
yaml_set() {
    local file=$1 key=$2 value=$3
    if grep -q "^$key:" "$file"; then
        sed -i "s|^$key:.*|$key: $value|" "$file"
    else
        echo "$key: $value" >>"$file"
    fi
}

cmd_configure_kubelet() {
    local config flags endpoint="unix://$BERTH_SOCKET" before after
    config=$(host "$KUBELET_CONFIG")
    flags=$(host "$KUBELET_FLAGS_FILE")
    [[ -f $config ]] || die "no kubelet config at $KUBELET_CONFIG (set kubelet.configFile)"
    if [[ $BERTH_SYSTEMCTL != none ]]; then wait_for_berth; fi
    before=$(cat "$config" "$flags" 2>/dev/null | md5sum)
    backup_once "$KUBELET_CONFIG"
    yaml_set "$config" containerRuntimeEndpoint "$endpoint"
    # berth supports the cgroupfs driver only; kubelet must use the same.
    yaml_set "$config" cgroupDriver cgroupfs
    if [[ -f $flags ]]; then
        # Flags win over the config file: drop kubeadm's runtime and cgroup flags.
        backup_once "$KUBELET_FLAGS_FILE"
        sed -i -E 's/ ?--(container-runtime-endpoint|cgroup-driver)(=| )[^ "]*//g' "$flags"
    fi
    after=$(cat "$config" "$flags" 2>/dev/null | md5sum)
    if [[ $before != "$after" ]]; then
        log "kubelet now uses $endpoint; restarting $KUBELET_SERVICE"
        host_systemctl restart "$KUBELET_SERVICE"
    else
        log "kubelet already uses $endpoint"
    fi
    set_status kubelet-configured
}

cmd_restore_kubelet() {
    local f restored=0
    for f in "$KUBELET_CONFIG" "$KUBELET_FLAGS_FILE"; do
        if [[ -e $(host "$f")$BACKUP_SUFFIX ]]; then
            mv -f "$(host "$f")$BACKUP_SUFFIX" "$(host "$f")"
            log "restored kubelet's $f"
            restored=1
        fi
    done
    if ((restored)); then host_systemctl restart "$KUBELET_SERVICE"; fi
    set_status kubelet-restored
}

cmd_probe() {
    local status
    status=$(cat "$BERTH_STATUS_DIR/status" 2>/dev/null) || exit 1
    case $status in
        installed | kubelet-configured)
            [[ $BERTH_SYSTEMCTL == none ]] || socket_answers ;;
        uninstalled | kubelet-restored) exit 0 ;;
        *) exit 1 ;;
    esac
}

case ${1:-} in
    install) cmd_install ;;
    uninstall) cmd_uninstall ;;
    configure-kubelet) cmd_configure_kubelet ;;
    restore-kubelet) cmd_restore_kubelet ;;
    probe) cmd_probe ;;
    socket-answers) socket_answers ;;
    *) die "usage: berth-install.sh install|uninstall|configure-kubelet|restore-kubelet|probe|socket-answers" ;;
esac
