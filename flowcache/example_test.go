package flowcache_test

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// Flow is what a forwarder decides for a flow: pointer-free state.
type Flow struct {
	Action  string
	OutPort int
}

func key(src string, sport uint16) flowcache.FlowKey {
	return flowcache.NewFlowKey(netip.MustParseAddr(src), netip.MustParseAddr("192.0.2.1"), sport, 443, flowcache.ProtoTCP)
}

func ExampleNew() {
	t, err := flowcache.New(flowcache.Config[Flow]{Name: "vnic0", Limit: 100_000})
	if err != nil {
		panic(err)
	}
	defer t.Close()
	fmt.Println(t.Limit(), t.Len())

	_, err = flowcache.New(flowcache.Config[Flow]{Limit: 10, Shards: 3})
	fmt.Println(err)
	// Output:
	// 100000 0
	// flowcache: invalid config: Shards must be 0 or a power of two up to 65536, got 3
}

func ExampleTable_Get() {
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000})
	defer t.Close()
	k := key("10.0.0.1", 40000)
	t.Insert(k, Flow{Action: "forward", OutPort: 2})

	if e, ok := t.Get(k); ok {
		fmt.Println(e.Key(), e.Value().Action, e.Value().OutPort)
	}
	_, ok := t.Get(k.Reverse())
	fmt.Println(ok)
	// Output:
	// tcp 10.0.0.1:40000 -> 192.0.2.1:443 forward 2
	// false
}

func ExampleTable_GetOrInsert() {
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000})
	defer t.Close()
	k := key("10.0.0.1", 40000)
	for range 3 { // three packets of one flow
		e, inserted, err := t.GetOrInsert(k, func() Flow {
			return Flow{Action: "forward", OutPort: 1} // the slow path: run the policy once
		})
		if err != nil {
			panic(err) // errors.Is(err, flowcache.ErrFull): drop, or evict by policy
		}
		fmt.Println(inserted, e.Value().Action)
	}
	// Output:
	// true forward
	// false forward
	// false forward
}

func ExampleTable_Dump() {
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000})
	defer t.Close()
	t.Insert(key("10.0.0.2", 1), Flow{Action: "drop"})
	t.Insert(flowcache.NewFlowKey(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), 5, 53, flowcache.ProtoUDP), Flow{Action: "forward"})
	t.Insert(key("10.0.0.1", 2), Flow{Action: "forward"})
	for _, row := range t.Dump() { // sorted: protocol, family, addresses, ports
		fmt.Println(row.Key, row.Value.Action)
	}
	// Output:
	// tcp 10.0.0.1:2 -> 192.0.2.1:443 forward
	// tcp 10.0.0.2:1 -> 192.0.2.1:443 drop
	// udp [fd00::1]:5 -> [fd00::2]:53 forward
}

// A worker registers a Reader with the table's domain and calls Quiescent
// between batches; OnRemove for a removed flow waits for that.
func ExampleConfig_onRemove() {
	d := reclaim.NewDomain()
	t, _ := flowcache.New(flowcache.Config[Flow]{
		Limit:  1000,
		Domain: d,
		OnRemove: func(e *flowcache.Entry[Flow], why flowcache.Cause) {
			fmt.Println("released", e.Key(), why)
		},
	})
	defer t.Close()
	worker := d.Register()
	k := key("10.0.0.1", 7)
	t.Insert(k, Flow{})
	e, _ := t.Get(k) // the worker holds e while it forwards the batch
	t.Remove(k)
	_ = e.Value()
	fmt.Println("removed; callback waits for the worker")
	worker.Quiescent()   // batch done: e is no longer held
	worker.Synchronize() // wait for a grace period (this worker counts as quiescent); the callback runs
	worker.Unregister()
	// Output:
	// removed; callback waits for the worker
	// released tcp 10.0.0.1:7 -> 192.0.2.1:443 removed
}

