//go:build tools

// Package tools pins the control-plane commands this module builds; the
// build tag keeps it out of ordinary builds while `go mod tidy` still
// records their dependencies.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
