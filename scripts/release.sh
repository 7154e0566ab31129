#!/usr/bin/env bash
# Cuts a gpuscout release: version bump, CHANGELOG section, release commit and tag, image tags,
# chart package. Everything up to the push happens locally; nothing leaves the machine without
# --push.
#
#   scripts/release.sh VERSION [--chart-version V] [--registry REG] [--binary PATH]
#                              [--no-image] [--push] [--dry-run] [--date YYYY-MM-DD]
#
#   VERSION          the new gpuscout version, semver without a leading v (0.2.0, 1.0.0-rc.1)
#   --chart-version  the chart's own version (default: VERSION when it is above the chart's
#                    current version, else the current chart version with the patch raised)
#   --registry       where the image and the chart go (default ghcr.io/gpuscout); the image is
#                    REG/gpuscout:VERSION (+ :MAJOR.MINOR for a final release), the chart
#                    oci://REG/charts/gpuscout:CHART_VERSION
#   --binary         the release binary for the image (default target/release/gpuscout, built
#                    with `cargo build --release --locked` when missing)
#   --no-image       skip the image build (the tags are still printed)
#   --push           push the image tags, the chart and the git tag (needs credentials)
#   --dry-run        work in a throwaway git worktree: the checkout is not changed, the chart
#                    package and the release notes land in dist/
#   --date           release date for the CHANGELOG (default today, UTC)
#
# Steps:
#  1. checks: VERSION is semver and above Cargo.toml's version, the tree is clean, the
#     CHANGELOG has an `## [Unreleased]` section with content;
#  2. Cargo.toml `version` (and Cargo.lock), Chart.yaml `version` and `appVersion`;
#  3. CHANGELOG: `## [Unreleased]` becomes `## [VERSION] - DATE`, a new empty one goes on top;
#     its text is written to dist/release-notes-VERSION.md;
#  4. commit `release VERSION` and annotated tag vVERSION;
#  5. image: scripts/build-image.sh (registry-free buildah build), tagged with every tag;
#  6. chart: `helm package` (or the Helm SDK of the test venv) into dist/;
#  7. --push: buildah push of every tag, `helm push` of the chart, `git push` of the tag.
# Exits 0 with the list of what it made and the push commands; 1 on a failed check; 2 on usage.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d' >&2; exit 2; }
die() { echo "release: $*" >&2; exit 1; }

version="" chart_version="" registry=ghcr.io/gpuscout binary="" image=1 push=0 dry=0
date=$(date -u +%F)
while [[ $# -gt 0 ]]; do
    case $1 in
        --chart-version) chart_version=${2:?}; shift 2 ;;
        --registry) registry=${2:?}; shift 2 ;;
        --binary) binary=${2:?}; shift 2 ;;
        --no-image) image=0; shift ;;
        --push) push=1; shift ;;
        --dry-run) dry=1; shift ;;
        --date) date=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        -*) echo "release: unknown option $1" >&2; usage ;;
        *) [[ -z $version ]] || usage; version=$1; shift ;;
    esac
done
[[ -n $version ]] || usage
(( dry && push )) && die "--dry-run and --push exclude each other"

