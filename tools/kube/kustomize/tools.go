//go:build tools

// Package tools pins kustomize (renders the CNPG and Barman Cloud plugin manifests from their modules' config/).
package tools

import (
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
