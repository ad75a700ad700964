// Command flowbench simulates a multicore forwarder over flowcache, the
// main job of this repository (make run).
//
// One worker goroutine per core (GOMAXPROCS) takes batches of packets
// from a traffic model, looks their flows up and creates the missing ones
// with one Table.GetOrInsertBatch per batch, and calls Quiescent on its
// reclaim.Reader between batches, while a reclaim.Reclaimer runs the
// table's expiry pass. The built-in model (model.go) runs on a simulated
// clock (Config.Clock), 10 simulated seconds per real second, so that
// real TTLs — 60 s, and 20 s for a flow that never got past its SYN
// (timeout class 1: Config.Timeouts and Config.Class) — expire within the
// run: a steady base load of heavy-tailed flows, then a SYN-flood spike
// that pushes the table toward its limit, then the drain. It prints a
// report and draws live flows and heap over time into a PNG. While it
// runs it shows its progress on stderr: a line redrawn ten times a second
// on a terminal, one plain line every 5 s anywhere else (a log, a pipe,
// CI), so a log keeps a few readable lines (progress.go).
//
//	flowbench                        # the built-in model, ~30 s
//	flowbench -compare -duration 10s # the same traffic over every peer in bench.Impls
//	flowbench -pcap FILE             # replay a pcap/pcapng capture by packet index
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/flowcache/flowcache/bench"
)

func main() {
	var cfg Config
	flag.DurationVar(&cfg.Duration, "duration", 30*time.Second, "wall time of a model run (each implementation's, with -compare)")
	flag.IntVar(&cfg.Flows, "flows", 100_000, "base population: flows the steady load keeps active")
	flag.IntVar(&cfg.SpikeFlows, "spike", 2_000_000, "SYN flows of the churn spike (at 30-50% of the run)")
	flag.IntVar(&cfg.Limit, "limit", 1_000_000, "table limit")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "seed of the traffic model and the table")
	flag.Float64Var(&cfg.Speed, "speed", 10, "simulated seconds per real second")
	flag.IntVar(&cfg.Workers, "workers", 0, "worker goroutines (0: GOMAXPROCS)")
	flag.IntVar(&cfg.Batch, "batch", 32, "packets per batch")
	flag.StringVar(&cfg.Impl, "impl", "flowcache", "run over this implementation of bench.Impls")
	flag.StringVar(&cfg.Capture, "pcap", "", "replay this pcap or pcapng `file` instead of the model")
	flag.IntVar(&cfg.Loops, "loops", 1, "times to replay the capture")
	out := flag.String("out", "flowbench.png", "write the picture here (\"\": none)")
	cmp := flag.Bool("compare", false, "run the same traffic over every implementation in bench.Impls and print them side by side")
	quiet := flag.Bool("q", false, "no progress line")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to `file`")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "flowbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	if err := runMain(os.Stdout, cfg, *out, *cmp); err != nil {
		fmt.Fprintln(os.Stderr, "flowbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// runMain is main without the flags: one run (or one per implementation
// with compare), the report on w, and the picture at out.
func runMain(w io.Writer, cfg Config, out string, compare bool) error {
	if compare {
		var rs []*Report
		for _, im := range bench.Impls {
			cfg.Impl = im.Name
			r, err := run(cfg)
			if err != nil {
				return err
			}
			r.Print(w)
			fmt.Fprintln(w)
			rs = append(rs, r)
		}
		PrintCompare(w, rs)
		return nil
	}
	r, err := run(cfg)
	if err != nil {
		return err
	}
	r.Print(w)
	switch {
	case out == "":
	case len(r.Samples) < 2:
		fmt.Fprintf(w, "  picture   none: the run was too short to sample twice\n")
	default:
		if err := writePlot(out, r); err != nil {
			return err
		}
		fmt.Fprintf(w, "  picture   %s\n", out)
	}
	return nil
}
