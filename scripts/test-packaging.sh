#!/usr/bin/env bash
# Tests the Debian package: builds it from release binaries (packaging/build-deb.sh), installs
# it with dpkg -i, checks its files and `systemd-analyze verify` on its unit, runs the unit's
# ExecStart as systemd would and serves a pod through it (e2e test `packaging`), then purges
# the package and checks nothing of it is left.
# Usage: scripts/test-packaging.sh [BIN_DIR]   (default target/dist, from scripts/build-release.sh). Run as root.
#
# It installs the package on this machine for the duration of the test: it refuses to run where
# berth is already installed or its directories exist, so it cannot clobber a real install.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${1:-target/dist}
start=$SECONDS
step() { echo "test-packaging: $*"; }
fail() { echo "test-packaging: FAILED: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "needs root (dpkg -i)"

for p in /etc/berth /var/lib/berth /run/berth /usr/bin/berthd /usr/bin/berth-shim /lib/systemd/system/berth.service; do
    [[ ! -e $p ]] || fail "$p exists: berth is installed here; this test installs and purges the package"
done
# The purge removes the default network's bridge and nftables table: none may exist yet.
if ip link show berth0 >/dev/null 2>&1 || nft list table ip berth >/dev/null 2>&1; then
    fail "bridge berth0 or nftables table ip berth exists: a berthd with default settings runs here"
fi
if dpkg-query -W -f='${Status}' berth 2>/dev/null | grep -q installed; then
    fail "the berth package is installed here"
fi

# dpkg with its lock waited for (an apt run elsewhere on the machine holds it for a while).
dpkg_locked() {
    local out
    for _ in $(seq 60); do
        if out=$(dpkg "$@" 2>&1); then echo "$out"; return 0; fi
        grep -q 'lock' <<<"$out" || { echo "$out" >&2; return 1; }
        sleep 5
    done
    echo "$out" >&2
    return 1
}

deb=$(packaging/build-deb.sh "$bin_dir" target/deb)
step "built $deb ($(du -h "$deb" | cut -f1)) in $((SECONDS - start))s"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\|Installed-Size\):/  \1:/p'

work=$(mktemp -d /tmp/berth-pkg-test.XXXXXX)
cleanup() {
    # Installed, half-installed or config-files only: purge whatever dpkg still knows.
    if dpkg-query -W -f='${db:Status-Status}' berth 2>/dev/null | grep -qv '^not-installed$'; then
        dpkg_locked --purge berth >/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# What dpkg, systemd and tmpfiles state look like before: compared after the purge.
snapshot() {
    find /etc /lib/systemd /usr/lib/systemd /usr/lib/tmpfiles.d /var/lib/systemd /usr/bin /usr/share/doc \
        /var/lib/berth /run/berth -xdev 2>/dev/null | grep -v '^/etc/ld.so.cache$' | sort || true
}
snapshot >"$work/before"
# Every path the package holds, and which of them exist before it is installed.
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's#^\./#/#' -e 's#/$##' | grep -v '^\.\?$' >"$work/paths"
while read -r f; do if [[ -e $f || -L $f ]]; then echo "$f"; fi; done <"$work/paths" >"$work/preexisting"

dpkg_locked -i "$deb" || fail "dpkg -i $deb"
dpkg-query -W -f='${Status}\n' berth | grep -qx 'install ok installed' || fail "dpkg -i did not install berth"
for f in /usr/bin/berthd /usr/bin/berth-shim /etc/berth/berth.toml /lib/systemd/system/berth.service \
    /usr/lib/tmpfiles.d/berth.conf /usr/share/doc/berth/examples/crictl.yaml /usr/share/doc/berth/operations.md; do
    dpkg -L berth | grep -qx "$f" || fail "the package does not ship $f"
    [[ -e $f ]] || fail "$f not installed"
done
dpkg-query -W -f='${Conffiles}\n' berth | grep -q '/etc/berth/berth.toml' || fail "/etc/berth/berth.toml is not a conffile"
[[ $(stat -c %a /etc/berth/berth.toml) == 600 ]] || fail "/etc/berth/berth.toml is not mode 0600"
[[ -d /run/berth && $(stat -c %a /run/berth) == 711 ]] || fail "tmpfiles did not create /run/berth 0711"
[[ -L /etc/systemd/system/multi-user.target.wants/berth.service ]] || fail "berth.service not enabled"
/usr/bin/berthd --check-config >/dev/null || fail "the installed berthd rejects the installed config"
diff <(/usr/bin/berthd --check-config) <(/usr/bin/berthd --check-config --config /dev/null) ||
    fail "the installed config is not the defaults"
systemd-analyze verify /lib/systemd/system/berth.service || fail "systemd-analyze verify berth.service"
step "installed: files, conffile, /run/berth, enabled unit; systemd-analyze verify passes"

step "the unit's ExecStart serves a pod:"
BERTH_UNIT_FILE=/lib/systemd/system/berth.service scripts/run-ignored-e2e.sh packaging ||
    fail "the installed berth does not serve a pod through its unit's ExecStart"

dpkg_locked --purge berth || fail "dpkg --purge berth"
dpkg-query -W -f='${Status}' berth 2>/dev/null | grep -q installed && fail "berth still installed after purge"
# After the purge exactly the paths that existed before remain (shared directories like /usr/bin).
while read -r f; do if [[ -e $f || -L $f ]]; then echo "$f"; fi; done <"$work/paths" | diff "$work/preexisting" - ||
    fail "the purge left the package's paths above (> lines)"
snapshot | diff "$work/before" - || fail "the purge left the paths above (> lines)"
step "purged: no file, directory, unit enablement, conffile or state of berth left"

# The purge must never rm -rf through a mount (a container's root or volume) under berth's state:
# install again, bind-mount a directory standing for a container volume under /run/berth and
# purge. The directory's file must survive and the state must be kept.
dpkg_locked -i "$deb" >/dev/null || fail "dpkg -i $deb (second time)"
mkdir -p "$work/volume" /run/berth/rootfs/guard
echo precious >"$work/volume/data"
mount --bind "$work/volume" /run/berth/rootfs/guard
purge_out=$(dpkg_locked --purge berth 2>&1) || { umount /run/berth/rootfs/guard; fail "dpkg --purge with a mount"; }
umount /run/berth/rootfs/guard
[[ $(cat "$work/volume/data" 2>/dev/null) == precious ]] || fail "purge deleted files through a mount under /run/berth"
[[ -d /run/berth/rootfs/guard ]] || fail "purge removed /run/berth although something was mounted under it"
grep -q "keeping /var/lib/berth and /run/berth" <<<"$purge_out" || fail "purge did not say why it kept the state"
rm -rf /run/berth /var/lib/berth
snapshot | diff "$work/before" - || fail "the second purge left the paths above (> lines)"
step "purge with a mount under /run/berth keeps the state and says so (nothing deleted through the mount)"
step "ok in $((SECONDS - start))s"
