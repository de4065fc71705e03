// Package atomix runs Atomix's own Go client (github.com/atomix/go-client
// v0.4.1) against atoll's Atomix-compatible gRPC API, with every partition
// served by Atomix's own local node (github.com/atomix/go-local v0.5.1).
//
// It is driven by host/e2e/tests/e2e/atomix_client.rs, which starts atoll's
// controller and gRPC server, creates a raft Database, builds this test with
// `go test -c` and runs it with:
//
//	ATOLL_GRPC_ADDR   atoll's gRPC address (host:port)
//	ATOLL_NAMESPACE   the Database's namespace
//	ATOLL_DATABASE    the Database's name
//	ATOLL_ENDPOINTS   id=host:port,... every partition endpoint, from the
//	                  Database's status (the controller's record, not the
//	                  gRPC answer under test)
//
// After phase 1 the test prints PHASE1-DONE and waits for a line on stdin:
// the driver disrupts the Database meanwhile. Run alone, it fails.
package atomix

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atomix/go-client/pkg/client"
	"github.com/atomix/go-client/pkg/client/errors"
	clientmap "github.com/atomix/go-client/pkg/client/map"
	"github.com/atomix/go-client/pkg/client/peer"
	"github.com/atomix/go-client/pkg/client/primitive"
	netutil "github.com/atomix/go-client/pkg/client/util/net"
	servermap "github.com/atomix/go-framework/pkg/atomix/map"
	serverprimitive "github.com/atomix/go-framework/pkg/atomix/primitive"
	"github.com/atomix/go-local/pkg/atomix/local"
)

const (
	// The membership group (go-client's scope), also part of primitive names.
	group   = "atoll-e2e"
	mapName = "e2e-keys"
	keys    = 100
	// How long a phase may take, and how long to wait for the driver.
	phaseTimeout  = 3 * time.Minute
	driverTimeout = 10 * time.Minute
)

type endpoint struct {
	id       int
	name     string // host:port as atoll publishes it
	loopback string // where the test serves it
}

type config struct {
	grpcAddr, namespace, database string
	endpoints                     []endpoint // by partition id
}

func configFromEnv(t *testing.T) config {
	get := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			t.Fatalf("%s is not set: this test is run by host/e2e/tests/e2e/atomix_client.rs "+
				"(cargo test -p atoll-e2e --test e2e atomix_client), which starts atoll and a Database", name)
		}
		return v
	}
	cfg := config{
		grpcAddr:  get("ATOLL_GRPC_ADDR"),
		namespace: get("ATOLL_NAMESPACE"),
		database:  get("ATOLL_DATABASE"),
	}
	for _, pair := range strings.Split(get("ATOLL_ENDPOINTS"), ",") {
		id, name, ok := strings.Cut(pair, "=")
		n, err := strconv.Atoi(id)
		if !ok || err != nil {
			t.Fatalf("ATOLL_ENDPOINTS: %q is not id=host:port", pair)
		}
		cfg.endpoints = append(cfg.endpoints, endpoint{id: n, name: name})
	}
	sort.Slice(cfg.endpoints, func(i, j int) bool { return cfg.endpoints[i].id < cfg.endpoints[j].id })
	return cfg
}

// servePartitions starts one go-local node per endpoint on its own loopback
// listener, serving that partition id, and routes the endpoint's name to it.
func servePartitions(t *testing.T, cfg *config) {
	for i := range cfg.endpoints {
		ep := &cfg.endpoints[i]
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listening for partition %d: %v", ep.id, err)
		}
		node := local.NewNode(lis, []serverprimitive.PartitionID{serverprimitive.PartitionID(ep.id)})
		servermap.RegisterPrimitive(node)
		if err := node.Start(); err != nil {
			t.Fatalf("starting the local node of partition %d: %v", ep.id, err)
		}
		t.Cleanup(func() { _ = node.Stop() })
		ep.loopback = lis.Addr().String()
		route(ep.name, ep.loopback)
		t.Logf("partition %d: %s served at %s", ep.id, ep.name, ep.loopback)
	}
}