semver='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$'
[[ $version =~ $semver ]] || die "VERSION $version is not semver (MAJOR.MINOR.PATCH[-pre])"
[[ $date =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || die "--date $date is not YYYY-MM-DD"

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
git rev-parse --git-dir >/dev/null 2>&1 || die "$repo is not a git checkout"
[[ -z $(git status --porcelain --untracked-files=no) ]] || die "the working tree has uncommitted changes"

# `sort -V` puts 1.0.0-rc.1 after 1.0.0; compare the numeric parts, then a release beats a pre-release.
version_gt() {
    local a=$1 b=$2
    [[ $a == "$b" ]] && return 1
    local an=${a%%-*} bn=${b%%-*}
    if [[ $an != "$bn" ]]; then
        [[ $(printf '%s\n%s\n' "$an" "$bn" | sort -V | tail -1) == "$an" ]]
        return
    fi
    [[ $a != *-* ]] && return 0
    [[ $b != *-* ]] && return 1
    [[ $(printf '%s\n%s\n' "${a#*-}" "${b#*-}" | sort -V | tail -1) == "${a#*-}" ]]
}

cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
chart_current=$(sed -n 's/^version: *\(.*\)$/\1/p' charts/gpuscout/Chart.yaml | head -1)
version_gt "$version" "$cargo_version" || die "VERSION $version is not above Cargo.toml's $cargo_version"
if [[ -z $chart_version ]]; then
    if version_gt "$version" "$chart_current"; then
        chart_version=$version
    else
        IFS=. read -r ma mi pa <<<"${chart_current%%-*}"
        chart_version=$ma.$mi.$((pa + 1))
    fi
fi
[[ $chart_version =~ $semver ]] || die "chart version $chart_version is not semver"
version_gt "$chart_version" "$chart_current" || die "chart version $chart_version is not above $chart_current"

unreleased=$(awk '/^## \[Unreleased\]/{f=1; next} /^## \[/{f=0} f' CHANGELOG.md)
grep -q '[^[:space:]]' <<<"$unreleased" || die "CHANGELOG.md has no entries under ## [Unreleased]"
git rev-parse -q --verify "refs/tags/v$version" >/dev/null && die "tag v$version exists already"

dist=$repo/dist
mkdir -p "$dist"
work=$repo
if (( dry )); then
    work=$(mktemp -d "${TMPDIR:-/tmp}/gpuscout-release.XXXXXX")
    # The tag lives in the shared repository: a dry run takes it away again.
    trap 'git -C "$repo" tag -d "v$version" >/dev/null 2>&1 || true
          git -C "$repo" worktree remove --force "$work" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
    git worktree add --quiet --detach "$work" HEAD
fi
cd "$work"

# 2. versions
sed -i "0,/^version = \".*\"$/s//version = \"$version\"/" Cargo.toml
# Cargo.lock: the `version` line right after `name = "gpuscout"`.
sed -i "/^name = \"gpuscout\"$/{n;s/^version = \".*\"$/version = \"$version\"/}" Cargo.lock
sed -i "s/^version: .*/version: $chart_version/; s/^appVersion: .*/appVersion: \"$version\"/" \
    charts/gpuscout/Chart.yaml
grep -q "^version = \"$version\"$" Cargo.toml || die "Cargo.toml version not updated"
grep -A1 '^name = "gpuscout"$' Cargo.lock | grep -q "^version = \"$version\"$" || die "Cargo.lock not updated"

# 3. changelog
awk -v v="$version" -v d="$date" '
    /^## \[Unreleased\]/ && !done { print "## [Unreleased]\n\n## [" v "] - " d; done = 1; next }
    { print }' CHANGELOG.md >CHANGELOG.md.new
mv CHANGELOG.md.new CHANGELOG.md
notes=$dist/release-notes-$version.md
{ echo "# gpuscout $version ($date)"; echo; printf '%s\n' "$unreleased" | sed '/./,$!d'; } >"$notes"

# 4. commit and tag (author from git config; a throwaway identity only if none is set)
git -c user.name="$(git config user.name || echo gpuscout-release)" \
    -c user.email="$(git config user.email || echo release@gpuscout.invalid)" \
    commit --quiet -am "release $version" -m "Chart $chart_version. Notes: CHANGELOG.md, section $version."
git -c user.name="$(git config user.name || echo gpuscout-release)" \
    -c user.email="$(git config user.email || echo release@gpuscout.invalid)" \
    tag -a "v$version" -m "gpuscout $version"
commit=$(git rev-parse --short=12 HEAD)

# 5. image tags
tags=("$registry/gpuscout:$version")
if [[ $version != *-* ]]; then
    IFS=. read -r ma mi _ <<<"$version"
    tags+=("$registry/gpuscout:$ma.$mi")
fi
if (( image )); then
    binary=${binary:-$work/target/release/gpuscout}
    if [[ ! -x $binary ]]; then
        GPUSCOUT_GIT_COMMIT=$commit cargo build --release --locked --bin gpuscout
        binary=$work/target/release/gpuscout
    fi
    bash "$work/scripts/build-image.sh" --binary "$binary" --tag "${tags[0]}"
    for t in "${tags[@]:1}"; do buildah tag "${tags[0]}" "$t"; done
fi

# 6. chart package
if command -v helm >/dev/null; then
    helm package charts/gpuscout --destination "$dist" >/dev/null
else
    py=${GPUSCOUT_DEPLOY_PYTHON:-$repo/.venv/bin/python}
    [[ -x $py ]] || die "neither helm nor the Helm SDK venv ($py) is there to package the chart"
    "$py" -c 'import sys, helm_python; helm_python.package(sys.argv[1], destination=sys.argv[2])' \
        charts/gpuscout "$dist" >/dev/null
fi
chart_tgz=$dist/gpuscout-$chart_version.tgz
[[ -f $chart_tgz ]] || die "chart package $chart_tgz not made"

echo "release $version (chart $chart_version), commit $commit, tag v$version"
echo "notes:  $notes"
echo "chart:  $chart_tgz"
for t in "${tags[@]}"; do echo "image:  $t$( (( image )) || echo ' (not built: --no-image)')"; done

# 7. push
push_cmds=()
for t in "${tags[@]}"; do push_cmds+=("buildah push $t"); done
push_cmds+=("helm push $chart_tgz oci://$registry/charts" "git push origin v$version")
if (( push )); then
    (( image )) || die "--push needs the image (drop --no-image)"
    for c in "${push_cmds[@]}"; do echo "+ $c"; $c; done
else
    echo "not pushed$( (( dry )) && echo ' (dry run: the checkout is unchanged)'). To publish:"
    printf '  %s\n' "${push_cmds[@]}"
fi
