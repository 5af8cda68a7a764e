//go:build tools

// Package tools pins the Barman Cloud plugin (cmd/manager: the operator-side plugin and the sidecar's instance
// plugin are the same binary, "operator" and "instance" subcommands).
package tools

import (
	_ "github.com/cloudnative-pg/plugin-barman-cloud/cmd/manager"
)
