package replicate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/replicate"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NAT is a fixed-size value: Binary encodes it with encoding/binary.
type NAT struct {
	PublicPort uint16
	Backend    [4]byte
}

func tcp(src string, sport uint16) flowcache.FlowKey {
	return flowcache.NewFlowKey(netip.MustParseAddr(src), netip.MustParseAddr("192.0.2.1"), sport, 443, flowcache.ProtoTCP)
}

// A codec for a fixed-size value, and what a reader with another
// version of it says.
func ExampleBinary() {
	v1, _ := replicate.Binary[NAT](1)
	b := v1.Append(nil, &NAT{PublicPort: 40001, Backend: [4]byte{10, 0, 0, 7}})
	var got NAT
	err := v1.Decode(b, &got)
	fmt.Println(len(b), got, err)

	// A table written with version 1 of the value, read with version 2.
	t, _ := flowcache.New(flowcache.Config[NAT]{Limit: 10})
	t.Insert(tcp("10.0.0.1", 1000), got)
	var snap bytes.Buffer
	replicate.WriteSnapshot(&snap, t, v1, time.Now())
	v2, _ := replicate.Binary[NAT](2)
	_, err = replicate.RestoreSnapshot(&snap, t, v2, time.Now())
	fmt.Println(errors.Is(err, replicate.ErrVersion), err)
	// Output:
	// 6 {40001 [10 0 0 7]} <nil>
	// true snapshot record 1: replicate: unknown value version 1 (this reader knows 2)
}

// A hitless restart: the table written on the way down and restored on
// the way up, every flow with its value, state, counters, class and idle
// time, so it expires when it would have.
func ExampleWriteSnapshot() {
	c, _ := replicate.Binary[NAT](1)
	cfg := flowcache.Config[NAT]{Limit: 1000, TTL: time.Minute}
	before, _ := flowcache.New(cfg)
	e, _ := before.InsertPair(tcp("10.0.0.1", 1000), tcp("10.0.0.1", 1000).Reverse(), NAT{PublicPort: 40001})
	e.Count(1500)
	e.CompareAndSwapState(0, 3) // established, say
	before.Insert(tcp("10.0.0.2", 2000), NAT{PublicPort: 40002})

	var file bytes.Buffer // a file, in a real program
	now := time.Now()
	w, err := replicate.WriteSnapshot(&file, before, c, now)
	fmt.Println(w.Flows, err)

	after, _ := flowcache.New(cfg)
	r, err := replicate.RestoreSnapshot(&file, after, c, now)
	fmt.Println(r.Flows, err)
	got, _ := after.Get(tcp("10.0.0.1", 1000).Reverse())
	reply, _ := got.Reply()
	fmt.Println(got.Key(), "/", reply, got.Value().PublicPort, got.State(), got.Packets(), got.Bytes())

	// A damaged snapshot restores nothing.
	file.Reset()
	replicate.WriteSnapshot(&file, before, c, now)
	damaged := file.Bytes()[:file.Len()-1]
	empty, _ := flowcache.New(cfg)
	_, err = replicate.RestoreSnapshot(bytes.NewReader(damaged), empty, c, now)
	fmt.Println(errors.Is(err, replicate.ErrCorrupt), empty.Len())
	// Output:
	// 2 <nil>
	// 2 <nil>
	// tcp 10.0.0.1:1000 -> 192.0.2.1:443 / tcp 192.0.2.1:443 -> 10.0.0.1:1000 40001 3 1 1500
	// true 0
}

// A primary publishes its table's changes to JetStream and a standby
// follows; when the primary is gone, the standby is promoted: it
// publishes at the next epoch, and the old primary's records are
// refused from then on. The server runs in-process here, on loopback,
// as the package's tests run it.
func ExampleFollower_Promote() {
	dir, _ := os.MkdirTemp("", "jetstream")
	defer os.RemoveAll(dir)
	srv, _ := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		fmt.Println("no server")
		return
	}
	connect := func() jetstream.JetStream {
		nc, _ := nats.Connect(srv.ClientURL())
		js, _ := jetstream.New(nc)
		return js
	}
	ctx := context.Background()
	c, _ := replicate.Binary[NAT](1)
	cfg := flowcache.Config[NAT]{Limit: 1000}

	primary, _ := flowcache.New(cfg)
	pub, err := replicate.NewPublisher(ctx, connect(), primary, replicate.PublisherConfig[NAT]{Name: "port1", Codec: c})
	if err != nil {
		fmt.Println(err)
		return
	}
	standby, _ := flowcache.New(cfg)
	fol, err := replicate.NewFollower(ctx, connect(), standby, replicate.FollowerConfig[NAT]{Name: "port1", Codec: c})
	if err != nil {
		fmt.Println(err)
		return
	}
	<-fol.CaughtUp()

	for i := range 100 {
		primary.Insert(tcp("10.0.0.1", uint16(1000+i)), NAT{PublicPort: uint16(40000 + i)})
	}
	pub.Flush(ctx) // or wait for the next interval, 100 ms
	pub.Close()    // the primary goes away

	promoted, err := fol.Promote(ctx, replicate.PublisherConfig[NAT]{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer promoted.Close()
	fmt.Println(standby.Len(), "flows; epoch", pub.Epoch(), "then", promoted.Epoch())
	// Output:
	// 100 flows; epoch 1 then 2
}
