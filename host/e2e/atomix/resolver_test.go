package atomix

import (
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc/resolver"
)

// Partition endpoints as atoll returns them are cluster DNS names
// (`<service>.<namespace>.svc.cluster.local:<port>`), which do not resolve
// on a test machine. The test serves each partition on a loopback listener
// and maps those names to it here.
//
// Why gRPC's resolver registry: go-client v0.4.1 offers no hook on how
// partitions are dialled (pkg/client/util/net.Connect calls
// grpc.Dial(address, grpc.WithInsecure()) with nothing else), so the mapping
// has to sit below it. grpc-go's name resolvers are the documented extension
// point for turning a target name into addresses; registering one and making
// it the default scheme (targets without a scheme, as go-client's, use it)
// covers every dial of this process without a DNS server, without root
// (/etc/hosts) and without patching go-client. It maps only the names the
// test knows: any other cluster name fails to resolve (a wrong endpoint
// from atoll is an error, not a silent detour), and every other target
// (atoll's own address) resolves as grpc's default passthrough would.

const scheme = "atoll-e2e"

// routes maps `host:port` endpoints to loopback `ip:port` addresses.
type routes struct {
	mu    sync.RWMutex
	addrs map[string]string
}

var installed = &routes{addrs: map[string]string{}}

func init() {
	resolver.Register(builder{})
	resolver.SetDefaultScheme(scheme)
}

// route makes endpoint resolve to addr for every later dial.
func route(endpoint, addr string) {
	installed.mu.Lock()
	defer installed.mu.Unlock()
	installed.addrs[endpoint] = addr
}

// lookup resolves a dial target: a routed endpoint, a refused cluster name,
// or any other target unchanged.
func lookup(target string) (string, error) {
	installed.mu.RLock()
	defer installed.mu.RUnlock()
	if addr, ok := installed.addrs[target]; ok {
		return addr, nil
	}
	host := target
	if i := strings.LastIndex(target, ":"); i >= 0 {
		host = target[:i]
	}
	if strings.HasSuffix(host, ".cluster.local") {
		return "", fmt.Errorf("no partition is served at %s: atoll returned an endpoint the test was not told about", target)
	}
	return target, nil
}

type builder struct{}

func (builder) Scheme() string { return scheme }

func (builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	addr, err := lookup(target.Endpoint)
	if err != nil {
		cc.ReportError(err)
		return nopResolver{}, nil
	}
	cc.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: addr}}})
	return nopResolver{}, nil
}

// nopResolver: the mapping is fixed for a connection's life.
type nopResolver struct{}

func (nopResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (nopResolver) Close()                                {}
