#!/usr/bin/env bash
# berth's copy of ../shared/tools/v2lane.sh, extended with V2LANE_SYSTEMD (systemd as PID 1).
# v2lane.sh: a throwaway Debian VM with a pure cgroup v2 (unified) kernel, for
# running a project's tests on cgroup v2 from a cgroup v1 / hybrid host.
#
#   v2lane.sh build              build kernel + initramfs + root image (idempotent)
#   v2lane.sh run SCRIPT [ARG]   boot the VM, run SCRIPT in it, power off;
#                                exits with SCRIPT's exit status
#   v2lane.sh shell              same, with an interactive shell (needs a tty)
#   v2lane.sh clean              remove the state dir
#
# Guest: Debian bookworm minbase (iproute2 nftables busybox kmod procps + $V2LANE_PACKAGES),
# stock Debian kernel (linux-image-amd64), cgroup_no_v1=all, cgroup2 mounted at
# /sys/fs/cgroup (nsdelegate,memory_recursiveprot) with every controller enabled
# in the root's subtree_control, no systemd. Root is an ext4 image opened with
# snapshot=on, so every run starts from the pristine image and nothing persists.
# $V2LANE_SHARE (default: the current directory) is mounted read-write over 9p at
# /shared and is the script's working directory; host-built binaries (same
# bookworm glibc) run there as they are. SCRIPT is copied in, so it may live anywhere.
#
# Environment (all optional):
#   V2LANE_DIR        state dir (default /var/tmp/v2lane); not on 9p/overlay itself
#   V2LANE_SHARE      host dir shared at /shared (default: $PWD)
#   V2LANE_ACCEL      auto|kvm|tcg. auto = kvm only when the CPU has vmx/svm and
#                     /dev/kvm is usable, else tcg (software, multi-threaded)
#   V2LANE_MEM        MiB (2048)       V2LANE_SMP   vCPUs (nproc, at most 4)
#   V2LANE_TIMEOUT    seconds for the whole VM run (1800)
#   V2LANE_MODULES    guest modules to load before SCRIPT (space separated, ~0.2 s
#                     each under TCG). overlay, nf_tables, veth, bridge, vxlan...
#                     autoload on first use; br_netfilter does not.
#   V2LANE_PASSENV    host variable names to export into the guest (space separated)
#   V2LANE_9P_CACHE   9p cache mode of /shared: mmap (default; like none, plus writable
#                     shared mmap), none, or loose (not advised: 128 MB write 30 s vs 1 s)
#   V2LANE_PACKAGES   extra Debian packages for the root image (comma separated; build)
#   V2LANE_MIRROR     Debian mirror for debootstrap (default: the first URI of the host's apt sources)
#   V2LANE_KERNEL_PKG kernel metapackage from the host's apt sources (linux-image-amd64)
#   V2LANE_DISK_MB    root image size in MiB (4096, sparse; writes go to a throwaway overlay)
#   V2LANE_DEBUG=1    verbose kernel log, shell trace of the guest init
#   V2LANE_SYSTEMD=1  run: boot systemd as PID 1 (needs systemd,dbus in V2LANE_PACKAGES); SCRIPT
#                     runs as the oneshot unit v2lane.service after dbus.service, with nothing
#                     else of a normal boot (no default.target); the guest's own init is used
#                     otherwise
#   V2LANE_SUITE      Debian suite of the root (bookworm; match the host that builds
#                     the binaries, for glibc)   V2LANE_CPU  qemu -cpu (max; host on kvm)
#   V2LANE_BOOT       pvh (default: the uncompressed vmlinux) or bzimage
#   V2LANE_BIOS       qboot (default when installed) or seabios
# The script's stdout+stderr arrive on this command's stdout (guest ttyS0); the
# kernel console (ttyS1) goes to $V2LANE_DIR/last-console.log, and its tail is
# printed when the VM dies without a result (exit status 125).
#
# build needs root (debootstrap, chroot depmod, mke2fs -d keeps ownership) and
# Debian apt sources (qemu-system-x86, debootstrap, kernel, busybox-static);
# run does not need root. No network inside the guest (tests use netns/veth).
#
# KVM vs TCG: with real VT-x/AMD-V a run should boot in 1-2 s (not measured); without it
# (this includes a /dev/kvm provided by PVM, the pagetable-based nested KVM, on
# which a stock kernel crawls and `-cpu host` aborts on MSR 0x10a) QEMU's TCG
# is used: ~5 s to the command, ~6-7 s round trip, and every fork+exec in the
# guest costs ~50 ms (vs ~3 ms native), so spawn-heavy suites run ~20x slower.
set -euo pipefail

