package bench

import (
	"bufio"
	"bytes"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// CaptureReader is what gopacket's pcap and pcapng readers have in common.
type CaptureReader interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// OpenCapture reads a packet capture: pcapng when the stream starts with a
// Section Header Block (0a 0d 0d 0a), classic pcap otherwise. flowbench's
// replays and examples/forwarder's -keys-from share it; flowcache's own
// pcap test keeps a copy, since a test of flowcache cannot import a
// package that imports flowcache.
func OpenCapture(f io.Reader) (CaptureReader, error) {
	br := bufio.NewReaderSize(f, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		return pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
	}
	return pcapgo.NewReader(br)
}
