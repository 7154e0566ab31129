#!/usr/bin/env bash
# Builds the gpuscout runtime image without a registry or a container engine, then runs
# `gpuscout discover` inside it on a sample host root, and reports the image size.
#
#   scripts/build-image.sh [--binary PATH] [--sample DIR] [--work DIR] [--tag NAME]
#
#   --binary  the gpuscout binary built on the host (default target/release/gpuscout); a stripped
#             copy goes into the image
#   --sample  host root copied into the image for the smoke test (default the dual-vendor fixture)
#   --work    scratch directory: debootstrap rootfs (reused between runs), buildah storage
#             (default /var/tmp/gpuscout-image)
#   --tag     image name (default localhost/gpuscout:dev)
#
# Steps:
#  1. debootstrap a minimal Debian bookworm from the mirror apt is configured with (never a
#     hard-coded mirror);
#  2. cut it down to a distroless/cc-style base: the files of libc6, libgcc-s1 and base-files,
#     an /etc/passwd with root and nonroot (65532), /tmp;
#  3. buildah (vfs storage, chroot isolation) builds the Containerfile's `runtime-prebuilt` target
#     on that base;
#  4. `buildah run --isolation chroot` runs `gpuscout discover --root /sample --format json` inside
#     the image as uid 65532 and compares it with the same command run on the host (all but
#     `generated_at`);
#  5. prints the image size.
# Needs root (debootstrap, chroot), debootstrap, buildah and binutils (strip).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
binary=$repo/target/release/gpuscout
sample=$repo/tests/fixtures/hosts/dual-vendor
work=/var/tmp/gpuscout-image
tag=localhost/gpuscout:dev
suite=bookworm

while [[ $# -gt 0 ]]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --sample) sample=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
    esac
done

die() { echo "build-image: $*" >&2; exit 1; }
for t in debootstrap buildah strip chroot; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y --no-install-recommends debootstrap buildah binutils)"
done
[[ $(id -u) == 0 ]] || die "needs root (debootstrap and chroot isolation)"
[[ -x $binary ]] || die "no binary at $binary (cargo build --release, or pass --binary)"
[[ -d $sample ]] || die "no sample host root at $sample"

# The mirror apt uses: deb822 sources first, then the one-line format.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [[ -e $f ]] || continue
    mirror=$(awk '/^URIs:/ {print $2; exit}' "$f")
    [[ -n $mirror ]] && break
done
if [[ -z $mirror ]]; then
    mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
fi
[[ -n $mirror ]] || die "no Debian mirror found in the apt configuration"

mkdir -p "$work"
# One build at a time per work directory: a second run (another checkout's tests) would remove
# this run's images below. Wait for it instead.
exec 9>"$work/.lock"
flock 9
B=(buildah --storage-driver vfs --root "$work/storage" --runroot "$work/run")
t0=$SECONDS
step() { printf 'build-image: [%3ds] %s\n' $((SECONDS - t0)) "$*"; }

# 1. debootstrap (reused when a previous run completed it)
rootfs=$work/rootfs-$suite
if [[ ! -e $rootfs/.complete ]]; then
    step "debootstrap --variant=minbase $suite from $mirror"
    rm -rf "$rootfs"
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log: $work/debootstrap.log)"; }
    touch "$rootfs/.complete"
else
    step "reusing $rootfs"
fi

# 2. distroless/cc-style base
step "cutting a distroless-style base out of the rootfs"
base=$work/base
rm -rf "$base"
mkdir -p "$base"
# merged-/usr symlinks (bin -> usr/bin, lib -> usr/lib, ...) first, so files land behind them
tar -C "$rootfs" --no-recursion -cf - $(cd "$rootfs" && for l in bin sbin lib lib32 lib64 libx32; do [[ -L $l ]] && echo "$l"; done) \
    | tar -C "$base" -xf -
