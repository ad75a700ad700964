package flowcache_test

import (
	"fmt"
	"net/netip"
	"sync"
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

// ports is a NAT's pool of public ports. Workers take ports in the batch
// step; OnRemove gives them back, after each flow's grace period, on the
// goroutine that runs deferred work.
type ports struct {
	mu   sync.Mutex
	free []uint16
}

func (p *ports) take() (uint16, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 {
		return 0, false
	}
	port := p.free[0]
	p.free = p.free[1:]
	return port, true
}

func (p *ports) give(port uint16) {
	p.mu.Lock()
	p.free = append(p.free, port)
	p.mu.Unlock()
}

// natConfig is a source NAT's table: each connection one flow under two
// keys (the inside tuple and the translated reply tuple), its timeout
// following its TCP state, a full table making room by dropping a
// connection never answered (conntrack's early drop), and the public port
// going back to the pool when the connection leaves, whatever the reason.
func natConfig(limit int, d *reclaim.Domain, pool *ports, released func(port uint16, why flowcache.Cause)) flowcache.Config[Binding] {
	return flowcache.Config[Binding]{
		Name:     "nat0",
		Limit:    limit,
		TTL:      30 * time.Second,                                 // unanswered
		Timeouts: []time.Duration{5 * 24 * time.Hour, time.Minute}, // established, closing
		Domain:   d,
		Evict:    func(e *flowcache.Entry[Binding]) bool { return e.State()&assured == 0 },
		OnRemove: func(e *flowcache.Entry[Binding], why flowcache.Cause) {
			// After a grace period: no worker still translates with it.
			pool.give(e.Value().PublicPort)
			if released != nil {
				released(e.Value().PublicPort, why)
			}
		},
	}
}

// natWorker is one worker of the NAT: its batch step looks every packet's
// key up at once and creates a connection, a pair, for each new outgoing
// one.
type natWorker struct {
	t      *flowcache.Table[Binding]
	pool   *ports
	public netip.Addr
	reader *reclaim.Reader
	keys   []flowcache.FlowKey
	out    []*flowcache.Entry[Binding]
	res    []flowcache.Outcome
	bind   func(i int) (flowcache.FlowKey, Binding, bool) // bindAt, bound once: a batch allocates nothing
}

func newNATWorker(t *flowcache.Table[Binding], d *reclaim.Domain, pool *ports, public netip.Addr, batch int) *natWorker {
	w := &natWorker{t: t, pool: pool, public: public, reader: d.Register(),
		out: make([]*flowcache.Entry[Binding], batch), res: make([]flowcache.Outcome, batch)}
	w.bind = w.bindAt
	return w
}

// bindAt is the batch step's make for the missing key keys[i]: an
// outgoing packet gets a public port, and its flow the reply key the
// translation implies; an incoming one that matches no connection, or an
// outgoing one when no port is free, gets no flow (ok false: the packet
// is dropped, and nothing else happens). It runs with the key's shard
// locked, only when the table has room, and once it returns ok the flow
// is stored: the port comes back through OnRemove, exactly once.
func (w *natWorker) bindAt(i int) (flowcache.FlowKey, Binding, bool) {
	k := w.keys[i]
	if k.Dst() == w.public {
		return flowcache.FlowKey{}, Binding{}, false
	}
	port, ok := w.pool.take()
	if !ok {
		return flowcache.FlowKey{}, Binding{}, false
	}
	// The reply comes back to the public address and port.
	reply := flowcache.NewFlowKey(k.Dst(), w.public, k.DstPort(), port, k.Proto())
	return reply, Binding{PublicPort: port}, true
}

// step handles one batch of packets, given by their keys: a real NAT
// would rewrite and send each one with its flow's binding.
func (w *natWorker) step(keys ...flowcache.FlowKey) {
	w.keys = keys
	w.t.GetOrInsertPairBatch(keys, w.bind, w.out, w.res)
	for i, e := range w.out[:len(keys)] {
		if e == nil {
			continue // refused or full: dropped
		}
		e.Count(64)
		// A packet that came through the reply key is the other side
		// answering: the connection is established.
		if keys[i] != e.Key() && e.CompareAndSwapState(0, assured) {
			w.t.SetClass(e, classEstablished)
		}
	}
	w.reader.Quiescent() // nothing from this batch is held past here
}

// A source NAT on flowcache, its worker on the batch step: each new
// outgoing connection binds a public port and is stored as one flow under
// its inside tuple and its translated reply tuple; the reply direction
// finds the same flow; a full table drops a connection never answered;
// and every port comes back once its connection leaves.
func Example_nat() {
	public := netip.MustParseAddr("203.0.113.1")
	server := netip.MustParseAddr("198.51.100.7")
	// Ports held = live flows + flows that left within the last grace
	// period (their OnRemove, which gives the port back, waits for it).
	// At the limit each new connection evicts one, so the pool is the
	// limit plus the connections one grace period admits: here 2 + 1.
	pool := &ports{free: []uint16{40001, 40002, 40003}}
	d := reclaim.NewDomain()
	t, _ := flowcache.New(natConfig(2, d, pool, func(port uint16, why flowcache.Cause) {
		fmt.Println("release", port, why)
	}))
	defer t.Close()
	w := newNATWorker(t, d, pool, public, 8)
	defer w.reader.Unregister()
	syn := func(inside string, sport uint16) flowcache.FlowKey {
		return flowcache.NewFlowKey(netip.MustParseAddr(inside), server, sport, 443, flowcache.ProtoTCP)
	}
	answer := func(port uint16) flowcache.FlowKey {
		return flowcache.NewFlowKey(server, public, 443, port, flowcache.ProtoTCP)
	}

	// Two outgoing SYNs, and a packet from outside that matches nothing.
	w.step(syn("10.0.0.1", 5000), syn("10.0.0.2", 5001), answer(40999))
	a, b := w.out[0], w.out[1]
	fmt.Println(w.res[:3], t.Len(), a.Value().PublicPort, b.Value().PublicPort)

	// a's SYN-ACK comes to its public port: the same flow, established.
	w.step(answer(a.Value().PublicPort))
	fmt.Println(w.res[:1], w.out[0] == a, a.Class() == classEstablished)

	// The table is full: a third connection evicts b, never answered, and
	// takes the third port; b's comes back once its grace period is over.
	w.step(syn("10.0.0.3", 5002))
	fmt.Println(w.res[:1], t.Len(), w.out[0].Value().PublicPort)
	w.reader.Synchronize() // this goroutine's Reader: its own Synchronize

	// a closes: exactly this connection goes, whatever its keys hold by
	// then.
	t.SetClass(a, classClosing)
	t.RemoveEntry(a)
	w.reader.Synchronize()
	// Output:
	// [inserted inserted refused] 2 40001 40002
	// [hit] true true
	// [inserted] 2 40003
	// release 40002 evicted
	// release 40001 removed
}
