#!/bin/sh
# Builds a base image for the Containerfile from this machine's own Debian files, for CI, where
# no base image can be pulled: what distroless cc-debian12 (the Containerfile's default base)
# holds, cut down to what the given binaries load — the dynamic loader and the libraries `ldd`
# lists, the CA certificates (Debian's ca-certificates bundle), /etc/passwd and /etc/group with
# root, nobody and nonroot (65532), /etc/nsswitch.conf, an empty /tmp (1777), /var/lib and
# /home/nonroot. Unlike distroless' :nonroot it names no user: the Containerfile must.
#
# usage: build-base.sh IMAGE BINARY...
# buildah's storage is the caller's (CONTAINERS_STORAGE_CONF, BUILDAH_ISOLATION); the image is
# committed as IMAGE (e.g. localhost/smith-base:ci). Takes a second or two.
set -eu

if [ "$#" -lt 2 ]; then
  echo "usage: $0 IMAGE BINARY..." >&2
  exit 2
fi
image=$1
shift
buildah=${BUILDAH:-buildah}

ctr=$("$buildah" from scratch)
trap '"$buildah" rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$("$buildah" mount "$ctr")

mkdir -p "$root/etc/ssl/certs" "$root/var/lib" "$root/home/nonroot" "$root/root" "$root/tmp"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
chmod 0700 "$root/home/nonroot"
chown 65532:65532 "$root/home/nonroot"

# the loader and every library the binaries link, at the paths ldd names (symbolic links
# followed: the image holds the files themselves)
for bin in "$@"; do
  if [ ! -f "$bin" ]; then
    echo "$bin: no such file" >&2
    exit 1
  fi
  # a static binary needs none (ldd says so and lists nothing)
  for lib in $(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    cp -L --parents "$lib" "$root/"
  done
done

cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
EOF

"$buildah" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
"$buildah" unmount "$ctr" >/dev/null
"$buildah" commit --quiet "$ctr" "$image" >/dev/null
echo "$image"
