// Command coredns is CoreDNS with only the plugins the lab's cluster DNS needs (tests/lab/dns.py): each site runs it
// in its network namespace on the node IP, serving the cluster domain from its apiserver, as kube-dns would.
// Upstream's way to choose plugins at build time: a main package that imports coremain and the wanted plugins and
// sets dnsserver.Directives (their order is upstream's plugin.cfg order).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}
}

func main() {
	coremain.Run()
}
