package flowcache_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/flowcache/flowcache/flowcache"
)

func ExampleFlowKey_String() {
	a4, b4 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	a6, b6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	for _, k := range []flowcache.FlowKey{
		flowcache.NewFlowKey(a4, b4, 1234, 80, flowcache.ProtoTCP),
		flowcache.NewFlowKey(a6, b6, 53, 4000, flowcache.ProtoUDP),
		flowcache.NewFlowKey(a4, b4, 7, 7, flowcache.ProtoICMP),   // echo: the identifier in both ports
		flowcache.NewFlowKey(a6, b6, 0, 0, flowcache.ProtoICMPv6), // any other ICMPv6 message
		flowcache.NewFlowKey(a4, b4, 0, 0, 47),                    // GRE has no ports
		flowcache.NewFlowKey(a4, b4, 1, 2, 47),                    // unless the key holds some
		flowcache.NewFlowKey(a4, b4, 0, 0, 253),                   // an unnamed protocol
		flowcache.NewFlowKey(a4, b6, 1, 2, flowcache.ProtoICMP),   // ports that differ, and two families
		flowcache.NewFlowKey(a4, b4, 0, 0, flowcache.ProtoTCP),    // a non-first fragment
		flowcache.NewFlowKey(a4, b4, 9, 9, flowcache.ProtoSCTP),   // ports, equal or not
		flowcache.NewFlowKey(a6, b6, 9, 9, flowcache.ProtoICMPv6), // an ICMPv6 echo
		flowcache.NewFlowKey(a6, b6, 1, 65535, flowcache.ProtoDCCP),
	} {
		fmt.Println(k)
	}
	// Output:
	// tcp 10.0.0.1:1234 -> 10.0.0.2:80
	// udp [2001:db8::1]:53 -> [2001:db8::2]:4000
	// icmp 10.0.0.1 -> 10.0.0.2 id 7
	// icmpv6 2001:db8::1 -> 2001:db8::2
	// gre 10.0.0.1 -> 10.0.0.2
	// gre 10.0.0.1:1 -> 10.0.0.2:2
	// proto-253 10.0.0.1 -> 10.0.0.2
	// icmp 10.0.0.1:1 -> [2001:db8::2]:2
	// tcp 10.0.0.1:0 -> 10.0.0.2:0
	// sctp 10.0.0.1:9 -> 10.0.0.2:9
	// icmpv6 2001:db8::1 -> 2001:db8::2 id 9
	// dccp [2001:db8::1]:1 -> [2001:db8::2]:65535
}

// A FlowKey is text in JSON, both ways. json.Marshal writes the arrow's
// ">" as \u003e, as it escapes every <, > and & for HTML; an Encoder with
// SetEscapeHTML(false) writes the key as String does.
func ExampleFlowKey_MarshalText() {
	type flowLog struct {
		Key    flowcache.FlowKey `json:"key"`
		Action string            `json:"action"`
	}
	k := flowcache.NewFlowKey(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 1234, 80, flowcache.ProtoTCP)
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(flowLog{Key: k, Action: "forward"}); err != nil {
		panic(err)
	}
	b, _ := json.Marshal(flowLog{Key: k, Action: "forward"})
	fmt.Println(string(b))

	var in flowLog
	if err := json.Unmarshal([]byte(`{"key":"udp [2001:db8::1]:53 -> [2001:db8::2]:4000","action":"drop"}`), &in); err != nil {
		panic(err)
	}
	fmt.Println(in.Key.Proto(), in.Key.Src(), in.Key.DstPort(), in.Action)
	// Output:
	// {"key":"tcp 10.0.0.1:1234 -> 10.0.0.2:80","action":"forward"}
	// {"key":"tcp 10.0.0.1:1234 -\u003e 10.0.0.2:80","action":"forward"}
	// 17 2001:db8::1 4000 drop
}

func ExampleFlowKey_UnmarshalText() {
	var k flowcache.FlowKey
	for _, s := range []string{
		"icmp 192.0.2.1 -> 192.0.2.2 id 7",
		"TCP 10.0.0.1:1234 -> 10.0.0.2:80", // the older, upper-case text
		"tcp 2001:db8::1:80 -> [2001:db8::2]:80",
	} {
		if err := k.UnmarshalText([]byte(s)); err != nil {
			fmt.Println(errors.Is(err, flowcache.ErrBadKeyText), err)
			continue
		}
		fmt.Println(k, k.SrcPort(), k.DstPort())
	}
	// Output:
	// icmp 192.0.2.1 -> 192.0.2.2 id 7 7 7
	// tcp 10.0.0.1:1234 -> 10.0.0.2:80 1234 80
	// true flowcache: malformed key text: tcp needs both ports (an IPv6 address takes brackets before its port) in "tcp 2001:db8::1:80 -> [2001:db8::2]:80"
}
