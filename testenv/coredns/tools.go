//go:build tools

// Package tools pins the CoreDNS command this module builds; the build tag
// keeps it out of ordinary builds while `go mod tidy` still records its
// dependencies.
package tools

import _ "github.com/coredns/coredns"
