package flowcache

// The cross-check on real captures: every frame of the captures in
// ../shared/data/pcap (beside the module, never copied into it) is keyed by
// ParseFrame and, independently, by gopacket's layer decoders, and the two
// must agree. gopacket decodes the fields; the rules of the key (outer
// header only, which ICMP types are echo, 0/0 for non-first fragments, at
// most 8 extension headers and tags) are applied on top, from "The key"
// in docs/DESIGN.md, in refDecoder below. The decoders are driven by hand
// rather than by gopacket.NewPacket or a DecodingLayerParser because both
// of those walk on into a tunnel's inner header and key it there, and
// this key stops at the outer one.
//
// Where gopacket refuses a frame that ParseFrame keys, the test names the
// reason, checks it from the bytes, and counts it; a disagreement without
// a reason fails the test.
//
// ParseFrameHeaders is checked the same way: on every frame it must fail
// exactly as ParseFrame does, and on every frame that both ParseFrame and
// gopacket key alike, its offsets, payload length, flags, ICMP type and
// code and fragment fields must be what gopacket's layers say (where each
// layer starts in the frame, its payload, its decoded fields), with the
// rules of Headers (which transport headers are whole, where the payload
// starts when one is not) applied on top, in refDecoder again.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// pcapCapture is one capture, the figures its README gives, and the
// disagreements with gopacket measured on it.
type pcapCapture struct {
	name     string
	packets  int // column "packets"
	ipv4     int // column "IPv4 pkts"
	ipv6     int // column "IPv6 pkts"
	distinct int // column "distinct 5-tuples (one direction)"
	// explained counts the frames ParseFrame keys and gopacket refuses,
	// by reason. Pinned, so that a change in either decoder shows.
	explained map[string]int
	// headersExplained counts the frames whose Headers differ from the
	// reference's, by reason. Pinned too.
	headersExplained map[string]int
}

var pcapCaptures = []pcapCapture{
	{
		name: "ndpi-real-apps-merged.pcap", packets: 100_047, ipv4: 93_974, ipv6: 5_131, distinct: 10_942,
		// Four first fragments (MF set, offset 0) of 36 bytes, so 16
		// bytes of TCP: the ports are there, a whole TCP header is not.
		explained: map[string]int{whyTransportStub: 4},
	},
	{name: "evidence04-portscan.pcap", packets: 13_625, ipv4: 13_625, ipv6: 0, distinct: 13_490},
	{name: "cerber-lab.pcapng", packets: 15_236, ipv4: 15_236, ipv6: 0, distinct: 4_316},
	{name: "lab-misc-v4v6.pcapng", packets: 6_641, ipv4: 5_402, ipv6: 245, distinct: 3_157},
}

// pcapDir is ../shared/data/pcap from the module root, which is found by
// walking up from the package directory to go.mod, so the test does not
// depend on where in the module it lives; from a git worktree kept in a
// folder of worktrees (../wt/NAME), the shared folder is found one level
// further up, so the first shared/data/pcap beside the root or beside one
// of its parents is taken. It skips the test when there is none: the
// captures are not part of the module.
func pcapDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Skip("no go.mod above the test directory")
		}
		dir = parent
	}
	first := filepath.Join(dir, "..", "shared", "data", "pcap")
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		pcaps := filepath.Join(d, "shared", "data", "pcap")
		if fi, err := os.Stat(pcaps); err == nil && fi.IsDir() {
			return pcaps
		}
		if filepath.Dir(d) == d {
			tb.Skipf("captures not found at %s or above", first)
		}
	}
}

// packetReader is what pcapgo's Reader and NgReader have in common.
type packetReader interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// forEachFrame calls fn with every frame of the capture at path, read
// with pcapgo: NewNgReader when the file starts with the pcapng Section
// Header Block type 0a0d0d0a, NewReader otherwise. The frame is only
// valid during the call. It skips the test when the file is missing.
func forEachFrame(tb testing.TB, path string, fn func(frame []byte)) int {
	tb.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		tb.Skipf("capture %s not found", path)
	}
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	var r packetReader
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		r, err = pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
	} else {
		r, err = pcapgo.NewReader(br)
	}
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		tb.Fatalf("%s: link type %v, want Ethernet", path, r.LinkType())
	}
	n := 0
	for {
		data, _, err := r.ZeroCopyReadPacketData()
		if err == io.EOF {
			return n
		}
		if err != nil {
			tb.Fatalf("%s: frame %d: %v", path, n, err)
		}
		n++
		fn(data)
	}
}

// refOutcome is what the reference decoder made of a frame.
type refOutcome int

const (
	refKeyed     refOutcome = iota // a key
	refNotIP                       // an EtherType that is not IP (nor MPLS)
	refMPLS                        // MPLS: not IP for DESIGN, IP inside for the README
	refFailed                      // a gopacket decoder returned an error
	refMalformed                   // gopacket decoded it, a rule of the key refuses it
)

