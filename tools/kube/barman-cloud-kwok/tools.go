//go:build tools

// Package tools pins the Barman Cloud CNPG-I plugin and kwok (the lab's fake nodes).
package tools

import (
	_ "github.com/cloudnative-pg/plugin-barman-cloud/cmd/manager"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
