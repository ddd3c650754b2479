#!/usr/bin/env bash
# Builds the berth Debian package from release binaries with plain dpkg-deb.
# Usage: packaging/build-deb.sh [BIN_DIR [OUT_DIR]]   (defaults: target/dist, target/deb)
# Prints the path of the .deb it wrote.
#
# Not cargo-deb: the package is two binaries, a unit, a tmpfiles entry and a conffile, which
# this script lays out in a few lines, while `cargo install cargo-deb --locked` (3.8.0) compiles
# 69 crates on every fresh CI machine (6.4 min measured on a loaded 2-core dev machine). The maintainer scripts (packaging/deb/) are what
# dh_installsystemd and dh_installtmpfiles would generate.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${1:-target/dist}
out_dir=${2:-target/deb}
for b in berthd berth-shim; do
    [[ -x $bin_dir/$b ]] || { echo "build-deb: $bin_dir/$b missing: scripts/build-release.sh" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binaries need.
glibc=$(objdump -T "$bin_dir/berthd" "$bin_dir/berth-shim" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n1)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/berth
install -D -m 0755 "$bin_dir/berthd" "$root/usr/bin/berthd"
install -D -m 0755 "$bin_dir/berth-shim" "$root/usr/bin/berth-shim"
strip --strip-unneeded "$root/usr/bin/berthd" "$root/usr/bin/berth-shim"

# The conffile: every default, commented out, so later defaults reach unchanged installs.
install -d -m 0755 "$root/etc/berth"
{
    echo "# /etc/berth/berth.toml: installed by the berth package. Every setting is commented out"
    echo "# and shows its default; uncomment a key to change it (docs/configuration.md)."
    echo
    "$bin_dir/berthd" --print-default-config |
        sed -E 's/^([a-z_"][^=]*= .*)$/# \1/'
} >"$root/etc/berth/berth.toml"
chmod 0600 "$root/etc/berth/berth.toml"
"$bin_dir/berthd" --check-config --config "$root/etc/berth/berth.toml" >/dev/null

install -D -m 0644 packaging/berth.service "$root/lib/systemd/system/berth.service"
install -D -m 0644 packaging/berth-tmpfiles.conf "$root/usr/lib/tmpfiles.d/berth.conf"
doc=$root/usr/share/doc/berth
install -D -m 0644 packaging/crictl.yaml "$doc/examples/crictl.yaml"
install -D -m 0644 packaging/deb/copyright "$doc/copyright"
install -m 0644 README.md docs/operations.md docs/configuration.md docs/metrics.md "$doc/"

install -d -m 0755 "$root/DEBIAN"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
echo /etc/berth/berth.toml >"$root/DEBIAN/conffiles"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: berth
Version: $version
Architecture: $arch
Maintainer: berth developers <berth@localhost>
Installed-Size: $installed_kb
Depends: libc6 (>= $glibc), libgcc-s1
Recommends: nftables, iproute2
Suggests: containernetworking-plugins
Section: admin
Priority: optional
Description: Kubernetes CRI container runtime
 berth implements the Kubernetes Container Runtime Interface: kubelet and
 crictl talk to berthd on /run/berth/berth.sock. Pods run without a pause
 container, each held by one small berth-shim process that outlives berthd
 restarts. This package installs berthd, berth-shim, the systemd unit
 berth.service and the configuration /etc/berth/berth.toml.
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

mkdir -p "$out_dir"
deb=$out_dir/berth_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
