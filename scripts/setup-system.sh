#!/usr/bin/env bash
# Install the Debian packages the lab runs (real servers), only those missing. Needs root or passwordless sudo.
set -euo pipefail
declare -A wanted=(
  [redis-server]=redis-server
  [haproxy]=haproxy
  [/usr/lib/postgresql/15/bin/postgres]=postgresql-15
  [shellcheck]=shellcheck
  [redis-cli]=redis-tools
  [openssl]=openssl
  # real nodes (issue 15): container runtime, CNI plugins, image building, site network namespaces
  [containerd]=containerd
  [runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [umoci]=umoci
  [mmdebstrap]=mmdebstrap
  # images with pip inside (tests/lab/images.py): pip in the chroot trusts the host's CA bundle
  [update-ca-certificates]=ca-certificates
  [busybox]=busybox-static
  [iptables]=iptables
  [ip]=iproute2
  [conntrack]=conntrack
  # LB hosts (issue 16): Ansible reaches them over SSH and becomes root with sudo; keepalived holds the VIP
  [/usr/sbin/sshd]=openssh-server
  [ssh]=openssh-client
  [sudo]=sudo
  [/usr/sbin/keepalived]=keepalived
)
missing=()
for binary in "${!wanted[@]}"; do
  if [[ $binary == /* ]]; then [[ -x $binary ]] || missing+=("${wanted[$binary]}")
  else command -v "$binary" >/dev/null || missing+=("${wanted[$binary]}"); fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "system packages: all present"
  exit 0
fi
if [[ $(id -u) -eq 0 ]]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
  echo "setup error: missing Debian packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "system packages: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's packages start system-wide services where an init system runs; the lab runs its own instances.
for service in redis-server haproxy postgresql ssh keepalived; do
  "${sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
done
