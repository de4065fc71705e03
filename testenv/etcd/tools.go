//go:build tools

// Package tools pins the etcd server command this module builds; the build
// tag keeps it out of ordinary builds while `go mod tidy` still records its
// dependencies.
package tools

import _ "go.etcd.io/etcd/server/v3"
