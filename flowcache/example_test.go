package flowcache_test

import (
	"fmt"
	"net/netip"

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