type refResult struct {
	outcome refOutcome
	key     FlowKey
	layer   gopacket.LayerType  // the layer that failed, or what the EtherType named
	etype   layers.EthernetType // for refNotIP: the EtherType after the tags gopacket knows
	err     error               // gopacket's error, for refFailed
	data    []byte              // the bytes the failing layer was given
	ipLen   int                 // the IP header's length field (total or payload length)
	ipBytes int                 // the bytes after the Ethernet header and tags
	seen    []string            // what the frame exercises, for the coverage log
	// hdr is what ParseFrameHeaders must give when the outcome is
	// refKeyed (Key aside, which is key): offsets from where gopacket's
	// layers start in the frame, the payload from the last layer's,
	// flags, type and code from its decoded fields.
	hdr Headers
}

// refDecoder keys frames with gopacket's DecodingLayer implementations,
// one layer at a time, stopping at the outer IP header's transport. The
// layers are reused from frame to frame, as a DecodingLayerParser would.
type refDecoder struct {
	eth   layers.Ethernet
	dot1q layers.Dot1Q
	ip4   layers.IPv4
	ip6   layers.IPv6
	ext   layers.IPv6ExtensionSkipper
	frag  layers.IPv6Fragment
	ah    layers.IPSecAH
	tcp   layers.TCP
	udp   layers.UDP
	sctp  layers.SCTP
	icmp4 layers.ICMPv4
	icmp6 layers.ICMPv6
	echo6 layers.ICMPv6Echo
	seen  []string
	frame []byte // the frame being decoded, for off
}

// off is the offset in the frame being decoded of b, a slice of it that a
// gopacket layer returned. Layers slice their input without limiting its
// capacity, so every such slice ends its capacity where the frame does.
func (d *refDecoder) off(b []byte) int { return cap(d.frame) - cap(b) }

func refFail(layer gopacket.LayerType, err error, data []byte) refResult {
	return refResult{outcome: refFailed, layer: layer, err: err, data: data}
}

func (d *refDecoder) decode(frame []byte) refResult {
	d.seen = d.seen[:0]
	d.frame = frame
	r := d.decodeFrame(frame)
	r.seen = d.seen
	return r
}

func (d *refDecoder) decodeFrame(frame []byte) refResult {
	nf := gopacket.NilDecodeFeedback
	if err := d.eth.DecodeFromBytes(frame, nf); err != nil {
		return refFail(layers.LayerTypeEthernet, err, frame)
	}
	typ, payload, etype := d.eth.NextLayerType(), d.eth.Payload, d.eth.EthernetType
	// gopacket knows 0x8100 and 0x88a8 as Dot1Q; 0x9100 it does not, so
	// such a frame lands in refNotIP and is counted there.
	tags := 0
	for ; typ == layers.LayerTypeDot1Q; tags++ {
		if tags == maxTags {
			return refResult{outcome: refMalformed, layer: typ}
		}
		if err := d.dot1q.DecodeFromBytes(payload, nf); err != nil {
			return refFail(layers.LayerTypeDot1Q, err, payload)
		}
		typ, payload, etype = d.dot1q.NextLayerType(), d.dot1q.Payload, d.dot1q.Type
	}
	if tags > 0 {
		d.seen = append(d.seen, fmt.Sprintf("VLAN tags: %d", tags))
	}
	var r refResult
	switch typ {
	case layers.LayerTypeIPv4:
		r = d.ipv4(payload)
	case layers.LayerTypeIPv6:
		r = d.ipv6(payload)
	case layers.LayerTypeMPLS:
		return refResult{outcome: refMPLS, layer: typ, data: payload}
	default:
		return refResult{outcome: refNotIP, layer: typ, etype: etype}
	}
	r.ipBytes = len(payload)
	r.hdr.L3 = d.off(payload)
	return r
}

// versionRule applies DESIGN's rule to an IP version that differs from
// the one the EtherType named: the other IP version is malformed, any
// other version is not IP. gopacket does not look.
func versionRule(version, want uint8) (refResult, bool) {
	switch {
	case version == want:
		return refResult{}, true
	case version == 4 || version == 6:
		return refResult{outcome: refMalformed}, false
	}
	return refResult{outcome: refNotIP, layer: gopacket.LayerTypeZero}, false
}

func (d *refDecoder) ipv4(p []byte) refResult {
	if err := d.ip4.DecodeFromBytes(p, gopacket.NilDecodeFeedback); err != nil {
		r := refFail(layers.LayerTypeIPv4, err, p)
		if len(p) >= 4 {
			r.ipLen = int(binary.BigEndian.Uint16(p[2:4]))
		}
		return r
	}
	if r, ok := versionRule(d.ip4.Version, 4); !ok {
		return r
	}
	src, _ := netip.AddrFromSlice(d.ip4.SrcIP)
	dst, _ := netip.AddrFromSlice(d.ip4.DstIP)
	k := NewFlowKey(src, dst, 0, 0, uint8(d.ip4.Protocol))
	switch d.ip4.Protocol {
	case layers.IPProtocolIPv4, layers.IPProtocolIPv6, layers.IPProtocolGRE:
		d.seen = append(d.seen, "tunnel keyed on its outer header ("+d.ip4.Protocol.String()+")")
	}
	if d.ip4.Flags&layers.IPv4MoreFragments != 0 && d.ip4.FragOffset == 0 {
		d.seen = append(d.seen, "first IPv4 fragment")
	}
	if d.ip4.FragOffset != 0 {
		d.seen = append(d.seen, "non-first IPv4 fragment")
		return refResult{key: k, ipLen: int(d.ip4.Length), hdr: Headers{
			Version: 4, L4: -1, Payload: d.off(d.ip4.Payload), PayloadLen: len(d.ip4.Payload),
			Fragment: true, NonFirstFragment: true,
		}}
	}
	// gopacket hands the payload of a first fragment (MF set) to its
	// Fragment layer, but that payload starts with the transport header,
	// so it is decoded here like any other.
	r := d.transport(k, d.ip4.Protocol, d.ip4.Payload)
	r.ipLen = int(d.ip4.Length)
	r.hdr.Version = 4
	r.hdr.Fragment = d.ip4.Flags&layers.IPv4MoreFragments != 0
	return r
}

