package flowcache

// The cross-check on real captures: every frame of the captures in
// ../shared/data/pcap (beside the module, never copied into it) is keyed by
// ParseFrame and, independently, by gopacket's layer decoders, and the two
// must agree. gopacket decodes the fields; the rules of the key (outer
// header only, which ICMP types are echo, 0/0 for non-first fragments, at
// most 8 extension headers and tags) are applied on top, from DESIGN.md,
// in refDecoder below. The decoders are driven by hand rather than by
// gopacket.NewPacket or a DecodingLayerParser because both of those walk
// on into a tunnel's inner header and key it there, and this key stops at
// the outer one.
//
// Where gopacket refuses a frame that ParseFrame keys, the test names the
// reason, checks it from the bytes, and counts it; a disagreement without
// a reason fails the test.

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
// depend on where in the module it lives. It skips the test when the
// folder is not there: the captures are not part of the module.
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
	pcaps := filepath.Join(dir, "..", "shared", "data", "pcap")
	if fi, err := os.Stat(pcaps); err != nil || !fi.IsDir() {
		tb.Skipf("captures not found at %s", pcaps)
	}
	return pcaps
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
	layer   gopacket.LayerType // the layer that failed, or what the EtherType named
	err     error              // gopacket's error, for refFailed
	data    []byte             // the bytes the failing layer was given
	ipLen   int                // the IP header's length field (total or payload length)
	ipBytes int                // the bytes after the Ethernet header and tags
	seen    []string           // what the frame exercises, for the coverage log
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
}

func failed(layer gopacket.LayerType, err error, data []byte) refResult {
	return refResult{outcome: refFailed, layer: layer, err: err, data: data}
}

func (d *refDecoder) decode(frame []byte) refResult {
	d.seen = d.seen[:0]
	r := d.decodeFrame(frame)
	r.seen = d.seen
	return r
}

func (d *refDecoder) decodeFrame(frame []byte) refResult {
	nf := gopacket.NilDecodeFeedback
	if err := d.eth.DecodeFromBytes(frame, nf); err != nil {
		return failed(layers.LayerTypeEthernet, err, frame)
	}
	typ, payload := d.eth.NextLayerType(), d.eth.Payload
	// gopacket knows 0x8100 and 0x88a8 as Dot1Q; 0x9100 it does not, so
	// such a frame lands in refNotIP and is counted there.
	tags := 0
	for ; typ == layers.LayerTypeDot1Q; tags++ {
		if tags == maxTags {
			return refResult{outcome: refMalformed, layer: typ}
		}
		if err := d.dot1q.DecodeFromBytes(payload, nf); err != nil {
			return failed(layers.LayerTypeDot1Q, err, payload)
		}
		typ, payload = d.dot1q.NextLayerType(), d.dot1q.Payload
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
		return refResult{outcome: refNotIP, layer: typ}
	}
	r.ipBytes = len(payload)
	return r
}

func (d *refDecoder) ipv4(p []byte) refResult {
	if err := d.ip4.DecodeFromBytes(p, gopacket.NilDecodeFeedback); err != nil {
		r := failed(layers.LayerTypeIPv4, err, p)
		if len(p) >= 4 {
			r.ipLen = int(binary.BigEndian.Uint16(p[2:4]))
		}
		return r
	}
	if d.ip4.Version != 4 {
		return refResult{outcome: refMalformed, layer: layers.LayerTypeIPv4}
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
		return refResult{key: k, ipLen: int(d.ip4.Length)}
	}
	// gopacket hands the payload of a first fragment (MF set) to its
	// Fragment layer, but that payload starts with the transport header,
	// so it is decoded here like any other.
	r := d.transport(k, d.ip4.Protocol, d.ip4.Payload)
	r.ipLen = int(d.ip4.Length)
	return r
}

