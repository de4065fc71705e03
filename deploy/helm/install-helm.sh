#!/bin/sh
# Installs the pinned Helm (built from the Go module proxy) into a cache and
# prints the binary's path on stdout; progress goes to stderr. Reruns are
# instant. Used by `testenv/tests/all/deploy.rs` and CI:
#
#   HELM="$(deploy/helm/install-helm.sh)" && "$HELM" template deploy/helm/atoll
#
# Needs Go 1.26+ (Helm v3.22 requires it). Override the cache with
# ATOLL_TOOLS_DIR (default ~/.cache/atoll/tools).
set -eu

HELM_VERSION=v3.22.0
tools="${ATOLL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/atoll/tools}"
# One directory per version, so bumping HELM_VERSION never reuses an old binary.
dir="$tools/helm-$HELM_VERSION"
bin="$dir/helm"

if [ ! -x "$bin" ]; then
    command -v go >/dev/null 2>&1 || {
        echo "install-helm.sh: go is needed to build helm $HELM_VERSION" >&2
        exit 1
    }
    echo "install-helm.sh: building helm $HELM_VERSION into $dir (a few minutes, once)" >&2
    mkdir -p "$dir"
    # Build into a temporary directory and move into place, so an interrupted
    # build never leaves a half-written binary that looks installed.
    tmp="$(mktemp -d "$dir/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    # The link flags of Helm's own release builds (its Makefile): the full
    # version, and the Kubernetes version `helm template` assumes offline —
    # one minor past the client-go Helm is built with. Without them, helm
    # reports "v3.22" and renders for Kubernetes 1.20, failing charts'
    # kubeVersion constraints.
    gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    k8s_minor="$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod")"
    [ -n "$k8s_minor" ] || {
        echo "install-helm.sh: cannot find helm $HELM_VERSION's client-go version in $gomod" >&2
        exit 1
    }
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in pkg/lint/rules pkg/chartutil; do
        ldflags="$ldflags -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1"
        ldflags="$ldflags -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
    done
    GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
    mv "$tmp/helm" "$bin"
fi

echo "$bin"