for l in "$base"/*; do
    if [[ -L $l ]]; then mkdir -p "$base/$(readlink "$l")"; fi
done
chroot "$rootfs" dpkg-query -L libc6 libgcc-s1 base-files \
    | sed -n 's|^/||p' | sort -u \
    | while read -r p; do
        # files and symlinks only; directories come with them
        if [[ -L $rootfs/$p || ( -e $rootfs/$p && ! -d $rootfs/$p ) ]]; then echo "$p"; fi
    done \
    > "$work/base-files.txt"
tar -C "$rootfs" --no-recursion -cf - -T "$work/base-files.txt" | tar -C "$base" --keep-directory-symlink -xf -
rm -rf "$base/usr/share/doc" "$base/usr/share/man" "$base/usr/share/info" "$base/usr/share/lintian" "$base/usr/share/locale"
mkdir -p "$base/etc" "$base/tmp" "$base/home/nonroot"
chmod 1777 "$base/tmp"
chown 65532:65532 "$base/home/nonroot"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$base/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$base/etc/nsswitch.conf"
[[ -e $base/lib64/ld-linux-x86-64.so.2 || -e $base/lib/ld-linux-aarch64.so.1 ]] || die "no dynamic loader in the base"

# vfs keeps full copies: drop the previous run's images and containers first
"${B[@]}" rm --all >/dev/null 2>&1 || true
"${B[@]}" rmi --all --force >/dev/null 2>&1 || true

c=$("${B[@]}" from scratch)
"${B[@]}" copy "$c" "$base/" / >/dev/null
"${B[@]}" config --os linux --arch "$(dpkg --print-architecture)" "$c"
"${B[@]}" commit -q "$c" localhost/gpuscout-base:$suite >/dev/null
"${B[@]}" rm "$c" >/dev/null

# 3. the runtime image from the Containerfile, around a stripped copy of the host binary
step "buildah bud --target runtime-prebuilt"
ctx=$work/context
rm -rf "$ctx"
mkdir -p "$ctx"
cp "$repo/Containerfile" "$ctx/Containerfile"
strip --strip-debug -o "$ctx/gpuscout" "$binary"
version=$("$binary" --version | awk '{print $2}')
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
"${B[@]}" bud -q --pull=never --isolation chroot --layers=false \
    --target runtime-prebuilt \
    --build-arg RUNTIME_IMAGE=localhost/gpuscout-base:$suite \
    --build-arg GPUSCOUT_BINARY=gpuscout \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null

labels=$("${B[@]}" inspect --format '{{.OCIv1.Config.Labels}}' "$tag")
user=$("${B[@]}" inspect --format '{{.OCIv1.Config.User}}' "$tag")
echo "build-image: labels $labels"
echo "build-image: user $user"
[[ $labels == *"org.opencontainers.image.version:$version"* ]] || die "OCI version label missing"
[[ $user == 65532:65532 ]] || die "image user is '$user', expected 65532:65532"

# 4. smoke test inside the image
step "gpuscout discover inside the image"
c=$("${B[@]}" from --pull=never "$tag")
trap '"${B[@]}" rm "$c" >/dev/null 2>&1 || true' EXIT
"${B[@]}" copy "$c" "$sample" /sample >/dev/null
"${B[@]}" run --isolation chroot --user 65532:65532 "$c" -- \
    /usr/local/bin/gpuscout discover --root /sample --format json >"$work/discover-image.json"
"$binary" discover --root "$sample" --format json >"$work/discover-host.json"
# The reports differ only in the time they were made (`generated_at`); compare the rest.
for f in "$work"/discover-{image,host}.json; do sed -i '/^  "generated_at": /d' "$f"; done
if ! cmp -s "$work/discover-image.json" "$work/discover-host.json"; then
    diff "$work/discover-host.json" "$work/discover-image.json" | head -20 >&2
    die "discover inside the image differs from discover on the host"
fi
gpus=$(grep -c '"pci_address"' "$work/discover-image.json" || true)
[[ $gpus -gt 0 ]] || die "discover inside the image found no GPU in $sample"
echo "build-image: discover in the image found $gpus GPU(s), identical to the host run"

# 5. size
size=$("${B[@]}" images --format '{{.Size}}' "$tag" | head -1)
"${B[@]}" push -q "$tag" "oci-archive:$work/gpuscout.oci.tar" >/dev/null
archive=$(du -h "$work/gpuscout.oci.tar" | cut -f1)
bin_size=$(du -h "$ctx/gpuscout" | cut -f1)
step "done: image $tag, size $size (OCI archive $archive, binary $bin_size)"