func (d *refDecoder) ipv6(p []byte) refResult {
	nf := gopacket.NilDecodeFeedback
	if err := d.ip6.DecodeFromBytes(p, nf); err != nil {
		r := failed(layers.LayerTypeIPv6, err, p)
		if len(p) >= 6 {
			r.ipLen = int(binary.BigEndian.Uint16(p[4:6]))
		}
		return r
	}
	if d.ip6.Version != 6 {
		return refResult{outcome: refMalformed, layer: layers.LayerTypeIPv6}
	}
	k := NewFlowKey(netip.AddrFrom16([16]byte(d.ip6.SrcIP)), netip.AddrFrom16([16]byte(d.ip6.DstIP)), 0, 0, 0)
	nh, payload, n := d.ip6.NextHeader, d.ip6.Payload, 0
	if d.ip6.HopByHop != nil {
		// gopacket decodes a Hop-by-Hop header as part of the IPv6 layer.
		nh, n = d.ip6.HopByHop.NextHeader, 1
		d.seen = append(d.seen, "IPv6 extension header (IPv6HopByHop)")
	}
	result := func(r refResult) refResult {
		r.ipLen = int(d.ip6.Length)
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
					return result(refResult{key: k})
				}
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
			return result(failed(lt, err, payload))
		}
	}
}

// transport sets the ports of k from the layer that proto names, as
// gopacket maps protocol numbers to layers.
func (d *refDecoder) transport(k FlowKey, proto layers.IPProtocol, p []byte) refResult {
	nf := gopacket.NilDecodeFeedback
	lt := proto.LayerType()
	var err error
	switch lt {
	case layers.LayerTypeTCP:
		if err = d.tcp.DecodeFromBytes(p, nf); err == nil {
			k.srcPort, k.dstPort = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
		}
	case layers.LayerTypeUDP:
		if err = d.udp.DecodeFromBytes(p, nf); err == nil {
			k.srcPort, k.dstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
		}
	case layers.LayerTypeSCTP:
		if err = d.sctp.DecodeFromBytes(p, nf); err == nil {
			k.srcPort, k.dstPort = uint16(d.sctp.SrcPort), uint16(d.sctp.DstPort)
		}
	case layers.LayerTypeUDPLite:
		// UDPLite has no DecodingLayer; decode it as a packet of its own.
		pkt := gopacket.NewPacket(p, layers.LayerTypeUDPLite, gopacket.NoCopy)
		if u, ok := pkt.Layer(layers.LayerTypeUDPLite).(*layers.UDPLite); ok {
			k.srcPort, k.dstPort = uint16(u.SrcPort), uint16(u.DstPort)
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
		}
	}
	if err != nil {
		return failed(lt, err, p)
	}
	return refResult{key: k}
}

// The reasons a frame that ParseFrame keys can be refused by gopacket.
// Each is a documented difference, not a bug: the key reads as few bytes
// as it can and trusts no length field (DESIGN.md), gopacket decodes whole
// headers within the lengths the headers give.
const (
	// The transport header holds the bytes the key needs (4 for ports, 1
	// for an ICMP type, 6 for an echo) but not the fixed header gopacket
	// decodes (TCP 20 and its options, UDP 8, SCTP 12, ICMPv4 8, ICMPv6 4
	// and 4 more for an echo).
	whyTransportStub = "transport header holds the key's bytes but is shorter than gopacket's fixed header"
	// An IP length field (IPv4 total length, IPv6 payload length) is 0 or
	// ends before the headers the key reads; gopacket trusts it, the key
	// does not (frames captured with segmentation offload carry 0).
	whyLengthField = "IP length field is 0 or shorter than the headers; the key ignores it"
	// IPv4 options gopacket finds malformed; the key skips options by IHL
	// without reading them.
	whyIPv4Options = "IPv4 options gopacket refuses; the key skips them unread"
)

