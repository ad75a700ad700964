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
	Kept      int    `json:"kept"`      // frames kept: Frames - Oversize - Runts
	IPFrames  int    `json:"ip_frames"` // kept frames ParseFrame keys: to be forwarded
	NotIP     int    `json:"not_ip"`    // kept frames that are not IP (ErrNotIP): to be dropped
	Malformed int    `json:"malformed"` // kept frames ParseFrame refuses otherwise: to be dropped
	Flows     int    `json:"flows"`     // flows of the IP frames: a key and its reverse are one flow (a pair)
	MaxFrame  int    `json:"max_frame,omitempty"`
}

func runKeys(o options) error {
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
	rep, keys, err := keyCapture(o.keysFrom, o.maxFrame, filtered)
	if err != nil {
		return err
	}
	if o.flowsFile != "" {
		if err := writeKeys(o.flowsFile, keys); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// keyCapture keys every frame of the capture at path with ParseFrame, as
// the forwarder keys what it reads, and returns the report and both keys
// of every flow: a key and its reverse are one flow, as the forwarder
// stores a connection as one pair, under the key of whichever direction
// came first (which, with the directions on two workers, may not be the
// capture's first). With maxFrame > 0 it keeps only the frames an
// interface can send: those of 14 bytes (a whole Ethernet header, which
// an AF_PACKET send requires) to maxFrame. The frames kept are copied to
// filtered (as a pcap file) when it is not nil.
func keyCapture(path string, maxFrame int, filtered io.Writer) (captureReport, []flowcache.FlowKey, error) {
	rep := captureReport{File: path, MaxFrame: maxFrame}
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
		if err := w.WriteFileHeader(max(65535, uint32(maxFrame)), layers.LinkTypeEthernet); err != nil {
			return rep, nil, err
		}
	}
	// Both keys of every flow seen.
	seen := make(map[flowcache.FlowKey]struct{})
	for {
		data, ci, err := r.ZeroCopyReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			return rep, nil, fmt.Errorf("%s: frame %d: %w", path, rep.Frames+1, err)
		}
		rep.Frames++
		if maxFrame > 0 && len(data) > maxFrame {
			rep.Oversize++
			continue
		}
		if maxFrame > 0 && len(data) < ethHeaderLen {
			rep.Runts++
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
			if _, ok := seen[k]; !ok { // neither it nor its reverse: a new flow
				rep.Flows++
				seen[k] = struct{}{}
				seen[k.Reverse()] = struct{}{}
			}
		}
	}
	return rep, slices.Collect(maps.Keys(seen)), nil
}

const ethHeaderLen = 14
