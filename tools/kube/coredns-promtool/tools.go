//go:build tools

// promtool is built from this module too (its main package is the wrapper's CoreDNS, main.go).
package main

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