// explain says why gopacket refused a frame that ParseFrame keyed, from
// the bytes gopacket's failing layer was given, or "" when nothing does.
func explain(r refResult) string {
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
		}
	case layers.LayerTypeIPv4:
		switch ihl := int(data[0]&0x0f) * 4; {
		case r.ipLen != 0 && r.ipLen < ihl:
			return whyLengthField
		case strings.Contains(r.err.Error(), "option"):
			return whyIPv4Options
		}
	case layers.LayerTypeIPv6:
		if r.ipLen == 0 {
			return whyLengthField
		}
	case layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Destination,
		layers.LayerTypeIPv6Fragment, layers.LayerTypeIPSecAH:
		if r.ipLen < r.ipBytes-ipv6HeaderLen {
			return whyLengthField
		}
	}
	return ""
}

// readmeKey keys a frame as the README's counter (flowcount.py) does, for
// the distinct-key count: MPLS labels are popped (DESIGN makes MPLS
// ErrNotIP, so these keys are extra), and ICMP echo identifiers are zeroed
// (the README gives every protocol but TCP/UDP/SCTP/UDP-Lite ports 0/0).
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
	if k.proto == ProtoICMP || k.proto == ProtoICMPv6 {
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
				explained   = map[string]int{}
				unexplained int
				v4, v6      int
				keys        = map[FlowKey]struct{}{} // ParseFrame's keys
				readme      = map[FlowKey]struct{}{} // the README's 5-tuples
				mplsKeys    = map[FlowKey]struct{}{} // the README's, from MPLS frames
				frameNo     int
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
					}
				}

				r := d.decode(frame)
				for _, s := range r.seen {
					seen[s]++
				}
				bad := func(format string, args ...any) {
					unexplained++
					if unexplained <= 10 {
						t.Errorf("frame %d: %s\n% x", frameNo, fmt.Sprintf(format, args...), frame[:min(len(frame), 128)])
					}
				}
				switch r.outcome {
				case refKeyed:
					switch {
					case err != nil:
						bad("gopacket keys it %v, ParseFrame: %v", r.key, err)
					case k != r.key:
						bad("ParseFrame %v, gopacket %v", k, r.key)
					default:
						agree["same key"]++
					}
				case refNotIP:
					if errors.Is(err, ErrNotIP) {
						agree["not IP: "+r.layer.String()]++
					} else {
						bad("gopacket: not IP (%v); ParseFrame %v, %v", r.layer, k, err)
					}
				case refMPLS:
					if errors.Is(err, ErrNotIP) {
						agree["not IP: MPLS"]++
					} else {
						bad("MPLS; ParseFrame %v, %v", k, err)
					}
				case refMalformed:
					if errors.Is(err, ErrMalformed) {
						agree["malformed"]++
					} else {
						bad("malformed at %v; ParseFrame %v, %v", r.layer, k, err)
					}
				case refFailed:
					switch why := explain(r); {
					case err != nil:
						agree[fmt.Sprintf("both refuse: gopacket %v, %s", r.layer, errKind(err))]++
					case why != "":
						explained[why]++
					default:
						bad("gopacket %v: %v; ParseFrame %v", r.layer, r.err, k)
					}
				}
			})

			t.Logf("%d frames: ParseFrame keys %d IPv4 and %d IPv6 frames, %d distinct keys", frames, v4, v6, len(keys))
			logCounts(t, "frames with", seen)
			logCounts(t, "agree", agree)
			logCounts(t, "explained disagreement", explained)
			if unexplained > 0 {
				t.Errorf("%d unexplained disagreements", unexplained)
			}
			if !maps.Equal(explained, c.explained) {
				t.Errorf("explained disagreements %v, want %v", explained, c.explained)
			}
			if frames != c.packets || v4 != c.ipv4 || v6 != c.ipv6 {
				t.Errorf("frames/IPv4/IPv6 = %d/%d/%d, README says %d/%d/%d", frames, v4, v6, c.packets, c.ipv4, c.ipv6)
			}

			mplsOnly := 0
			for k := range mplsKeys {
				if _, ok := keys[k]; !ok {
					mplsOnly++
				}
			}
			t.Logf("README's count: %d distinct (echo identifiers zeroed, MPLS popped: %d keys only from MPLS frames); README says %d",
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