func ExampleParseFlowKey() {
	// An IPv4 header (20 bytes, protocol UDP) and the first bytes of its
	// UDP header, as a TUN device or an AF_PACKET SOCK_DGRAM socket
	// delivers them.
	pkt := []byte{
		0x45, 0, 0, 28, 0, 0, 0, 0, 64, flowcache.ProtoUDP, 0, 0,
		10, 0, 0, 1, // source
		192, 0, 2, 53, // destination
		0xc3, 0x50, 0, 53, 0, 8, 0, 0, // ports 50000 -> 53
	}
	k, err := flowcache.ParseFlowKey(pkt)
	fmt.Println(k, err)
	_, err = flowcache.ParseFlowKey(pkt[:22])
	fmt.Println(err)
	// Output:
	// udp 10.0.0.1:50000 -> 192.0.2.53:53 <nil>
	// flowcache: truncated packet: transport header shorter than its 4 bytes of ports
}

func ExampleParseFrame() {
	// An Ethernet frame with an 802.1Q tag around an IPv6 packet carrying
	// an ICMPv6 echo request (identifier 7).
	frame := []byte{
		2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, // destination and source MACs
		0x81, 0x00, 0x00, 0x0a, // 802.1Q, VLAN 10
		0x86, 0xdd, // IPv6
		0x60, 0, 0, 0, 0, 8, flowcache.ProtoICMPv6, 64,
		0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
		0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // destination
		128, 0, 0, 0, 0, 7, 0, 1, // echo request, id 7, sequence 1
	}
	k, err := flowcache.ParseFrame(frame)
	fmt.Println(k, err)
	arp := append(frame[:12:12], 0x08, 0x06)
	_, err = flowcache.ParseFrame(arp)
	fmt.Println(errors.Is(err, flowcache.ErrNotIP))
	// Output:
	// icmpv6 fd00::1 -> fd00::2 id 7 <nil>
	// true
}

// GetBatch looks a whole batch up at once, overlapping the cache misses of
// its keys; out[i] is nil where keys[i] missed.
func ExampleTable_GetBatch() {
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000})
	defer t.Close()
	t.Insert(key("10.0.0.1", 1), Flow{Action: "forward"})
	t.Insert(key("10.0.0.3", 3), Flow{Action: "drop"})
	keys := []flowcache.FlowKey{key("10.0.0.1", 1), key("10.0.0.2", 2), key("10.0.0.3", 3)}
	out := make([]*flowcache.Entry[Flow], len(keys))
	hits := t.GetBatch(keys, out)
	fmt.Println(hits)
	for i, e := range out {
		if e == nil {
			fmt.Println(keys[i], "miss")
			continue
		}
		fmt.Println(keys[i], e.Value().Action)
	}
	// Output:
	// 2
	// tcp 10.0.0.1:1 -> 192.0.2.1:443 forward
	// tcp 10.0.0.2:2 -> 192.0.2.1:443 miss
	// tcp 10.0.0.3:3 -> 192.0.2.1:443 drop
}

// GetOrInsertBatch is a forwarder worker's whole step per batch: look the
// batch up, create a flow for each key that missed, count each packet, and
// declare a quiescent point before the next batch; a Reclaimer expires
// idle flows meanwhile.
func ExampleTable_GetOrInsertBatch() {
	d := reclaim.NewDomain()
	// Without a Reclaimer, no flow ever expires and no OnRemove runs.
	r := reclaim.NewReclaimer(d, time.Second) // expiry passes, then due OnRemoves, every second
	r.Start()
	defer r.Close()
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000, Domain: d})
	defer t.Close()
	worker := d.Register()
	defer worker.Unregister()

	keys := []flowcache.FlowKey{key("10.0.0.1", 1), key("10.0.0.2", 2), key("10.0.0.1", 1)}
	sizes := []int{1500, 64, 1500}
	out := make([]*flowcache.Entry[Flow], len(keys))
	// decide runs once per new flow, with the flow's index in the batch.
	decide := func(i int) Flow { return Flow{Action: "forward", OutPort: 1} }
	for range 2 { // two batches
		t.GetOrInsertBatch(keys, decide, out)
		for i, e := range out {
			if e != nil {
				e.Count(sizes[i])
			}
		}
		worker.Quiescent() // nothing from this batch is held past here
	}
	e, _ := t.Get(keys[0])
	fmt.Println(t.Len(), e.Packets(), e.Bytes())
	// Output:
	// 2 4 6000
}

