#!/usr/bin/env bash
# Builds the control plane that the kubernetes tests run on loopback: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (fake nodes that make pods Running and Ready).
#
# The versions are pinned in tools/kube/go.mod; everything comes from the Go module proxy and is
# compiled here, because no container engine and no release download is available. The binaries
# go to .cache/kube/<key>/bin, where <key> hashes all that decides the build (go.mod, go.sum, any
# Go source under tools/kube, this script, `go version`), so a second run is instant and a change
# of pins builds afresh. The module and build caches live in .cache/go: a clean clone is
# self-contained. On success .cache/kube/current names the bin dir (edgefleet.testbed.kube reads it).
#
# Usage: tools/kube-build.sh          build if needed, print the bin dir
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/tools/kube"
cache="$root/.cache/kube"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# kwok's Stage configuration, as kwokctl sets it up: nodes become Ready and keep their leases,
# pods bound to them become Running and Ready, deleted pods go. Copied from the pinned kwok.
stages=(
	node/fast/node-initialize
	node/heartbeat-with-lease/node-heartbeat-with-lease
	pod/fast/pod-ready
	pod/fast/pod-complete
	pod/fast/pod-delete
)

fail() {
	echo "kube: $*" >&2
	exit 1
}

command -v go >/dev/null || fail "go is not installed (Go >= 1.26 is needed to build the test control plane)"
go_version="$(go version)" || fail "\`go version\` failed"

key="$(
	{
		echo "$go_version"
		sha256sum <"${BASH_SOURCE[0]}"
		(cd "$src" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print0 |
			sort -z | xargs -0 sha256sum)
	} | sha256sum | cut -c1-16
)"
out="$cache/$key"

built() {
	local name
	for name in "${binaries[@]}"; do
		[[ -x "$out/bin/$name" ]] || return 1
	done
	[[ -s "$out/bin/kwok-stages.yaml" ]]
}

mark_current() {
	# Written to a temp file and renamed, so a reader never sees half a path.
	echo "$out/bin" >"$cache/current.$$"
	mv -f "$cache/current.$$" "$cache/current"
}

if built; then
	mark_current
	echo "kube: up to date: $out/bin"
	exit 0
fi

mkdir -p "$cache" "$root/.cache/go"
export GOMODCACHE="$root/.cache/go/mod"
export GOCACHE="$root/.cache/go/build"
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0

cd "$src"
kube_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)" ||
	fail "cannot resolve the modules pinned in $src/go.mod (the go command says why above)"
kwok_version="$(go list -m -f '{{.Version}}' sigs.k8s.io/kwok)" ||
	fail "cannot resolve the modules pinned in $src/go.mod (the go command says why above)"
major="${kube_version#v}"
major="${major%%.*}"
minor="${kube_version#v*.}"
minor="${minor%%.*}"

# What the upstream release builds stamp in (hack/lib/version.sh), so /version tells the truth.
kube_ldflags="-s -w"
for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	kube_ldflags+=" -X $package.gitVersion=$kube_version -X $package.gitMajor=$major"
	kube_ldflags+=" -X $package.gitMinor=$minor -X $package.gitTreeState=clean"
done
kwok_ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v}"
kwok_ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${kube_version#v}"

staging="$out/bin.partial.$$"
log="$out/build.log"
rm -rf "$staging"
mkdir -p "$staging"
trap 'rm -rf "$staging"' EXIT

echo "kube: building k8s.io/kubernetes $kube_version, kwok $kwok_version into $out/bin ($go_version)"
build() {
	go build -o "$staging/etcd" -ldflags "-s -w" go.etcd.io/etcd/server/v3 &&
		go build -o "$staging/" -ldflags "$kube_ldflags" \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kube-scheduler &&
		go build -o "$staging/kwok" -ldflags "$kwok_ldflags" sigs.k8s.io/kwok/cmd/kwok &&
		copy_stages
}
copy_stages() {
	local kwok_dir stage
	kwok_dir="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)" || return 1
	for stage in "${stages[@]}"; do
		echo "---"
		cat "$kwok_dir/kustomize/stage/$stage.yaml" || return 1
	done >"$staging/kwok-stages.yaml"
}
# Wall, user and system seconds of the build and every compiler it runs.
TIMEFORMAT="%R %U %S"
if ! { time build >"$log" 2>&1; } 2>"$out/build.time"; then
	cat "$log" >&2
	fail "build failed (log: $log); the commands are in tools/kube-build.sh, the pins in tools/kube/go.mod"
fi
read -r wall user system <"$out/build.time"

rm -rf "$out/bin"
mv "$staging" "$out/bin"
built || fail "the build left no binary for one of: ${binaries[*]} in $out/bin"
mark_current
# Builds of earlier pins are of no more use (about 350 MB each).
for old in "$cache"/*; do
	[[ -d "$old" && "$old" != "$out" && "$(basename "$old")" =~ ^[0-9a-f]{16}$ ]] && rm -rf "$old"
done

cpu="$(awk -v u="$user" -v s="$system" 'BEGIN { printf "%.0f", u + s }')"
echo "kube: built in ${wall%.*} s wall, $cpu s CPU"
(cd "$out/bin" && du -h "${binaries[@]}" kwok-stages.yaml | sed 's/^/kube:   /')
echo "kube: total $(du -sh "$out/bin" | cut -f1): $out/bin"
