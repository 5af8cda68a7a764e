# Kubernetes binaries for the lab (issues 3, 15): kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kubelet, kube-proxy, etcd, kwok, helm, kustomize, the CNPG operator, the Barman Cloud plugin and promtool (the alert
# rules' checker), built from the Go module proxy into ~/.cache/hanzo-kms/k8s/<version>/ (per module, reused when
# current), plus the CNPG operator and plugin manifests rendered with kustomize from the pinned modules (the lab's CRDs
# come from them) and kwok's stages.
# See docs/lab.md.
K8S_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
K8S_GO_JOBS ?= 2

.PHONY: k8s-bins k8s-bins-force
k8s-bins:
	PATH="$$PATH:/usr/local/go/bin" HANZO_KMS_GO_JOBS=$(K8S_GO_JOBS) $(K8S_PYTHON) -m tests.lab.kube_build

k8s-bins-force:
	PATH="$$PATH:/usr/local/go/bin" HANZO_KMS_GO_JOBS=$(K8S_GO_JOBS) $(K8S_PYTHON) -m tests.lab.kube_build --force

# The CSI snapshot machinery of volume-snapshot backups (issue 18 item 4): snapshot-controller, csi-snapshotter,
# csi-provisioner and the lab's own CSI driver lab-csi-hostpath (tools/kube/csi-snapshots), and their CRDs and RBAC
# manifests, into the same cache. Not part of make setup or make test (docs/lab.md "Volume snapshots").
# snapshot-test: the driver's Go test (volumes, snapshots, restores; bind mounts when run as root).
.PHONY: snapshot-bins snapshot-test
snapshot-bins:
	PATH="$$PATH:/usr/local/go/bin" HANZO_KMS_GO_JOBS=$(K8S_GO_JOBS) $(K8S_PYTHON) -m tests.lab.kube_build --snapshots

snapshot-test:
	cd tools/kube/csi-snapshots && PATH="$$PATH:/usr/local/go/bin" GOTOOLCHAIN=local CGO_ENABLED=0 go test -mod=readonly -count=1 .
