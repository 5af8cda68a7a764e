//go:build tools

// The CSI snapshot machinery for the lab's volume-snapshot backups (issue 18 item 4): the
// snapshot-controller and the csi-snapshotter sidecar (external-snapshotter v8) and the csi-provisioner sidecar
// (external-provisioner v6). One module: both are on the same Kubernetes libraries, compiled once.
package main

import (
	_ "github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner"
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter"
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
)
