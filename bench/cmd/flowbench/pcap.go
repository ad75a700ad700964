package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
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

type packetReader interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// loadCapture reads a pcap or pcapng file (told apart by the pcapng
// Section Header Block type 0a0d0d0a in the first four bytes) and returns
// the flow key of every frame that has one, in capture order. Ethernet
// frames are keyed with ParseFrame; raw IP (link types 12, 101, 228, 229)
// with ParseFlowKey; Linux cooked captures (113) with ParseFlowKey after
// their 16-byte header.
func loadCapture(path string) ([]flowcache.FlowKey, captureInfo, error) {
	info := captureInfo{Skipped: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return nil, info, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, info, fmt.Errorf("%s: %w", path, err)
	}
	var r packetReader
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		r, err = pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
	} else {
		r, err = pcapgo.NewReader(br)
	}
	if err != nil {
		return nil, info, fmt.Errorf("%s: %w", path, err)
	}
	info.LinkType = r.LinkType()
	var parse func([]byte) (flowcache.FlowKey, error)
	switch r.LinkType() {
	case layers.LinkTypeEthernet:
		parse = flowcache.ParseFrame
	case layers.LinkTypeRaw, 12, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		parse = flowcache.ParseFlowKey
	case layers.LinkTypeLinuxSLL:
		parse = func(p []byte) (flowcache.FlowKey, error) {
			if len(p) < 16 {
				return flowcache.FlowKey{}, flowcache.ErrTruncated
			}
			if t := binary.BigEndian.Uint16(p[14:]); t != 0x0800 && t != 0x86dd {
				return flowcache.FlowKey{}, flowcache.ErrNotIP
			}
			return flowcache.ParseFlowKey(p[16:])
		}
	default:
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
			switch {
			case errors.Is(err, flowcache.ErrNotIP):
				info.Skipped["not IP"]++
			case errors.Is(err, flowcache.ErrTruncated):
				info.Skipped["truncated"]++
			default:
				info.Skipped["malformed"]++
			}
			continue
		}
		keys = append(keys, k)
		seen[k] = struct{}{}
	}
	info.Keyed, info.Distinct = len(keys), len(seen)
	return keys, info, nil
}
