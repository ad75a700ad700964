// Command forwarder is a small multicore L3/L4 forwarder built on
// flowcache, and the end-to-end test of the library on real traffic.
//
// It reads Ethernet frames from one interface, keys each with
// flowcache.ParseFrame, looks the flows up a batch at a time with
// Table.GetBatch, inserts the decision for a new flow with GetOrInsert,
// rewrites the MACs (source: the out interface; destination: the next
// hop) and sends the frame on the other interface:
//
//	-in ─ AF_PACKET fanout, hash by flow ─┬─ worker 0 ─┐  one per core; per batch:
//	                                      └─ worker 1 ─┤  ParseFrame → GetBatch → on a miss GetOrInsert(decide)
//	                                                   │  → rewrite MACs → write; then Quiescent
//	                                                   └─ -out
//
// A reclaim.Reclaimer expires idle flows (-ttl) once a second and gives
// the memory of a drained table back. When the table is at its limit a
// new flow's packet is dropped or forwarded without state, as
// -full-policy says; flows already in the table are not affected.
//
// Usage (as root, or with CAP_NET_RAW):
//
//	forwarder -in veth0 -out veth1 -next-hop 02:00:00:00:00:02 [-limit 100000] [-ttl 60s] [-stats]
//
// SIGUSR1 writes the table's Dump (sorted by key) to -dump-file or
// stdout. SIGINT or SIGTERM stops it; it then prints a JSON summary
// (packets, flows, peak live, rejections, heap before / peak / after).
//
// Two more modes serve the end-to-end test (e2e.sh beside this file):
//
//	forwarder -keys-from FILE   keys a pcap/pcapng capture the way the forwarder keys frames
//	forwarder -sink IFACE       counts the frames arriving on IFACE
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"
)

type options struct {
	// forwarder
	in, out     string
	nextHop     string
	workers     int
	batch       int
	limit       int
	ttl         time.Duration
	fullPolicy  string
	stats       bool
	statusFile  string
	dumpFile    string
	summaryFile string
	flowsFile   string
	rcvbuf      int

	// -keys-from
	keysFrom      string
	maxFrame      int
	writeFiltered string

	// -sink
	sink  string
	watch string
}

func main() {
	var o options
	flag.StringVar(&o.in, "in", "", "interface to read frames from")
	flag.StringVar(&o.out, "out", "", "interface to send frames on")
	flag.StringVar(&o.nextHop, "next-hop", "", "destination MAC of forwarded frames (the next hop on -out)")
	flag.IntVar(&o.workers, "workers", runtime.GOMAXPROCS(0), "worker goroutines, each with its own socket (one per core)")
	flag.IntVar(&o.batch, "batch", 64, "frames read and looked up together")
	flag.IntVar(&o.limit, "limit", 100_000, "most live flows in the table")
	flag.DurationVar(&o.ttl, "ttl", 60*time.Second, "idle time after which a flow expires")
	flag.StringVar(&o.fullPolicy, "full-policy", "drop", "new flows when the table is full: drop or forward (without state)")
	flag.BoolVar(&o.stats, "stats", false, "print live flows, hits, misses, rejections, heap and packets/s once a second (stderr)")
	flag.StringVar(&o.statusFile, "status", "", "rewrite this file once a second with the counters as JSON")
	flag.StringVar(&o.dumpFile, "dump-file", "", "where SIGUSR1 writes the table's dump (default stdout)")
	flag.StringVar(&o.summaryFile, "summary", "", "where the JSON summary goes on exit (default stdout)")
	flag.StringVar(&o.flowsFile, "flows-file", "", "write every flow key ever inserted (forwarder) or found (-keys-from) here, sorted, one per line")
	flag.IntVar(&o.rcvbuf, "rcvbuf", 64<<20, "receive buffer per socket, bytes")

	flag.StringVar(&o.keysFrom, "keys-from", "", "key every frame of this pcap/pcapng capture, print a JSON report, and exit")
	flag.IntVar(&o.maxFrame, "max-frame", 0, "with -keys-from: keep only frames an interface can send, 14 bytes to this many (0: keep all)")
	flag.StringVar(&o.writeFiltered, "write-filtered", "", "with -keys-from: write the frames kept to this pcap file")

	flag.StringVar(&o.sink, "sink", "", "count the frames arriving on this interface until SIGTERM (SIGUSR1 prints the counts so far)")
	flag.StringVar(&o.watch, "watch", "", "with -sink: also count one flow's frames, given as proto,src,sport,dst,dport")
	flag.Parse()

	var err error
	switch {
	case o.keysFrom != "":
		err = runKeys(o)
	case o.sink != "":
		err = runSink(o)
	default:
		err = runForwarder(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
}
