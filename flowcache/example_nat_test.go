package flowcache_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// Binding is a NAT's decision for a connection, fixed when it is made.
type Binding struct {
	PublicPort uint16
}

// TCP timeout classes, as conntrack's per-state timeouts: class 0 (the
// table's TTL) is for connections that have not been answered yet.
const (
	classEstablished = 1
	classClosing     = 2
	assured          = 1 // a state bit: the connection saw a reply
)

// A source NAT on flowcache: each connection is one flow under two keys
// (the inside tuple and the translated reply tuple), its timeout follows
// its TCP state, a full table makes room by dropping connections that were
// never answered (conntrack's early drop), and the public port goes back
// to the pool when the connection leaves, whatever the reason.
func Example_nat() {
	public := netip.MustParseAddr("203.0.113.1")
	free := []uint16{40001, 40002, 40003} // the port pool (a real NAT's is larger)
	d := reclaim.NewDomain()
	t, _ := flowcache.New(flowcache.Config[Binding]{
		Name:     "nat0",
		Limit:    2,
		TTL:      30 * time.Second,                               // unanswered
		Timeouts: []time.Duration{5 * 24 * time.Hour, time.Minute}, // established, closing
		Domain:   d,
		// At the limit, a new connection may push out one never answered.
		Evict: func(e *flowcache.Entry[Binding]) bool { return e.State()&assured == 0 },
		OnRemove: func(e *flowcache.Entry[Binding], why flowcache.Cause) {
			free = append(free, e.Value().PublicPort) // after a grace period: no worker still uses it
			fmt.Println("release", e.Value().PublicPort, why)
		},
	})
	defer t.Close()

	// An outgoing SYN: bind a public port, store both directions at once.
	connect := func(inside netip.Addr, sport uint16) *flowcache.Entry[Binding] {
		out := flowcache.NewFlowKey(inside, netip.MustParseAddr("198.51.100.7"), sport, 443, flowcache.ProtoTCP)
		port := free[0]
		free = free[1:]
		// The reply comes back to the public address and port.
		reply := flowcache.NewFlowKey(netip.MustParseAddr("198.51.100.7"), public, 443, port, flowcache.ProtoTCP)
		e, err := t.InsertPair(out, reply, Binding{PublicPort: port})
		if err != nil {
			free = append(free, port)
			fmt.Println("refused:", err)
			return nil
		}
		return e
	}
	a := connect(netip.MustParseAddr("10.0.0.1"), 5000)
	b := connect(netip.MustParseAddr("10.0.0.2"), 5001)

	// a's SYN-ACK arrives on the reply key: same flow, now established.
	r, _ := a.Reply()
	if e, ok := t.Get(r); ok && e == a {
		e.CompareAndSwapState(0, assured)
		t.SetClass(e, classEstablished)
	}
	fmt.Println(t.Len(), a.Class(), b.Class())

	// The table is full; a third connection evicts b, never answered. Its
	// port comes back once the grace period is over.
	c := connect(netip.MustParseAddr("10.0.0.3"), 5002)
	fmt.Println(c != nil, t.Len())
	d.Synchronize()

	// a closes: a shorter timeout from the next pass on.
	t.SetClass(a, classClosing)
	t.Remove(r) // or wait for the pass; either key removes both
	d.Synchronize()
	// Output:
	// 2 1 0
	// true 2
	// release 40002 evicted
	// release 40001 removed
}