func (d *refDecoder) ipv6(p []byte) refResult {
	nf := gopacket.NilDecodeFeedback
	if err := d.ip6.DecodeFromBytes(p, nf); err != nil {
		r := refFail(layers.LayerTypeIPv6, err, p)
		if len(p) >= 6 {
			r.ipLen = int(binary.BigEndian.Uint16(p[4:6]))
		}
		return r
	}
	if r, ok := versionRule(d.ip6.Version, 6); !ok {
		return r
	}
	k := NewFlowKey(netip.AddrFrom16([16]byte(d.ip6.SrcIP)), netip.AddrFrom16([16]byte(d.ip6.DstIP)), 0, 0, 0)
	nh, payload, n := d.ip6.NextHeader, d.ip6.Payload, 0
	if d.ip6.HopByHop != nil {
		// gopacket decodes a Hop-by-Hop header as part of the IPv6 layer.
		nh, n = d.ip6.HopByHop.NextHeader, 1
		d.seen = append(d.seen, "IPv6 extension header (IPv6HopByHop)")
	}
	fragment := false
	result := func(r refResult) refResult {
		r.ipLen = int(d.ip6.Length)
		r.hdr.Version = 6
		r.hdr.Fragment = r.hdr.Fragment || fragment
		return r
	}
	for ; ; n++ {
		lt := nh.LayerType()
		switch lt {
		case layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Destination,
			layers.LayerTypeIPv6Fragment, layers.LayerTypeIPSecAH:
		default:
			k.proto = uint8(nh)
			switch nh {
			case layers.IPProtocolIPv4, layers.IPProtocolIPv6, layers.IPProtocolGRE:
				d.seen = append(d.seen, "tunnel keyed on its outer header ("+nh.String()+")")
			}
			return result(d.transport(k, nh, payload))
		}
		d.seen = append(d.seen, "IPv6 extension header ("+lt.String()+")")
		if n == maxExtHeaders {
			return result(refResult{outcome: refMalformed, layer: lt})
		}
		var err error
		switch lt {
		case layers.LayerTypeIPv6Fragment:
			if err = d.frag.DecodeFromBytes(payload, nf); err == nil {
				if d.frag.FragmentOffset != 0 {
					d.seen = append(d.seen, "non-first IPv6 fragment")
					k.proto = uint8(d.frag.NextHeader)
					return result(refResult{key: k, hdr: Headers{
						L4: -1, Payload: d.off(d.frag.Payload), PayloadLen: len(d.frag.Payload),
						Fragment: true, NonFirstFragment: true,
					}})
				}
				// An atomic fragment (offset 0, M clear) is no fragment.
				fragment = fragment || d.frag.MoreFragments
				nh, payload = d.frag.NextHeader, d.frag.Payload
			}
		case layers.LayerTypeIPSecAH:
			if err = d.ah.DecodeFromBytes(payload, nf); err == nil {
				nh, payload = d.ah.NextHeader, d.ah.Payload
			}
		default:
			if err = d.ext.DecodeFromBytes(payload, nf); err == nil {
				nh, payload = d.ext.NextHeader, d.ext.Payload
			}
		}
		if err != nil {
			return result(refFail(lt, err, payload))
		}
	}
}

