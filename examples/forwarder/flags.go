package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"
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
	dumpFormat  string
	metricsAddr string
	summaryFile string
	flowsFile   string

	// flows that outlive the process
	snapshot   string
	replicate  string
	standby    string
	replName   string
	replFilter string
	leaseTTL   time.Duration

	// I/O
	io     string // "ring" or "syscall"
	ring   ringConfig
	rcvbuf int

	// -keys-from
	keysFrom      string
	maxFrame      int
	writeFiltered string
	frames        string
	countsFile    string

	// -sink
	sink  string
	watch string
}

// flagGroup is one heading of -h and the flags under it, in the order a
// reader wants them (the flag package would sort them by name).
type flagGroup struct {
	title string
	names []string
}

// The headings of -h. Every flag defineFlags defines is under exactly one
// (TestUsage checks).
var flagGroups = []flagGroup{
	{"Forwarder (the default mode):", []string{
		"in", "out", "next-hop", "workers", "batch", "limit", "ttl", "full-policy",
		"stats", "status", "summary", "dump-file", "dump-format", "flows-file", "metrics",
	}},
	{"Flows that outlive the forwarder (snapshots, a standby on NATS JetStream):", []string{
		"snapshot", "replicate", "standby", "replication-name", "replicate-filter", "lease-ttl",
	}},
	{"Ring I/O (how the forwarder reads and sends frames):", []string{
		"io", "ring-block-size", "ring-frame-size", "ring-blocks", "ring-block-timeout", "rcvbuf",
	}},
	{"-keys-from FILE (what the end-to-end test expects of a capture):", []string{
		"keys-from", "max-frame", "frames", "write-filtered", "counts-file",
	}},
	{"-sink IFACE (the end-to-end test's receiver):", []string{
		"sink", "watch",
	}},
}

const synopsis = `forwarder is a multicore L3/L4 forwarder built on flowcache. It reads
Ethernet frames from -in (one TPACKET_V3 ring per worker, all in one
PACKET_FANOUT hash group, so a flow stays on one worker), looks each batch
of flows up in the table and inserts the decision for each new flow, under
its key and the reverse so that both directions are one flow, in one step,
counts each packet on its flow, rewrites the MACs and sends the frame on
-out. SIGUSR1 writes the table's dump (SIGUSR2 too); -metrics serves
Prometheus metrics; SIGINT or SIGTERM stops it and prints a JSON summary.

Its flows can outlive it: -snapshot FILE writes the table to FILE when it
stops and restores it when it starts (a hitless restart); -replicate URL
streams the table's changes to NATS JetStream, and a second forwarder
started with -standby URL follows them into its own table, forwarding
nothing, until it is promoted: by SIGUSR1 (a standby's SIGUSR1 promotes,
it does not dump; SIGUSR2 dumps in every role), or by itself when the
primary's lease lapses (-lease-ttl without a renewal). It then takes a new
epoch, which fences the old primary, and forwards with the flows it holds.

Two more modes serve the end-to-end test (e2e.sh): -keys-from keys a
capture the way the forwarder keys frames, and -sink counts the frames
arriving on an interface.

Usage:
  forwarder -in IFACE -out IFACE -next-hop MAC [flags]
  forwarder ... -replicate nats://HOST:4222 [-snapshot FILE]     (a primary)
  forwarder ... -standby nats://HOST:4222 [-snapshot FILE]       (its standby)
  forwarder -keys-from FILE [-max-frame N] [-frames A:B] [-write-filtered FILE] [-flows-file FILE] [-counts-file FILE]
  forwarder -sink IFACE [-watch proto,src,sport,dst,dport]
`

