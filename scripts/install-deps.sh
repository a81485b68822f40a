#!/bin/sh
# Install every Debian 12 package that building, running and testing hoody needs.
# Idempotent; run as root.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential g++ meson ninja-build pkg-config cmake git ca-certificates \
  libfuse3-dev fuse3 \
  libsqlite3-dev sqlite3 \
  libbtrfsutil-dev btrfs-progs \
  liburing-dev libsystemd-dev \
  libspdlog-dev libfmt-dev \
  doctest-dev libcli11-dev nlohmann-json3-dev libboost-dev \
  util-linux bsdutils mount kmod procps psmisc attr acl e2fsprogs \
  bindfs python3 openssh-client openssh-server \
  libnfs-dev libnfs-utils nfs-ganesha nfs-ganesha-vfs rpcbind iproute2 \
  >/dev/null
