//go:build tools

// Package tools pins the CloudNativePG operator (cmd/manager: the controller and the instance manager).
package tools

import (
	_ "github.com/cloudnative-pg/cloudnative-pg/cmd/manager"
)