// transport sets the ports of k from the layer that proto names, as
// gopacket maps protocol numbers to layers.
//
// It also fills the Headers: the transport header starts where p does,
// and the payload is the payload gopacket's transport layer gives (for
// ICMPv6, whose layer is 4 bytes, without the 4 bytes of message that
// Headers counts in its 8-byte header), or all of p for a protocol
// gopacket is not asked to decode here, whose header Headers does not
// read either.
func (d *refDecoder) transport(k FlowKey, proto layers.IPProtocol, p []byte) refResult {
	nf := gopacket.NilDecodeFeedback
	lt := proto.LayerType()
	h := Headers{L4: d.off(p), Payload: d.off(p), PayloadLen: len(p), L4Whole: true}
	payload := func(b []byte) {
		h.Payload, h.PayloadLen = d.off(b), len(b)
	}
	var err error
	switch lt {
	case layers.LayerTypeTCP:
		if err = d.tcp.DecodeFromBytes(p, nf); err == nil {
			k.srcPort, k.dstPort = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
			payload(d.tcp.Payload)
			for i, set := range []bool{d.tcp.FIN, d.tcp.SYN, d.tcp.RST, d.tcp.PSH, d.tcp.ACK, d.tcp.URG, d.tcp.ECE, d.tcp.CWR} {
				if set {
					h.Flags |= 1 << i
				}
			}
		}
	case layers.LayerTypeUDP:
		if err = d.udp.DecodeFromBytes(p, nf); err == nil {
			k.srcPort, k.dstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
			payload(d.udp.Payload)
		}
	case layers.LayerTypeSCTP:
		if err = d.sctp.DecodeFromBytes(p, nf); err == nil {
			k.srcPort, k.dstPort = uint16(d.sctp.SrcPort), uint16(d.sctp.DstPort)
			payload(d.sctp.Payload)
		}
	case layers.LayerTypeUDPLite:
		// UDPLite has no DecodingLayer; decode it as a packet of its own.
		pkt := gopacket.NewPacket(p, layers.LayerTypeUDPLite, gopacket.NoCopy)
		if u, ok := pkt.Layer(layers.LayerTypeUDPLite).(*layers.UDPLite); ok {
			k.srcPort, k.dstPort = uint16(u.SrcPort), uint16(u.DstPort)
			payload(u.Payload)
		} else {
			err = fmt.Errorf("UDPLite: %v", pkt.ErrorLayer().Error())
		}
	case layers.LayerTypeICMPv4:
		if err = d.icmp4.DecodeFromBytes(p, nf); err == nil {
			switch d.icmp4.TypeCode.Type() {
			case layers.ICMPv4TypeEchoRequest, layers.ICMPv4TypeEchoReply:
				d.seen = append(d.seen, "ICMP echo")
				k.srcPort, k.dstPort = d.icmp4.Id, d.icmp4.Id
			}
			h.ICMPType, h.ICMPCode = d.icmp4.TypeCode.Type(), d.icmp4.TypeCode.Code()
			payload(d.icmp4.Payload)
		}
	case layers.LayerTypeICMPv6:
		if err = d.icmp6.DecodeFromBytes(p, nf); err == nil {
			switch d.icmp6.TypeCode.Type() {
			case layers.ICMPv6TypeEchoRequest, layers.ICMPv6TypeEchoReply:
				if err = d.echo6.DecodeFromBytes(d.icmp6.Payload, nf); err == nil {
					d.seen = append(d.seen, "ICMPv6 echo")
					k.srcPort, k.dstPort = d.echo6.Identifier, d.echo6.Identifier
				}
			}
			if len(d.icmp6.Payload) >= 4 {
				h.ICMPType, h.ICMPCode = d.icmp6.TypeCode.Type(), d.icmp6.TypeCode.Code()
				payload(d.icmp6.Payload[4:])
			} else {
				// Whole for gopacket, not for Headers.
				h.L4Whole, h.Payload, h.PayloadLen = false, len(d.frame), 0
			}
		}
	}
	if err != nil {
		return refFail(lt, err, p)
	}
	return refResult{key: k, hdr: h}
}

// The reasons ParseFrame and the reference may differ on a frame. Each is
// a documented difference between what the key reads and what gopacket
// decodes, not a bug, and each is checked against the frame's bytes
// before it is accepted as the reason.
const (
	// The transport header holds the bytes the key needs (4 for ports, 1
	// for an ICMP type, 6 for an echo) but not the fixed header gopacket
	// decodes (TCP 20 and its options, UDP 8, SCTP 12, ICMPv4 8, ICMPv6 4
	// and 4 more for an echo).
	whyTransportStub = "transport header holds the key's bytes but is shorter than gopacket's fixed header"
	// An IP length field (IPv4 total length, IPv6 payload length) is 0 or
	// ends before the headers the key reads; gopacket trusts it, the key
	// does not (frames captured with segmentation offload carry 0).
	whyLengthField = "IP length field is 0 or ends before the headers; the key ignores it"
	// IPv4 options gopacket finds malformed; the key skips options by IHL
	// without reading them.
	whyIPv4Options = "IPv4 options gopacket refuses; the key skips them unread"
	// An AH header under 12 bytes cannot hold its SPI and sequence number;
	// gopacket refuses it, the key only needs its length to skip it.
	whyShortAH = "IPv6 AH shorter than 12 bytes: gopacket refuses it, the key skips it by its length"
	// gopacket knows 0x8100 and 0x88a8 tags, not 0x9100.
	whyTag9100 = "0x9100 VLAN tag, which gopacket does not decode"
	// gopacket has no DCCP layer, so it gives no ports.
	whyDCCP = "DCCP, which gopacket does not decode: no ports"
	// gopacket takes Mobility, HIP, Shim6 and the experimental 253/254 for
	// the protocol; the key skips them as extension headers.
	whyUnknownExt = "IPv6 extension header gopacket does not skip (Mobility, HIP, Shim6, 253, 254)"
	// An IPv6 header with an IPv4-mapped address would share an IPv4
	// flow's key; the key refuses it, gopacket decodes it.
	whyMappedV6 = "IPv4-mapped address in an IPv6 header: the key refuses it"
	// A TCP data offset under 5 words cannot hold the fixed header;
	// gopacket refuses the header, the key reads only its ports.
	whyTCPDataOffset = "TCP data offset under 5: gopacket refuses the header, the key reads only its ports"

	// For the Headers, beyond the key: the IP length field ends the
	// datagram inside a transport header that the buffer holds whole.
	// Headers reads headers from the buffer, as the key does (and counts
	// no payload); gopacket stops at the length field.
	whyHeaderPastLength = "IP length field ends inside a transport header the buffer holds: Headers reads it whole"
)