// defineFlags defines every flag on fs, writing into o.
func defineFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.in, "in", "", "interface to read frames from")
	fs.StringVar(&o.out, "out", "", "interface to send frames on")
	fs.StringVar(&o.nextHop, "next-hop", "", "destination MAC of forwarded frames (the next hop on -out)")
	fs.IntVar(&o.workers, "workers", runtime.GOMAXPROCS(0), "worker goroutines, each with its own ring or socket (one per core)")
	fs.IntVar(&o.batch, "batch", 64, "frames read and looked up together")
	fs.IntVar(&o.limit, "limit", 100_000, "most live flows in the table")
	fs.DurationVar(&o.ttl, "ttl", 60*time.Second, "idle time after which a flow expires")
	fs.StringVar(&o.fullPolicy, "full-policy", "drop", "new flows when the table is full: drop, forward (without state), or evict (the longest-idle flow near it that is not assured: no reply seen, at most 3 packets)")
	fs.BoolVar(&o.stats, "stats", false, "print live flows, hits, misses, rejections, heap and packets/s once a second (stderr)")
	fs.StringVar(&o.statusFile, "status", "", "rewrite this file once a second with the counters as JSON")
	fs.StringVar(&o.summaryFile, "summary", "", "where the JSON summary goes on exit (default stdout)")
	fs.StringVar(&o.dumpFile, "dump-file", "", "where SIGUSR1 or SIGUSR2 writes the table's dump (a standby's SIGUSR1 promotes it instead) (default stdout)")
	fs.StringVar(&o.dumpFormat, "dump-format", "text", "the dump's format: text (one flow a line) or json (one JSON object a line)")
	fs.StringVar(&o.metricsAddr, "metrics", "", "serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9100; default off)")
	fs.StringVar(&o.flowsFile, "flows-file", "", "write both keys of every flow ever inserted (forwarder) or found (-keys-from) here, a key and its reverse, sorted, one per line")

	fs.StringVar(&o.snapshot, "snapshot", "", "write the table to this file on SIGTERM or SIGINT, and restore it from there at start (then remove it)")
	fs.StringVar(&o.replicate, "replicate", "", "publish the table's changes to the NATS JetStream server at this URL (nats://host:port): the primary")
	fs.StringVar(&o.standby, "standby", "", "follow the primary's changes from this NATS URL, forwarding nothing until promoted: by SIGUSR1, or when the primary's lease lapses")
	fs.StringVar(&o.replName, "replication-name", "forwarder", "the replication's name: the primary's and its standby's must match (letters, digits, - and _)")
	fs.StringVar(&o.replFilter, "replicate-filter", "assured", "which flows a primary replicates: assured (a reply seen or more than 3 packets; a SYN flood stays local) or all")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 2*time.Second, "the primary's lease: renewed every third of it; a standby promotes itself when it lapses")

	fs.StringVar(&o.io, "io", "ring", "ring: read TPACKET_V3 mmap rings; syscall: one read(2) per frame (for comparison)")
	fs.IntVar(&o.ring.blockSize, "ring-block-size", defaultRing.blockSize, "ring block size, bytes: a multiple of the page size, longer than the longest frame")
	fs.IntVar(&o.ring.frameSize, "ring-frame-size", defaultRing.frameSize, "ring frame size, bytes: divides the block size; V3 packs frames by length, longer ones still fit")
	fs.IntVar(&o.ring.blocks, "ring-blocks", defaultRing.blocks, "blocks per ring (one ring per worker): ring bytes = blocks × block size")
	fs.DurationVar(&o.ring.blockTimeout, "ring-block-timeout", defaultRing.blockTimeout, "longest a frame waits in a block that is not full (1ms granularity)")
	fs.IntVar(&o.rcvbuf, "rcvbuf", 64<<20, "with -io=syscall and -sink: receive buffer per socket, bytes")

	fs.StringVar(&o.keysFrom, "keys-from", "", "key every frame of this pcap/pcapng capture, print a JSON report, and exit")
	fs.IntVar(&o.maxFrame, "max-frame", 0, "with -keys-from: keep only frames an interface can send, 14 bytes to this many (0: keep all)")
	fs.StringVar(&o.frames, "frames", "", "with -keys-from: keep only kept frames A to B-1, counted from 0 (A:B, A:, :B), e.g. to replay a capture in two parts")
	fs.StringVar(&o.writeFiltered, "write-filtered", "", "with -keys-from: write the frames kept to this pcap file")
	fs.StringVar(&o.countsFile, "counts-file", "", "with -keys-from: write each key with its number of frames, \"KEY<tab>N\", sorted by key")

	fs.StringVar(&o.sink, "sink", "", "count the frames arriving on this interface until SIGTERM (SIGUSR1 prints the counts so far)")
	fs.StringVar(&o.watch, "watch", "", "with -sink: also count one flow's frames, given as proto,src,sport,dst,dport")
}

// printUsage is -h: the synopsis, then each group's flags, one line each
// with its default. A flag no group names is listed last, so that a flag
// added without a group still shows.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, synopsis)
	listed := make(map[string]bool)
	for _, g := range flagGroups {
		fmt.Fprintf(w, "\n%s\n", g.title)
		for _, name := range g.names {
			if f := fs.Lookup(name); f != nil {
				printFlag(w, f)
				listed[name] = true
			}
		}
	}
	var rest []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] {
			rest = append(rest, f)
		}
	})
	if len(rest) > 0 {
		fmt.Fprintf(w, "\nOther:\n")
		for _, f := range rest {
			printFlag(w, f)
		}
	}
}

// printFlag writes "  -name type   usage (default x)" on one line.
func printFlag(w io.Writer, f *flag.Flag) {
	typ, usage := flag.UnquoteUsage(f)
	name := "-" + f.Name
	if typ != "" {
		name += " " + typ
	}
	line := fmt.Sprintf("  %-30s %s", name, usage)
	if def := f.DefValue; def != "" {
		if typ == "string" {
			def = fmt.Sprintf("%q", def)
		}
		line += " (default " + def + ")"
	}
	fmt.Fprintln(w, strings.TrimRight(line, " "))
}