DIR=${V2LANE_DIR:-/var/tmp/v2lane}
host_mirror() {  # first deb URI of the host's apt sources (deb822 or one-line format)
  { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'; } | head -1 || true
}
MIRROR=${V2LANE_MIRROR:-$(host_mirror)}
SUITE=${V2LANE_SUITE:-bookworm}
PKGS="iproute2,nftables,busybox,kmod,procps${V2LANE_PACKAGES:+,$V2LANE_PACKAGES}"
DISK_MB=${V2LANE_DISK_MB:-4096}
KPKG=${V2LANE_KERNEL_PKG:-linux-image-amd64}
# Hardware driver trees that a test VM never needs (saves ~200 MB of the 390 MB).
PRUNE="sound drivers/gpu drivers/media drivers/infiniband drivers/iio drivers/staging
 drivers/usb drivers/hid drivers/input drivers/comedi drivers/video drivers/hwmon
 drivers/platform drivers/mtd drivers/target drivers/bluetooth drivers/isdn drivers/mmc
 drivers/scsi drivers/net/wireless drivers/net/ethernet drivers/net/can
 net/wireless net/mac80211 net/bluetooth"
# Modules the initramfs loads (with their dependencies) to reach the root fs and shares.
# crc32c_generic: ext4 asks for crc32c through the crypto API, which modules.dep does not list.
INITRD_MODS="virtio_pci virtio_blk crc32c_generic ext4 9p 9pnet_virtio virtio_rng"

log() { printf 'v2lane: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

host_deps() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v mke2fs >/dev/null || missing+=(e2fsprogs)
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# ---------------------------------------------------------------- guest init
# Under TCG every exec of a dynamically linked program costs ~50-100 ms, so the
# mounting is done by the initramfs's static busybox, and the real init (bash)
# runs as few programs as it can.

# initramfs /init: load virtio + ext4 + 9p modules, mount the root image and
# everything under it, switch_root to /sbin/v2lane-init.
write_initrd_init() {
  cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# stdout/stderr = ttyS0 (the host's stdout) from here on; held open across
# switch_root so that -onlcr sticks (a serial tty's termios reset on last close).
exec </dev/null >/dev/ttyS0 2>&1
stty -F /dev/ttyS0 -onlcr
fail() { echo "v2lane initrd: $*"; echo "v2lane initrd: $*" >/dev/console; poweroff -f; sleep 5; }
modprobe -a $(cat /modules.load) || echo "v2lane initrd: some modules failed to load"
i=0; while [ ! -b /dev/vda ] && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
R=/newroot
mkdir -p $R
mount -t ext4 -o rw /dev/vda $R || fail "cannot mount /dev/vda"
mount --move /dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm $R/dev/mqueue
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $R/dev/shm
mount -t mqueue mqueue $R/dev/mqueue
ln -sf /proc/self/fd $R/dev/fd; ln -sf /proc/self/fd/0 $R/dev/stdin; ln -sf /proc/self/fd/1 $R/dev/stdout; ln -sf /proc/self/fd/2 $R/dev/stderr
umount /proc /sys
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup || fail "cannot mount cgroup2"
mount -t securityfs securityfs $R/sys/kernel/security 2>/dev/null
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
mount -t bpf bpf $R/sys/fs/bpf 2>/dev/null
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs $R/run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $R/tmp
mkdir -p $R/v2lane $R/shared
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none v2ctl $R/v2lane || fail "cannot mount 9p v2ctl"
. $R/v2lane/boot.env
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=${V2LANE_9P_CACHE:-mmap} shared $R/shared || fail "cannot mount 9p shared"
mount --make-rshared $R
echo v2lane >$R/proc/sys/kernel/hostname
ip link set lo up
exec switch_root $R /sbin/v2lane-init
EOF
  chmod 755 "$1"
}

# PID 1 of the real root: modules, cgroup controllers, run /v2lane/cmd with its
# output on ttyS0 (the host's stdout), record the status, power off.
write_guest_init() {
  cat >"$1" <<'EOF'
#!/bin/bash
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root TERM=${TERM:-dumb} LANG=C.UTF-8
. /v2lane/boot.env
. /v2lane/env
[ "${V2LANE_DEBUG:-0}" = 1 ] && set -x
[ -n "$V2LANE_MODULES" ] && { modprobe -a $V2LANE_MODULES || echo "v2lane: modprobe -a $V2LANE_MODULES failed"; }
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control; done
read up idle </proc/uptime
read kver </proc/sys/kernel/osrelease
echo "v2lane: guest up after ${up}s, kernel $kver, cgroup2: $(cat /sys/fs/cgroup/cgroup.controllers)" >&2
if [ -e /v2lane/systemd ] && [ ! -e /v2lane/interactive ]; then
  # systemd as PID 1, starting only dbus and the command's unit (no default.target).
  mkdir -p /run/systemd/system
  cat >/run/systemd/system/v2lane.service <<'UNIT'
[Unit]
Description=v2lane command
DefaultDependencies=no
Wants=dbus.socket dbus.service
After=dbus.socket dbus.service
[Service]
Type=oneshot
Environment=HOME=/root LANG=C.UTF-8 TERM=dumb
ExecStart=/sbin/v2lane-systemd-cmd
StandardInput=null
StandardOutput=null
StandardError=null
UNIT
  exec /lib/systemd/systemd --unit=v2lane.service --log-target=kmsg --show-status=no </dev/null >/dev/null 2>&1
fi
cd /shared
if [ -e /v2lane/interactive ]; then
  stty -F /dev/ttyS0 onlcr; setsid -c -w bash -i </dev/ttyS0 >/dev/ttyS0 2>&1; rc=$?
else
  /v2lane/cmd; rc=$?
fi
echo "$rc" >/v2lane/rc
sync
cd /
umount /shared /v2lane 2>/dev/null
echo o >/proc/sysrq-trigger
sleep 10
EOF
  chmod 755 "$1"
}

# The command under systemd (v2lane.service): output to ttyS0, status to /v2lane/rc, power off.
write_systemd_cmd() {
  cat >"$1" <<'EOF'
#!/bin/bash
exec </dev/null >/dev/ttyS0 2>&1
stty -F /dev/ttyS0 -onlcr 2>/dev/null
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /v2lane/env
read up idle </proc/uptime
echo "v2lane: systemd $(systemctl is-system-running 2>/dev/null) after ${up}s" >&2
cd /shared
/v2lane/cmd; rc=$?
echo "$rc" >/v2lane/rc
sync
cd /
echo o >/proc/sysrq-trigger
sleep 10
EOF
  chmod 755 "$1"
}

# ---------------------------------------------------------------- build
cmd_build() {
  need_root; host_deps
  local t0 t; t0=$(now)
  mkdir -p "$DIR"
  # Kernel: the metapackage ($KPKG) names the versioned image package.
  local kpkg kver R=$DIR/rootfs
  kpkg=$(apt-cache depends "$KPKG" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}') || true
  if [ -z "$kpkg" ]; then apt-get update -qq; kpkg=$(apt-cache depends "$KPKG" | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); fi
  [ -n "$kpkg" ] || die "cannot resolve $KPKG to a linux-image-<version> package"
  kver=${kpkg#linux-image-}

  # Root file system.
  if [ ! -e "$R/.v2lane-debootstrap-ok" ]; then
    t=$(now)
    rm -rf "$R"
    log "debootstrap --variant=minbase --include=$PKGS $SUITE"
    debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$R" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 \
      || { tail -20 "$DIR/debootstrap.log" >&2; die "debootstrap failed (log: $DIR/debootstrap.log)"; }
    chroot "$R" apt-get clean
    rm -rf "$R/var/lib/apt/lists/"*
    touch "$R/.v2lane-debootstrap-ok"
    log "debootstrap done in $(since "$t")s"
  fi

  # Kernel image, busybox-static for the initramfs, modules into the root.
  local K=$DIR/kernel/$kver
  if [ ! -e "$K/vmlinuz" ] || [ ! -e "$R/lib/modules/$kver/modules.dep" ]; then
    t=$(now)
    rm -rf "$DIR/dl" "$K"; mkdir -p "$DIR/dl/k" "$DIR/dl/bb" "$K"
    (cd "$DIR/dl" && apt-get download -q "$kpkg" busybox-static >/dev/null 2>&1) \
      || (apt-get update -qq && cd "$DIR/dl" && apt-get download -q "$kpkg" busybox-static >/dev/null 2>&1) \
      || die "apt-get download $kpkg busybox-static failed"
    dpkg-deb -x "$DIR"/dl/linux-image-*.deb "$DIR/dl/k"
    dpkg-deb -x "$DIR"/dl/busybox-static_*.deb "$DIR/dl/bb"
    cp "$DIR/dl/k/boot/vmlinuz-$kver" "$K/vmlinuz"
    cp "$DIR/dl/k/boot/config-$kver" "$K/config"
    cp "$DIR/dl/bb/bin/busybox" "$K/busybox"
    rm -rf "$R/lib/modules"; mkdir -p "$R/lib/modules"
    cp -a "$DIR/dl/k/lib/modules/$kver" "$R/lib/modules/"
    for p in $PRUNE; do rm -rf "$R/lib/modules/$kver/kernel/$p"; done
    chroot "$R" depmod -a "$kver"
    rm -rf "$DIR/dl"
    # Uncompressed ELF vmlinux for a PVH boot: skips the bzImage decompressor,
    # which costs ~5 s under TCG. Needs CONFIG_PVH=y; else run uses the bzImage.
    if grep -q '^CONFIG_PVH=y' "$K/config"; then
      local off
      off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$K/vmlinuz" | head -1 | cut -d: -f1) || true
      if [ -n "$off" ]; then tail -c +$((off + 1)) "$K/vmlinuz" | xz -dcq >"$K/vmlinux.tmp" 2>/dev/null || true
      else
        off=$(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$K/vmlinuz" | head -1 | cut -d: -f1) || true
        [ -n "$off" ] && command -v zstd >/dev/null && { tail -c +$((off + 1)) "$K/vmlinuz" | zstd -dcq >"$K/vmlinux.tmp" 2>/dev/null || true; }
      fi
      if [ -s "$K/vmlinux.tmp" ] && [ "$(head -c4 "$K/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
        mv "$K/vmlinux.tmp" "$K/vmlinux"
      else
        rm -f "$K/vmlinux.tmp"; log "no vmlinux extracted: booting the bzImage (slower)"
      fi
    fi
    log "kernel $kver fetched in $(since "$t")s"
  fi
  ln -sfn "$kver" "$DIR/kernel/current"
  echo v2lane >"$R/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 v2lane\n::1 localhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
  : >"$R/etc/fstab"
  [ -s "$R/etc/resolv.conf" ] || : >"$R/etc/resolv.conf"
  write_guest_init "$R/sbin/v2lane-init"
  write_systemd_cmd "$R/sbin/v2lane-systemd-cmd"

  # initramfs: static busybox + the modules (and deps) for virtio, ext4, 9p.
  t=$(now)
  local I=$DIR/initrd.d M=$R/lib/modules/$kver
  rm -rf "$I"; mkdir -p "$I/bin" "$I/proc" "$I/sys" "$I/dev" "$I/lib/modules/$kver"
  cp "$K/busybox" "$I/bin/busybox"
  write_initrd_init "$I/init"
  local m f dep; : >"$I/modules.load"
  for m in $INITRD_MODS; do
    f=$(awk -v m="$m" -F: '{n=$1; sub(/.*\//,"",n); sub(/\.ko(\.[a-z]+)?$/,"",n); gsub(/-/,"_",n); if (n==m) {print $0; exit}}' "$M/modules.dep")
    [ -n "$f" ] || { grep -q "/${m//_/[_-]}\.ko" "$M/modules.builtin" && continue; die "module $m not in $kver"; }
    for dep in ${f%%:*} ${f#*:}; do
      mkdir -p "$I/lib/modules/$kver/$(dirname "$dep")"
      cp "$M/$dep" "$I/lib/modules/$kver/$dep"
    done
    echo "$m" >>"$I/modules.load"
  done
  cp "$M/modules.dep" "$M/modules.alias" "$M/modules.builtin" "$I/lib/modules/$kver/" 2>/dev/null || true
  (cd "$I" && find . | "$K/busybox" cpio -o -H newc 2>/dev/null | gzip -1 >"$K/initrd.img")
  log "initramfs built in $(since "$t")s ($(du -h "$K/initrd.img" | cut -f1))"

  # Root image: ext4 populated from the directory (no loop mount needed).
  t=$(now)
  rm -f "$DIR/root.img.tmp"
  mke2fs -q -F -t ext4 -L v2root -E root_owner=0:0 -d "$R" "$DIR/root.img.tmp" "${DISK_MB}M" >/dev/null
  mv "$DIR/root.img.tmp" "$DIR/root.img"
  log "root image built in $(since "$t")s ($(du -sh "$R" | cut -f1) used)"
  log "build done in $(since "$t0")s: $DIR (kernel $kver)"
}

# ---------------------------------------------------------------- run
pick_accel() {
  case ${V2LANE_ACCEL:-auto} in
    kvm|tcg) echo "$V2LANE_ACCEL";;
    auto)
      # Only real VT-x/AMD-V KVM. A /dev/kvm without vmx/svm (e.g. PVM nested
      # "KVM") runs a stock kernel pathologically slowly or not at all.
      if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then echo kvm; else echo tcg; fi;;
    *) die "V2LANE_ACCEL must be auto, kvm or tcg";;
  esac
}

cmd_run() {
  local interactive=0
  if [ "${1:-}" = --interactive ]; then interactive=1; shift; fi
  local script=${1:-}
  [ $interactive = 1 ] || { [ -n "$script" ] && [ -f "$script" ] || die "usage: v2lane.sh run SCRIPT [ARGS...]"; shift; }
  [ -e "$DIR/root.img" ] && [ -e "$DIR/kernel/current/vmlinuz" ] || die "no VM built in $DIR: run 'v2lane.sh build' first"
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run 'v2lane.sh build'"
  local share=${V2LANE_SHARE:-$PWD}; share=$(cd "$share" && pwd)
  local accel cpu smp mem; accel=$(pick_accel)
  smp=${V2LANE_SMP:-$(nproc)}; [ "$smp" -le 4 ] || smp=4
  mem=${V2LANE_MEM:-2048}
  if [ "$accel" = kvm ]; then cpu=${V2LANE_CPU:-host}; else cpu=${V2LANE_CPU:-max}; fi
  local accel_opt=$accel; [ "$accel" = tcg ] && accel_opt="tcg,thread=multi"
  local ctl; mkdir -p "$DIR/runs"; ctl=$(mktemp -d "$DIR/runs/run.XXXXXX")
  trap "rm -rf '$ctl'" EXIT
  # The control dir (9p at /v2lane): command wrapper, environment, exit status.
  # boot.env is read by the initramfs's busybox sh too: plain words only.
  local cache=${V2LANE_9P_CACHE:-mmap} mods=${V2LANE_MODULES:-}
  [[ $cache =~ ^(none|mmap|loose|fscache)$ ]] || die "V2LANE_9P_CACHE: none, mmap or loose"
  [[ $mods =~ ^[A-Za-z0-9_\ -]*$ ]] || die "V2LANE_MODULES: module names only"
  printf 'V2LANE_DEBUG=%s\nV2LANE_MODULES="%s"\nV2LANE_9P_CACHE=%s\n' "$([ "${V2LANE_DEBUG:-0}" = 1 ] && echo 1 || echo 0)" "$mods" "$cache" >"$ctl/boot.env"
  local v; : >"$ctl/env"
  for v in ${V2LANE_PASSENV:-}; do if [ -n "${!v+x}" ]; then printf 'export %s=%q\n' "$v" "${!v}" >>"$ctl/env"; fi; done
  [ "${V2LANE_SYSTEMD:-0}" = 1 ] && touch "$ctl/systemd"
  if [ $interactive = 1 ]; then touch "$ctl/interactive"; else
    cp "$script" "$ctl/script"; chmod 755 "$ctl/script"
    { echo '#!/bin/bash'; printf 'exec /v2lane/script'; printf ' %q' "$@"; echo; } >"$ctl/cmd"; chmod 755 "$ctl/cmd"
  fi
  local append="console=ttyS1 root=/dev/vda rw panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 mitigations=off tsc=reliable"
  [ "${V2LANE_DEBUG:-0}" = 1 ] || append+=" quiet loglevel=4"
  [ "$accel" = tcg ] && append+=" nokaslr"
  local kernel=$DIR/kernel/current/vmlinuz
  [ "${V2LANE_BOOT:-pvh}" = pvh ] && [ -e "$DIR/kernel/current/vmlinux" ] && kernel=$DIR/kernel/current/vmlinux
  local qemu=(qemu-system-x86_64 -nodefaults -no-user-config -no-reboot
    -machine q35 -accel "$accel_opt" -cpu "$cpu" -smp "$smp" -m "$mem"
    -display none -monitor none -chardev stdio,id=out,signal=$([ $interactive = 1 ] && echo off || echo on) -serial chardev:out
    -serial file:"$ctl/console.log"
    -kernel "$kernel" -initrd "$DIR/kernel/current/initrd.img" -append "$append"
    -drive file="$DIR/root.img",if=virtio,format=raw,snapshot=on,cache=unsafe,aio=threads
    -virtfs local,path="$ctl",mount_tag=v2ctl,security_model=none,id=v2ctl
    -virtfs local,path="$share",mount_tag=shared,security_model=none,id=shared
    -device virtio-rng-pci)
  [ -e /usr/share/qemu/qboot.rom ] && [ "${V2LANE_BIOS:-qboot}" = qboot ] && qemu+=(-bios /usr/share/qemu/qboot.rom)
  local t0 rc=0; t0=$(now)
  log "boot: accel=$accel cpu=$cpu smp=$smp mem=${mem}M share=$share"
  if [ $interactive = 1 ]; then
    "${qemu[@]}" || rc=$?
  else
    timeout --foreground -k 10 "${V2LANE_TIMEOUT:-1800}" "${qemu[@]}" </dev/null || rc=$?
  fi
  cp "$ctl/console.log" "$DIR/last-console.log" 2>/dev/null || true
  if [ -s "$ctl/rc" ]; then
    rc=$(cat "$ctl/rc")
    log "guest command exited $rc; VM round trip $(since "$t0")s"
  else
    if [ "$rc" = 124 ]; then log "timed out after ${V2LANE_TIMEOUT:-1800}s (V2LANE_TIMEOUT)"; fi
    log "VM ended without a result (qemu/timeout status $rc) after $(since "$t0")s; kernel log tail ($DIR/last-console.log):"
    tail -n 30 "$ctl/console.log" >&2 || true
    rc=125
  fi
  rm -rf "$ctl"
  return "$rc"
}

case ${1:-} in
  build) shift; cmd_build "$@";;
  run) shift; cmd_run "$@";;
  shell) shift; cmd_run --interactive;;
  clean) rm -rf "$DIR";;
  *) sed -n '2,12p' "$0" >&2; exit 2;;
esac