// Expire is one expiry pass; a Reclaimer runs it every second, but a
// program (or a test) may drive it with the time it wants.
func ExampleTable_Expire() {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t, _ := flowcache.New(flowcache.Config[Flow]{
		Limit: 1000, TTL: time.Minute,
		Clock: func() time.Time { return t0 },
	})
	defer t.Close()
	t.Insert(key("10.0.0.1", 1), Flow{})
	t.Insert(key("10.0.0.2", 2), Flow{})
	t.Expire(t0.Add(30 * time.Second))
	t.Get(key("10.0.0.2", 2)) // seen at 30 s
	res := t.Expire(t0.Add(time.Minute))
	fmt.Println(res.Expired, t.Len())
	// Output:
	// 1 1
}

// A pair is one flow under two keys: a connection's two directions.
func ExampleTable_InsertPair() {
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000})
	defer t.Close()
	k := key("10.0.0.1", 40000)
	e, _ := t.InsertPair(k, k.Reverse(), Flow{Action: "forward"})
	r, _ := t.Get(k.Reverse()) // the reply finds the same flow
	reply, paired := e.Reply()
	fmt.Println(r == e, t.Len(), paired, reply)
	t.Remove(k.Reverse()) // either key removes both
	_, ok := t.Get(k)
	fmt.Println(ok, t.Len())
	// Output:
	// true 1 true tcp 192.0.2.1:443 -> 10.0.0.1:40000
	// false 0
}

// The batch step with pairs: make gives each new connection its reply
// key (here the plain reverse; a NAT's is the translated one) or refuses
// it, and res says what happened to each key.
func ExampleTable_GetOrInsertPairBatch() {
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000})
	defer t.Close()
	open := key("10.0.0.1", 40000)
	t.InsertPair(open, open.Reverse(), Flow{Action: "forward"})
	keys := []flowcache.FlowKey{
		open.Reverse(),           // a reply of a connection the table holds
		key("10.0.0.2", 40001),   // a new connection
		key("198.51.100.7", 666), // one the policy refuses
	}
	out := make([]*flowcache.Entry[Flow], len(keys))
	res := make([]flowcache.Outcome, len(keys))
	n := t.GetOrInsertPairBatch(keys, func(i int) (flowcache.FlowKey, Flow, bool) {
		if keys[i].Src() == netip.MustParseAddr("198.51.100.7") {
			return flowcache.FlowKey{}, Flow{}, false
		}
		return keys[i].Reverse(), Flow{Action: "forward"}, true
	}, out, res)
	fmt.Println(n, res, t.Len())
	// Output:
	// 2 [hit inserted refused] 2
}

// SetValue gives a live flow a new value and keeps the rest of it: both
// keys of a pair, its state word and its counters; no OnRemove runs.
func ExampleTable_SetValue() {
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000})
	defer t.Close()
	k := key("10.0.0.1", 40000)
	e, _ := t.InsertPair(k, k.Reverse(), Flow{Action: "forward", OutPort: 1})
	e.Count(100)
	e.CompareAndSwapState(0, 1)
	e, ok := t.SetValue(e, Flow{Action: "forward", OutPort: 2})
	r, _ := t.Get(k.Reverse())
	fmt.Println(ok, r.Value().OutPort, r.Packets(), r.State())
	// Output:
	// true 2 1 1
}

// RemoveEntry removes exactly the flow it is given: once the key names
// another flow, the old flow's removal does nothing (Remove(e.Key())
// would remove the new one).
func ExampleTable_RemoveEntry() {
	t, _ := flowcache.New(flowcache.Config[Flow]{Limit: 1000})
	defer t.Close()
	k := key("10.0.0.1", 40000)
	old, _ := t.Insert(k, Flow{Action: "forward"})
	t.Insert(k, Flow{Action: "drop"}) // the key now names another flow
	fmt.Println(t.RemoveEntry(old), t.Len())
	cur, _ := t.Get(k)
	fmt.Println(t.RemoveEntry(cur), t.Len())
	// Output:
	// false 1
	// true 0
}