// notWhole is compareHeaders' label for a frame whose transport header
// gopacket refuses and Headers finds not whole: they agree.
const notWhole = "transport header gopacket refuses is not whole"

type verdictKind int

const (
	verdictAgree       verdictKind = iota // the same key, or errors of the same kind
	verdictExplained                      // a disagreement with a documented reason
	verdictUnexplained                    // a disagreement without one: a bug on one side
)

// compare keys frame with ParseFrame and with the reference, and says how
// they compare: the label is what they agree on, or the reason they
// differ, or for an unexplained disagreement a description.
func (d *refDecoder) compare(frame []byte) (verdictKind, string, refResult) {
	k, err := ParseFrame(frame)
	r := d.decode(frame)
	switch r.outcome {
	case refKeyed:
		switch {
		case err == nil && k == r.key:
			return verdictAgree, "same key", r
		case errors.Is(err, errMalMapped) && (r.key.Is4() || is4(&r.key.dst)):
			return verdictExplained, whyMappedV6, r
		case err == nil && k.src == r.key.src && k.dst == r.key.dst:
			if k.proto == ProtoDCCP && r.key.proto == ProtoDCCP && r.key.srcPort == 0 && r.key.dstPort == 0 {
				return verdictExplained, whyDCCP, r
			}
			switch r.key.proto {
			case 135, 139, 140, 253, 254:
				if !k.Is4() {
					return verdictExplained, whyUnknownExt, r
				}
			}
		}
	case refNotIP:
		if errors.Is(err, ErrNotIP) {
			return verdictAgree, "not IP: " + r.layer.String(), r
		}
		if r.etype == etherType9100 {
			return verdictExplained, whyTag9100, r
		}
	case refMPLS:
		if errors.Is(err, ErrNotIP) {
			return verdictAgree, "not IP: MPLS", r
		}
	case refMalformed:
		if errors.Is(err, ErrMalformed) {
			return verdictAgree, "malformed", r
		}
	case refFailed:
		if err != nil {
			return verdictAgree, fmt.Sprintf("both refuse: gopacket %v, %s", r.layer, errKind(err)), r
		}
		if why := explainRefusal(r); why != "" {
			return verdictExplained, why, r
		}
	}
	ref := fmt.Sprint(r.key)
	if r.outcome != refKeyed {
		ref = fmt.Sprintf("outcome %d at %v (%v)", r.outcome, r.layer, r.err)
	}
	return verdictUnexplained, fmt.Sprintf("ParseFrame %v, %v; gopacket %s", k, err, ref), r
}

// compareHeaders parses frame with ParseFrameHeaders, given what compare
// said of its key (label) and the reference's result. ParseFrameHeaders
// must fail or key exactly as ParseFrame does, on every frame. Where the
// reference keyed the frame as ParseFrame did, the Headers must be the
// reference's; where gopacket refused a transport header as too short
// for its fixed part, the Headers must find it not whole. The label is
// what they agree on, or the reason they differ, or a description; it is
// "" where nothing past the key can be compared.
func (d *refDecoder) compareHeaders(frame []byte, label string, r refResult) (verdictKind, string) {
	var h Headers
	err := ParseFrameHeaders(frame, &h)
	k, kerr := ParseFrame(frame)
	if err != kerr || h.Key != k {
		return verdictUnexplained, fmt.Sprintf("ParseFrameHeaders %v, %v; ParseFrame %v, %v", h.Key, err, k, kerr)
	}
	switch label {
	case "same key":
		want := r.hdr
		want.Key = r.key
		if h == want {
			return verdictAgree, "same headers"
		}
		return verdictUnexplained, fmt.Sprintf("ParseFrameHeaders\n%+v; gopacket\n%+v", h, want)
	case whyTransportStub, whyTCPDataOffset:
		if !h.L4Whole && h.Flags == 0 && h.ICMPType == 0 && h.ICMPCode == 0 && h.Payload == len(frame) && h.PayloadLen == 0 {
			return verdictAgree, notWhole
		}
		if h.L4Whole && datagramEnd(frame, h) < h.Payload {
			return verdictExplained, whyHeaderPastLength
		}
		return verdictUnexplained, fmt.Sprintf("ParseFrameHeaders %+v; gopacket refused the transport header (%s)", h, label)
	}
	return verdictAgree, ""
}

// datagramEnd is where the IP length field of h's packet ends it in
// frame: the end of the frame when the field is 0 or says more.
func datagramEnd(frame []byte, h Headers) int {
	ip := frame[h.L3:]
	n, end := int(binary.BigEndian.Uint16(ip[4:6])), h.L3+ipv6HeaderLen
	if h.Version == 4 {
		n, end = int(binary.BigEndian.Uint16(ip[2:4])), h.L3
	}
	if n == 0 {
		return len(frame)
	}
	return min(len(frame), end+n)
}

