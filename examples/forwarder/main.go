// Command forwarder is a small multicore L3/L4 forwarder built on
// flowcache, and the end-to-end test of the library on real traffic.
//
// It reads Ethernet frames from one interface, keys each with
// flowcache.ParseFrame, looks a batch of flows up and inserts the new
// ones in one Table.GetOrInsertPairBatch, each a connection's two
// directions as one pair (the key and its reverse), counts each packet on
// its flow (Entry.Count), rewrites the MACs (source: the out interface;
// destination: the next hop) and sends the frame on the other interface:
//
//	-in ─ PACKET_FANOUT, hash by flow ─┬─ ring 0 → worker 0 ─┐  one per core; per batch:
//	      (TPACKET_V3 mmap rings)      └─ ring 1 → worker 1 ─┤  copy frames out of the ring → ParseFrame
//	                                                         │  → GetOrInsertPairBatch(decide: the key's
//	                                                         │  reverse and the decision) → Count, assure
//	                                                         │  → rewrite MACs → write; then Quiescent
//	                                                         └─ -out
//
// The rings (ring.go) are gopacket/afpacket's; -io=syscall reads one
// frame per read(2) from plain AF_PACKET sockets instead (afpacket.go),
// for comparison. Either way each frame is sent with one write(2): the
// library has no transmit ring.
//
// A flow is "assured" (a bit in its state word, Entry.State) once a
// packet came through its reply key (the other direction), or once it has
// carried more than 3 packets (a one-way path). A reclaim.Reclaimer expires idle flows
// (-ttl) once a second and gives the memory of a drained table back. When
// the table is at its limit a new flow's packet is dropped or forwarded
// without state, or (-full-policy=evict) the flow takes the place of the
// longest-idle unassured flow near it, conntrack's early drop; assured
// flows are never evicted.
//
// Usage (as root, or with CAP_NET_RAW):
//
//	forwarder -in veth0 -out veth1 -next-hop 02:00:00:00:00:02 [-limit 100000] [-ttl 60s]
//	          [-full-policy drop|forward|evict] [-metrics 127.0.0.1:9100] [-stats]
//	          [-snapshot FILE] [-replicate nats://HOST:4222 | -standby nats://HOST:4222]
//
// SIGUSR1 writes the table's Dump (sorted by key; -dump-format text or
// json) to -dump-file or stdout; SIGUSR2 does too. -metrics serves
// Prometheus metrics (the table's, its epoch domain's, the replication's,
// the Go runtime's). SIGINT or SIGTERM stops it; it then prints a JSON
// summary (packets, flows, peak live, rejections, evictions, removals by
// cause, table bytes and heap before / peak / after, what replication and
// -snapshot did).
//
// Flows outlive the process (package replicate; replicate.go here):
//
//   - -snapshot FILE writes the table to FILE when the forwarder stops
//     (after its workers, so it is the table's last state) and restores
//     it at the next start, every flow with its idle time, state and
//     counters: a restart within the flows' timeouts keeps them all.
//   - -replicate URL makes this forwarder the primary: its table's changes
//     go to a NATS JetStream stream (coalesced, flushed every 100 ms;
//     -replicate-filter assured, the default, sends a flow once it is
//     assured, so a SYN flood stays local).
//   - -standby URL makes it the standby: it follows the stream into its
//     own table and forwards nothing (it does not open -in or -out) until
//     it is promoted, by SIGUSR1 or by itself when the primary's lease
//     lapses (-lease-ttl, 2 s, without a renewal). A standby's SIGUSR1
//     promotes rather than dumps (use SIGUSR2 to dump a standby); once
//     promoted, SIGUSR1 dumps again. Promotion applies what the stream
//     holds, takes the next epoch (which fences the old primary: its late
//     records are refused), publishes the table and starts the workers,
//     whose packets then count on the flows the standby holds.
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
)

func main() {
	var o options
	defineFlags(flag.CommandLine, &o)
	flag.Usage = func() { printUsage(flag.CommandLine.Output(), flag.CommandLine) }
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
