package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/flowcache/flowcache/bench"
	"github.com/flowcache/flowcache/flowcache"
	"github.com/gopacket/gopacket/layers"
)

// captureInfo counts what loadCapture read.
type captureInfo struct {
	Frames, Keyed int
	Skipped       map[string]int // by error: not IP, truncated, malformed
	Distinct      int            // distinct keys
	LinkType      layers.LinkType
}

func (c captureInfo) String() string {
	return fmt.Sprintf("%d frames, %d keyed, %d distinct flows, skipped %v, link type %v", c.Frames, c.Keyed, c.Distinct, c.Skipped, c.LinkType)
}

// skip counts a frame that has no key, by the parser's error.
func (c *captureInfo) skip(err error) {
	switch {
	case errors.Is(err, flowcache.ErrNotIP):
		c.Skipped["not IP"]++
	case errors.Is(err, flowcache.ErrTruncated):
		c.Skipped["truncated"]++
	default:
		c.Skipped["malformed"]++
	}
}

// loadCapture reads a pcap or pcapng file and returns the flow key of
// every frame that has one, in capture order. Ethernet frames are keyed
// with ParseFrame, raw IP with ParseFlowKey, Linux cooked captures with
// ParseFlowKey after their header (see keyParser).
func loadCapture(path string) ([]flowcache.FlowKey, captureInfo, error) {
	info := captureInfo{Skipped: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return nil, info, err
	}
	defer f.Close()
	r, err := bench.OpenCapture(f)
	if err != nil {
		return nil, info, fmt.Errorf("%s: %w", path, err)
	}
	info.LinkType = r.LinkType()
	parse, ok := keyParser(r.LinkType())
	if !ok {
		return nil, info, fmt.Errorf("%s: link type %v: flowbench reads Ethernet, raw IP and Linux cooked captures", path, r.LinkType())
	}
	var keys []flowcache.FlowKey
	seen := map[flowcache.FlowKey]struct{}{}
	for {
		data, _, err := r.ZeroCopyReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, info, fmt.Errorf("%s: frame %d: %w", path, info.Frames, err)
		}
		info.Frames++
		k, err := parse(data)
		if err != nil {
			info.skip(err)
			continue
		}
		keys = append(keys, k)
		seen[k] = struct{}{}
	}
	info.Keyed, info.Distinct = len(keys), len(seen)
	return keys, info, nil
}

// keyParser is how a frame of link type lt becomes a flow key, and false
// for a link type flowbench does not read: ParseFrame for Ethernet,
// ParseFlowKey for raw IP (link types 12, 101, 228, 229), and for Linux
// cooked captures (113) ParseFlowKey after the 16-byte header, whose last
// two bytes are the Ethernet type.
func keyParser(lt layers.LinkType) (func([]byte) (flowcache.FlowKey, error), bool) {
	switch lt {
	case layers.LinkTypeEthernet:
		return flowcache.ParseFrame, true
	case layers.LinkTypeRaw, 12, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		return flowcache.ParseFlowKey, true
	case layers.LinkTypeLinuxSLL:
		return parseLinuxSLL, true
	}
	return nil, false
}

func parseLinuxSLL(p []byte) (flowcache.FlowKey, error) {
	if len(p) < 16 {
		return flowcache.FlowKey{}, flowcache.ErrTruncated
	}
	if t := binary.BigEndian.Uint16(p[14:]); t != 0x0800 && t != 0x86dd {
		return flowcache.FlowKey{}, flowcache.ErrNotIP
	}
	return flowcache.ParseFlowKey(p[16:])
}