// headerFeatures names what the Headers of a frame exercise, for the
// coverage log.
func headerFeatures(frame []byte, h Headers) []string {
	var f []string
	add := func(ok bool, what string) {
		if ok {
			f = append(f, what)
		}
	}
	proto := h.Key.Proto()
	add(proto == ProtoTCP && h.L4Whole, "TCP flags")
	add(proto == ProtoTCP && h.L4Whole && h.Payload-h.L4 > 20, "TCP options")
	add((proto == ProtoICMP || proto == ProtoICMPv6) && h.L4Whole, "ICMP type and code")
	add(h.Fragment && !h.NonFirstFragment, "first fragment")
	add(h.NonFirstFragment, "non-first fragment")
	add(h.L3 > ethHeaderLen, "VLAN tags")
	add(h.Version == 6 && h.L4 > h.L3+ipv6HeaderLen, "IPv6 extension headers")
	add(h.Payload+h.PayloadLen < len(frame), "bytes after the datagram (padding, trailer)")
	add(h.L4Whole && h.PayloadLen > 0, "a payload")
	return f
}

// explainRefusal says why gopacket refused a frame that ParseFrame keyed, from
// the bytes gopacket's failing layer was given, or "" when nothing does.
func explainRefusal(r refResult) string {
	data := r.data
	switch r.layer {
	case layers.LayerTypeTCP, layers.LayerTypeUDP, layers.LayerTypeSCTP, layers.LayerTypeUDPLite,
		layers.LayerTypeICMPv4, layers.LayerTypeICMPv6:
		need, fixed := 4, 0
		switch r.layer {
		case layers.LayerTypeTCP:
			fixed = 20
			if len(data) > 12 {
				fixed = max(fixed, int(data[12]>>4)*4)
			}
		case layers.LayerTypeUDP, layers.LayerTypeUDPLite:
			fixed = 8
		case layers.LayerTypeSCTP:
			fixed = 12
		case layers.LayerTypeICMPv4:
			need, fixed = 1, 8
			if len(data) > 0 && (data[0] == icmpEchoRequest || data[0] == icmpEchoReply) {
				need = 6
			}
		case layers.LayerTypeICMPv6:
			need, fixed = 1, 4
			if len(data) > 0 && (data[0] == icmpv6EchoRequest || data[0] == icmpv6EchoReply) {
				need, fixed = 6, 8
			}
		}
		switch {
		case len(data) < need:
			// gopacket cut the packet at its length field before the
			// bytes ParseFrame read.
			return whyLengthField
		case len(data) < fixed:
			return whyTransportStub
		case r.layer == layers.LayerTypeTCP && data[12]>>4 < 5:
			return whyTCPDataOffset
		}
	case layers.LayerTypeIPv4:
		switch ihl := int(data[0]&0x0f) * 4; {
		case r.ipLen != 0 && r.ipLen < ihl:
			return whyLengthField
		case strings.Contains(r.err.Error(), "option"):
			return whyIPv4Options
		}
	case layers.LayerTypeIPv6:
		// Its length field 0 (without a jumbo Hop-by-Hop option), or
		// shorter than a Hop-by-Hop header gopacket decodes with it.
		if r.ipLen == 0 || len(data) >= ipv6HeaderLen+2 && data[6] == 0 && r.ipLen < (int(data[ipv6HeaderLen+1])+1)*8 {
			return whyLengthField
		}
	case layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Destination,
		layers.LayerTypeIPv6Fragment, layers.LayerTypeIPSecAH:
		if r.ipLen < r.ipBytes-ipv6HeaderLen {
			return whyLengthField
		}
		if r.layer == layers.LayerTypeIPSecAH && len(data) >= 2 && (int(data[1])+2)*4 < 12 {
			return whyShortAH
		}
	}
	return ""
}

// readmeKey keys a frame as the README's counter (flowcount.py) does, for
// the distinct-key count: MPLS labels are popped (DESIGN makes MPLS
// ErrNotIP, so these keys are extra), and every protocol but TCP, UDP,
// SCTP and UDP-Lite gets ports 0/0. That zeroes the ICMP echo identifiers
// the key holds, and DCCP's ports: the README's text names DCCP, but its
// counter takes ports from UDP-Lite (136) instead.
func readmeKey(frame []byte) (k FlowKey, mpls, ok bool) {
	k, err := ParseFrame(frame)
	if errors.Is(err, ErrNotIP) && len(frame) >= ethHeaderLen {
		if p, isMPLS := popMPLS(frame); isMPLS {
			k, err = ParseFlowKey(p)
			mpls = true
		}
	}
	if err != nil {
		return FlowKey{}, mpls, false
	}
	switch k.proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP, protoUDPLite:
	default:
		k.srcPort, k.dstPort = 0, 0
	}
	return k, mpls, true
}

// popMPLS returns what follows the MPLS label stack of an Ethernet frame
// (after any tags), as the README's counter finds it.
func popMPLS(frame []byte) ([]byte, bool) {
	etype := binary.BigEndian.Uint16(frame[12:14])
	p := frame[ethHeaderLen:]
	for (etype == etherTypeDot1Q || etype == etherTypeQinQ || etype == etherType9100) && len(p) >= tagLen {
		etype = binary.BigEndian.Uint16(p[2:4])
		p = p[tagLen:]
	}
	if etype != 0x8847 && etype != 0x8848 {
		return nil, false
	}
	for len(p) >= 4 {
		bottom := p[2]&1 != 0
		p = p[4:]
		if bottom {
			break
		}
	}
	return p, true
}