// freePort is a port nothing listens on now: go-client's member serves its
// peer API on ":<port>" (8080 unless told), once per client.
func freePort(t *testing.T) int {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// join is a client that joins the group as member id through atoll.
func join(ctx context.Context, t *testing.T, cfg config, id string) *client.Client {
	c, err := client.NewWithContext(ctx, cfg.grpcAddr,
		client.WithNamespace(cfg.namespace),
		client.WithScope(group),
		client.WithMemberID(id),
		client.WithPeerHost("127.0.0.1"),
		client.WithPeerPort(freePort(t)),
		client.WithSessionTimeout(30*time.Second))
	if err != nil {
		t.Fatalf("client %s joining group %s through atoll: %v", id, group, err)
	}
	// No Group().Close(): with go-client v0.4.1's retrying stream it waits
	// out its whole timeout (a minute). The process exits after the test;
	// atoll ends the stream then and deletes the Member record.
	return c
}

// observe is a client without a member id: go-client then joins the group
// with no member, which atoll (like the Atomix controller) serves as an
// observer that sees the group and is recorded nowhere.
func observe(ctx context.Context, t *testing.T, cfg config) *client.Client {
	c, err := client.NewWithContext(ctx, cfg.grpcAddr,
		client.WithNamespace(cfg.namespace),
		client.WithScope(group))
	if err != nil {
		t.Fatalf("observer of group %s through atoll: %v", group, err)
	}
	return c
}

// members follows the group as one client sees it.
type members struct {
	mu  sync.Mutex
	ids []string
}

// watch copies each member set go-client hands over. go-client reuses one
// map and mutates it on the next list from atoll, so the copy is taken at
// once; lists only change here when a member joins or leaves, which the
// test does one step at a time. The watch is never cancelled: go-client
// v0.4.1's Watch closes its channel again on every pass once its context
// is done, and panics.
func watch(t *testing.T, c *client.Client) *members {
	ch := make(chan peer.Set)
	if err := c.Group().Watch(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	m := &members{}
	go func() {
		for set := range ch {
			ids := make([]string, 0, len(set))
			for id := range set {
				ids = append(ids, string(id))
			}
			sort.Strings(ids)
			m.mu.Lock()
			m.ids = ids
			m.mu.Unlock()
		}
	}()
	return m
}

func (m *members) waitFor(ctx context.Context, t *testing.T, who string, want ...string) {
	sort.Strings(want)
	for {
		m.mu.Lock()
		got := strings.Join(m.ids, ",")
		m.mu.Unlock()
		if got == strings.Join(want, ",") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s sees members [%s], want [%s]", who, got, strings.Join(want, ","))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func openMap(ctx context.Context, t *testing.T, cfg config, c *client.Client, who string) clientmap.Map {
	db, err := c.GetDatabase(ctx, cfg.database)
	if err != nil {
		t.Fatalf("%s: GetDatabase %s/%s through atoll: %v", who, cfg.namespace, cfg.database, err)
	}
	m, err := db.GetMap(ctx, mapName)
	if err != nil {
		t.Fatalf("%s: opening Map %s: %v", who, mapName, err)
	}
	return m
}

func key(i int) string   { return fmt.Sprintf("key-%03d", i) }
func value(i int) string { return fmt.Sprintf("value-%03d", i) }

// readAll reads every key back through m.
func readAll(ctx context.Context, t *testing.T, m clientmap.Map, who string) {
	var missing []string
	for i := 0; i < keys; i++ {
		entry, err := m.Get(ctx, key(i))
		switch {
		case errors.IsNotFound(err) || (err == nil && entry == nil):
			missing = append(missing, key(i))
		case err != nil:
			t.Fatalf("%s: Get %s: %v", who, key(i), err)
		case string(entry.Value) != value(i):
			t.Errorf("%s: %s = %q, want %q", who, key(i), entry.Value, value(i))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s: %d of %d keys not found (a partition list that differs from the writer's routes keys elsewhere): %v",
			who, len(missing), keys, missing)
	}
}

// checkPlacement reads each partition's node directly (not through atoll):
// partition i of n, by id, must hold exactly the keys whose FNV-1a hash is
// i mod n, which is how Atomix clients route keys over the list atoll
// returns. So every partition was listed, in id order.
func checkPlacement(ctx context.Context, t *testing.T, cfg config) {
	n := uint32(len(cfg.endpoints))
	for i, ep := range cfg.endpoints {
		session, err := primitive.NewSession(ctx, primitive.Partition{ID: ep.id, Address: netutil.Address(ep.loopback)})
		if err != nil {
			t.Fatalf("session on partition %d: %v", ep.id, err)
		}
		m, err := clientmap.New(ctx, primitive.NewName(cfg.namespace, cfg.database, group, mapName), []*primitive.Session{session})
		if err != nil {
			t.Fatalf("Map on partition %d: %v", ep.id, err)
		}
		ch := make(chan *clientmap.Entry)
		if err := m.Entries(ctx, ch); err != nil {
			t.Fatalf("entries of partition %d: %v", ep.id, err)
		}
		var got []string
		for e := range ch {
			got = append(got, e.Key)
		}
		var want []string
		for k := 0; k < keys; k++ {
			h := fnv.New32a()
			_, _ = h.Write([]byte(key(k)))
			if h.Sum32()%n == uint32(i) {
				want = append(want, key(k))
			}
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("partition %d holds %v, want %v", ep.id, got, want)
		}
		t.Logf("partition %d holds %d keys", ep.id, len(got))
		_ = m.Close(ctx)
		_ = session.Close()
	}
}

// awaitDriver tells the driver phase 1 is done and waits for its go-ahead.
func awaitDriver(t *testing.T) {
	fmt.Println("PHASE1-DONE")
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(os.Stdin)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		if !ok || l != "PHASE2" {
			t.Fatalf("the driver said %q (ok=%v), want PHASE2", l, ok)
		}
	case <-time.After(driverTimeout):
		t.Fatalf("no word from the driver within %v", driverTimeout)
	}
}

func TestAtomixClient(t *testing.T) {
	cfg := configFromEnv(t)
	servePartitions(t, &cfg)

	ctx, cancel := context.WithTimeout(context.Background(), phaseTimeout)
	defer cancel()
	writer := join(ctx, t, cfg, "atomix-writer")
	writers := watch(t, writer)
	writers.waitFor(ctx, t, "writer", "atomix-writer")
	reader := join(ctx, t, cfg, "atomix-reader")
	readers := watch(t, reader)
	writers.waitFor(ctx, t, "writer", "atomix-writer", "atomix-reader")
	readers.waitFor(ctx, t, "reader", "atomix-writer", "atomix-reader")
	t.Log("both clients joined and see each other")

	written := openMap(ctx, t, cfg, writer, "writer")
	for i := 0; i < keys; i++ {
		if _, err := written.Put(ctx, key(i), []byte(value(i))); err != nil {
			t.Fatalf("writer: Put %s: %v", key(i), err)
		}
	}
	readAll(ctx, t, openMap(ctx, t, cfg, reader, "reader"), "reader")
	checkPlacement(ctx, t, cfg)
	t.Logf("phase 1: %d keys written by one client, read by the other", keys)

	awaitDriver(t)

	// A fresh client, without a member id (go-client's default), asks atoll
	// for the Database again, now disrupted. It observes the group: it sees
	// both members and is not one of them.
	ctx, cancel = context.WithTimeout(context.Background(), phaseTimeout)
	defer cancel()
	late := observe(ctx, t, cfg)
	watch(t, late).waitFor(ctx, t, "late reader", "atomix-writer", "atomix-reader")
	readAll(ctx, t, openMap(ctx, t, cfg, late, "late reader"), "late reader")
	t.Logf("phase 2: every key read back after the disruption by a client without a member id")
}
