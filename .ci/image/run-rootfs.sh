#!/bin/sh
# Runs a command from an image's unpacked root file system the way a container runtime runs a
# container with a read-only root (Kubernetes' readOnlyRootFilesystem, ECS'
# ReadonlyRootFilesystem, `docker run --read-only`), for CI, where no container can run: the
# root is mounted read-only, the volumes are the given host directories, /proc and a minimal
# /dev are mounted, and the command runs under chroot as the given user with no supplementary
# groups. The environment is the caller's: give it the image's.
#
# usage: run-rootfs.sh ROOTFS UID:GID [HOST_DIR:PATH[:ro]]... -- COMMAND [ARG]...
# As root. Everything happens in a mount namespace of its own, so every mount goes away when the
# command ends, however it ends, and none is ever seen outside. Missing mount points are made
# in ROOTFS first, as a runtime does. The command's process is this one (exec): its exit status
# and signals are the command's.
set -eu

if [ "${RUN_ROOTFS_UNSHARED:-}" != 1 ]; then
  RUN_ROOTFS_UNSHARED=1 exec unshare --mount --propagation private sh "$0" "$@"
fi
unset RUN_ROOTFS_UNSHARED

if [ "$#" -lt 4 ]; then
  echo "usage: $0 ROOTFS UID:GID [HOST_DIR:PATH[:ro]]... -- COMMAND [ARG]..." >&2
  exit 2
fi
root=$1
user=$2
shift 2

mkdir -p "$root/proc" "$root/dev"
mount --bind "$root" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,noexec,mode=0755,size=64k tmpfs "$root/dev"
for node in null zero full random urandom tty; do
  : >"$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"

while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  src=${1%%:*}
  dst=${1#*:}
  ro=
  case $dst in *:ro)
    dst=${dst%:ro}
    ro=1
    ;;
  esac
  mkdir -p "$root$dst"
  mount --bind "$src" "$root$dst"
  if [ -n "$ro" ]; then mount -o remount,bind,ro "$root$dst"; fi
  shift
done
if [ "$#" -lt 2 ]; then
  echo "$0: no command after --" >&2
  exit 2
fi
shift

mount -o remount,bind,ro "$root"
exec chroot --userspec="$user" "$root" "$@"