// TestPcapReference runs the reference decoder against ParseFrame on the
// hand-built packets of parse_test.go, so that the cross-check is itself
// checked, and gopacket looks at every case, even where the captures are
// missing. The cases where the two differ, and why, are pinned.
func TestPcapReference(t *testing.T) {
	differ := map[string]string{
		"ipv4/dccp":                             whyDCCP,
		"ipv6/dccp":                             whyDCCP,
		"ipv6/mobility/no-next":                 whyUnknownExt,
		"ipv6/hip/udp":                          whyUnknownExt,
		"ipv6/shim6/tcp":                        whyUnknownExt,
		"ipv6/exp-253/udp":                      whyUnknownExt,
		"ipv6/exp-254/sctp":                     whyUnknownExt,
		"ipv6/ah-8/icmpv6-echo":                 whyShortAH,
		"ipv4/icmp-type-only":                   whyTransportStub,
		"ipv4/options-unread":                   whyIPv4Options,
		"ipv4/total-length-10":                  whyLengthField,
		"ipv6/payload-length-4/destination/udp": whyLengthField,
		"ipv6/payload-length-4/hop-by-hop/tcp":  whyLengthField,
		"ipv4/total-length-20":                  whyLengthField,
		"ipv6/payload-length-0":                 whyLengthField,
		"ipv6/payload-length-1":                 whyLengthField,
		"eth/9100/ipv4/tcp":                     whyTag9100,
		"eth/9100+802.1q/ipv4/icmp-echo":        whyTag9100,
		"eth/8-tags/ipv4/tcp":                   whyTag9100,
		"eth/9-tags":                            whyTag9100,
		"ipv6/mapped-src":                       whyMappedV6,
		"ipv6/mapped-dst":                       whyMappedV6,
	}
	var d refDecoder
	for _, c := range parseCases() {
		frame := c.pkt
		if !c.frame {
			frame = ethIP(c.pkt)
		}
		kind, label, r := d.compare(frame)
		switch want := differ[c.name]; {
		case kind == verdictUnexplained:
			t.Errorf("%s: %s", c.name, label)
		case want == "" && kind != verdictAgree:
			t.Errorf("%s: differ (%s), want agreement", c.name, label)
		case want != "" && (kind != verdictExplained || label != want):
			t.Errorf("%s: %s, want the disagreement %q", c.name, label, want)
		}
		if kind, hl := d.compareHeaders(frame, label, r); kind != verdictAgree {
			t.Errorf("%s: headers: %s", c.name, hl)
		}
	}

	// The same for the header parsers' cases: the reference finds every
	// field of the Headers, but in these cases, where the key or the
	// Headers differ (or there is nothing past the key to compare), for
	// the reasons given.
	headersDiffer := map[string][2]string{ // the key's label, the Headers'
		"ipv4/tcp/data-offset-4":               {whyTCPDataOffset, notWhole},
		"ipv4/tcp/data-offset-15-past-buffer":  {whyTransportStub, notWhole},
		"ipv4/fragment-first/tcp-16":           {whyTransportStub, notWhole},
		"ipv4/total-length-30/under-headers":   {whyTransportStub, whyHeaderPastLength},
		"ipv4/dccp":                            {whyDCCP, ""},
		"ipv4/dccp/data-offset-2":              {whyDCCP, ""},
		"ipv4/total-length-10":                 {whyLengthField, ""},
		"ipv6/payload-length-0/tso":            {whyLengthField, ""},
		"ipv6/payload-length-4/hop-by-hop/tcp": {whyLengthField, ""},
		"eth/9100+802.1q/ipv4/icmp-echo":       {whyTag9100, ""},
		"eth/8-tags/ipv4/udp":                  {whyTag9100, ""},
	}
	for _, c := range headersCases() {
		frame := c.pkt
		if !c.frame {
			frame = ethIP(c.pkt)
		}
		want, ok := headersDiffer[c.name]
		if !ok {
			want = [2]string{"same key", "same headers"}
		}
		_, label, r := d.compare(frame)
		_, hlabel := d.compareHeaders(frame, label, r)
		if label != want[0] || hlabel != want[1] {
			t.Errorf("%s: key %s, headers %s; want %q, %q", c.name, label, hlabel, want[0], want[1])
		}
	}

	// readmeKey, which no capture sends through MPLS, pops the labels.
	mpls := ethFrame(0x8847, []uint16{0x8100}, concat([]byte{0, 1, 0, 0x40}, []byte{0, 2, 1, 0x40}, ip4(ProtoICMP, icmpHdr(8, 0, 9, 1))))
	if k, isMPLS, ok := readmeKey(mpls); !ok || !isMPLS || k != key4(ProtoICMP, 0, 0) {
		t.Errorf("readmeKey(MPLS) = %v, %v, %v; want %v from MPLS", k, isMPLS, ok, key4(ProtoICMP, 0, 0))
	}
}

