package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/flowcache/flowcache/bench"
	"github.com/flowcache/flowcache/flowcache"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// captureReport is what -keys-from finds in a capture: what a forwarder
// fed the capture (the kept frames) must do. It forwards IPFrames frames
// and inserts Flows flows; it drops NotIP + Malformed frames.
type captureReport struct {
	File      string `json:"file"`
	Frames    int    `json:"frames"`    // frames in the file
	Oversize  int    `json:"oversize"`  // frames longer than -max-frame, left out
	Runts     int    `json:"runts"`     // with -max-frame: frames under 14 bytes, left out
	Skipped   int    `json:"skipped"`   // with -frames: frames of the right size outside the range, left out
	Kept      int    `json:"kept"`      // frames kept: Frames - Oversize - Runts - Skipped
	IPFrames  int    `json:"ip_frames"` // kept frames ParseFrame keys: to be forwarded
	NotIP     int    `json:"not_ip"`    // kept frames that are not IP (ErrNotIP): to be dropped
	Malformed int    `json:"malformed"` // kept frames ParseFrame refuses otherwise: to be dropped
	Flows     int    `json:"flows"`     // flows of the IP frames: a key and its reverse are one flow (a pair)
	MaxFrame  int    `json:"max_frame,omitempty"`
}

func runKeys(o options) error {
	sel := frameSel{maxFrame: o.maxFrame, hi: -1}
	if o.frames != "" {
		var err error
		if sel.lo, sel.hi, err = parseRange(o.frames); err != nil {
			return err
		}
	}
	var filtered io.Writer
	if o.writeFiltered != "" {
		file, err := os.Create(o.writeFiltered)
		if err != nil {
			return err
		}
		defer file.Close()
		bw := bufio.NewWriterSize(file, 1<<20)
		defer bw.Flush()
		filtered = bw
	}
	rep, counts, err := keyCapture(o.keysFrom, sel, filtered)
	if err != nil {
		return err
	}
	if o.flowsFile != "" {
		if err := writeKeys(o.flowsFile, bothKeys(counts)); err != nil {
			return err
		}
	}
	if o.countsFile != "" {
		if err := writeCounts(o.countsFile, counts); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// bothKeys is both keys of every flow counts has seen: the forwarder
// stores a connection as one pair, under the key of whichever direction
// came first (which, with the directions on two workers, may not be the
// capture's first), and its -flows-file lists both.
func bothKeys(counts map[flowcache.FlowKey]int) []flowcache.FlowKey {
	both := make(map[flowcache.FlowKey]struct{}, 2*len(counts))
	for k := range counts {
		both[k] = struct{}{}
		both[k.Reverse()] = struct{}{}
	}
	return slices.Collect(maps.Keys(both))
}

// frameSel is which frames of a capture -keys-from keeps: with maxFrame
// > 0, those an interface can send (14 bytes, a whole Ethernet header,
// which an AF_PACKET send requires, to maxFrame); of those, the lo-th to
// the (hi-1)-th (-frames; hi < 0: to the end).
type frameSel struct {
	maxFrame int
	lo, hi   int
}

// parseRange reads -frames: "A:B", "A:" or ":B".
func parseRange(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, ":")
	hi = -1
	if ok && a != "" {
		lo, err = strconv.Atoi(a)
	}
	if ok && err == nil && b != "" {
		hi, err = strconv.Atoi(b)
	}
	if !ok || err != nil || lo < 0 || hi >= 0 && hi < lo {
		return 0, 0, fmt.Errorf("-frames %q: want A:B, A: or :B with 0 <= A <= B", s)
	}
	return lo, hi, nil
}

// keyCapture keys every frame of the capture at path that sel keeps with
// ParseFrame, as the forwarder keys what it reads, and counts the frames
// of each key (a flow's two directions under their two keys). The frames
// kept are copied to filtered (as a pcap file) when it is not nil.
func keyCapture(path string, sel frameSel, filtered io.Writer) (captureReport, map[flowcache.FlowKey]int, error) {
	rep := captureReport{File: path, MaxFrame: sel.maxFrame}
	file, err := os.Open(path)
	if err != nil {
		return rep, nil, err
	}
	defer file.Close()
	r, err := bench.OpenCapture(file)
	if err != nil {
		return rep, nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		return rep, nil, fmt.Errorf("%s: link type %v, want Ethernet", path, r.LinkType())
	}
	var w *pcapgo.Writer
	if filtered != nil {
		w = pcapgo.NewWriter(filtered)
		if err := w.WriteFileHeader(max(65535, uint32(sel.maxFrame)), layers.LinkTypeEthernet); err != nil {
			return rep, nil, err
		}
	}
	counts := make(map[flowcache.FlowKey]int)
	sendable := 0 // frames of the right size so far
	for {
		data, ci, err := r.ZeroCopyReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			return rep, nil, fmt.Errorf("%s: frame %d: %w", path, rep.Frames+1, err)
		}
		rep.Frames++
		if sel.maxFrame > 0 && len(data) > sel.maxFrame {
			rep.Oversize++
			continue
		}
		if sel.maxFrame > 0 && len(data) < ethHeaderLen {
			rep.Runts++
			continue
		}
		sendable++
		if i := sendable - 1; i < sel.lo || sel.hi >= 0 && i >= sel.hi {
			rep.Skipped++
			continue
		}
		rep.Kept++
		if w != nil {
			if err := w.WritePacket(ci, data); err != nil {
				return rep, nil, err
			}
		}
		k, err := flowcache.ParseFrame(data)
		switch {
		case errors.Is(err, flowcache.ErrNotIP):
			rep.NotIP++
		case err != nil:
			rep.Malformed++
		default:
			rep.IPFrames++
			if counts[k] == 0 && counts[k.Reverse()] == 0 { // neither it nor its reverse: a new flow
				rep.Flows++
			}
			counts[k]++
		}
	}
	return rep, counts, nil
}

// writeCounts writes each key, its count and its reverse, "KEY\tN\tREVERSE",
// sorted by key as writeKeys sorts: the reverse is the flow's other key
// (the forwarder stores both directions as one pair), so a check can join
// a key's frames to the flow that holds it under either key.
func writeCounts(path string, counts map[flowcache.FlowKey]int) error {
	keys := slices.SortedFunc(maps.Keys(counts), flowcache.FlowKey.Compare)
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(file)
	for _, k := range keys {
		fmt.Fprintf(bw, "%s\t%d\t%s\n", k, counts[k], k.Reverse())
	}
	if err := bw.Flush(); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

const ethHeaderLen = 14
