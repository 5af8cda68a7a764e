# Kubernetes control-plane binaries for the lab (issue 3): kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, helm, built from the Go module proxy into ~/.cache/hanzo-kms/k8s/<version>/ (reused when current),
# plus the CNPG / Barman Cloud CRDs and kwok's stages taken from the pinned Go modules. See docs/lab.md.
K8S_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
K8S_GO_JOBS ?= 2

.PHONY: k8s-bins k8s-bins-force
k8s-bins:
	PATH="$$PATH:/usr/local/go/bin" HANZO_KMS_GO_JOBS=$(K8S_GO_JOBS) $(K8S_PYTHON) -m tests.lab.kube_build

k8s-bins-force:
	PATH="$$PATH:/usr/local/go/bin" HANZO_KMS_GO_JOBS=$(K8S_GO_JOBS) $(K8S_PYTHON) -m tests.lab.kube_build --force