// TestPcapCrossCheck keys every frame of the captures with ParseFrame and
// with the gopacket reference, and requires them to agree on every frame
// but the pinned, explained ones. It then checks the README's figures:
// frames, IPv4 and IPv6 packets, and distinct one-way 5-tuples.
//
// The README's 5-tuples are not quite our keys, and the count is adjusted
// to compare like with like (see readmeKey): the README gives ICMP ports
// 0/0 where the key holds the echo identifier, and it keys IP under MPLS
// labels where DESIGN makes MPLS ErrNotIP. The keys that only MPLS frames
// contribute are measured and logged (none of the four captures has MPLS).
func TestPcapCrossCheck(t *testing.T) {
	dir := pcapDir(t)
	for _, c := range pcapCaptures {
		t.Run(c.name, func(t *testing.T) {
			var (
				d           refDecoder
				agree       = map[string]int{}
				seen        = map[string]int{}
				explainedBy = map[string]int{}
				unexplained int
				v4, v6      int
				keys        = map[FlowKey]struct{}{} // ParseFrame's keys
				readme      = map[FlowKey]struct{}{} // the README's 5-tuples
				mplsKeys    = map[FlowKey]struct{}{} // the README's, from MPLS frames
				otherKeys   = map[FlowKey]struct{}{} // the README's, from the rest
				frameNo     int

				hdrAgree       = map[string]int{} // ParseFrameHeaders against the reference
				hdrSeen        = map[string]int{}
				hdrExplained   = map[string]int{}
				hdrUnexplained int
			)
			frames := forEachFrame(t, filepath.Join(dir, c.name), func(frame []byte) {
				frameNo++
				k, err := ParseFrame(frame)
				if err == nil {
					keys[k] = struct{}{}
					if k.Is4() {
						v4++
					} else {
						v6++
					}
				}
				if rk, mpls, ok := readmeKey(frame); ok {
					readme[rk] = struct{}{}
					if mpls {
						mplsKeys[rk] = struct{}{}
					} else {
						otherKeys[rk] = struct{}{}
					}
				}

				kind, label, r := d.compare(frame)
				for _, s := range r.seen {
					seen[s]++
				}
				switch kind {
				case verdictAgree:
					agree[label]++
				case verdictExplained:
					explainedBy[label]++
				default:
					unexplained++
					if unexplained <= 10 {
						t.Errorf("frame %d: %s\n% x", frameNo, label, frame[:min(len(frame), 128)])
					}
				}

				kind, label = d.compareHeaders(frame, label, r)
				switch {
				case kind == verdictAgree && label != "":
					hdrAgree[label]++
					var h Headers
					_ = ParseFrameHeaders(frame, &h)
					for _, f := range headerFeatures(frame, h) {
						hdrSeen[f]++
					}
				case kind == verdictExplained:
					hdrExplained[label]++
				case kind == verdictUnexplained:
					hdrUnexplained++
					if hdrUnexplained <= 10 {
						t.Errorf("frame %d: headers: %s\n% x", frameNo, label, frame[:min(len(frame), 128)])
					}
				}
			})

			t.Logf("%d frames: ParseFrame keys %d IPv4 and %d IPv6 frames, %d distinct keys", frames, v4, v6, len(keys))
			logCounts(t, "frames with", seen)
			logCounts(t, "agree", agree)
			logCounts(t, "explained disagreement", explainedBy)
			if unexplained > 0 {
				t.Errorf("%d unexplained disagreements", unexplained)
			}
			if !maps.Equal(explainedBy, c.explained) {
				t.Errorf("explained disagreements %v, want %v", explainedBy, c.explained)
			}
			logCounts(t, "Headers agree", hdrAgree)
			logCounts(t, "Headers checked on frames with", hdrSeen)
			logCounts(t, "Headers: explained disagreement", hdrExplained)
			if hdrUnexplained > 0 {
				t.Errorf("%d unexplained disagreements of the Headers", hdrUnexplained)
			}
			if !maps.Equal(hdrExplained, c.headersExplained) {
				t.Errorf("Headers: explained disagreements %v, want %v", hdrExplained, c.headersExplained)
			}
			// Every frame both key alike has its Headers checked.
			if hdrAgree["same headers"]+hdrExplained[whyHeaderPastLength] != agree["same key"] {
				t.Errorf("Headers checked on %d frames, %d keyed alike", hdrAgree["same headers"]+hdrExplained[whyHeaderPastLength], agree["same key"])
			}
			if frames != c.packets || v4 != c.ipv4 || v6 != c.ipv6 {
				t.Errorf("frames/IPv4/IPv6 = %d/%d/%d, README says %d/%d/%d", frames, v4, v6, c.packets, c.ipv4, c.ipv6)
			}

			mplsOnly := 0
			for k := range mplsKeys {
				if _, ok := otherKeys[k]; !ok {
					mplsOnly++
				}
			}
			t.Logf("README's count: %d distinct 5-tuples (echo identifiers zeroed; MPLS popped, %d of them only from MPLS frames); README says %d",
				len(readme), mplsOnly, c.distinct)
			if len(readme) != c.distinct {
				t.Errorf("distinct 5-tuples counted as the README does: %d, README says %d", len(readme), c.distinct)
			}
		})
	}
}

func errKind(err error) string {
	for _, e := range []error{ErrTruncated, ErrNotIP, ErrMalformed} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "unknown error " + err.Error()
}

func logCounts(t *testing.T, what string, m map[string]int) {
	t.Helper()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t.Logf("%s: %s: %d", what, n, m[n])
	}
}
