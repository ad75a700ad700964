package flowcache

// A FlowKey as text: what String, MarshalText and UnmarshalText agree on.
// The text goes into logs, dumps, flow files and JSON, where a person
// reads it and a program may read it back, so it has two jobs: the keys a
// forwarder sees (TCP, UDP, ICMP echo, tunnels) read the way tcpdump and
// conntrack print them, and every key NewFlowKey can build — 2^264 of
// them, including ones no parser produces — has a text that reads back to
// the same 40 bytes.

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrBadKeyText: UnmarshalText was given text that is not a key. The
// errors it returns wrap it, with the reason; match with errors.Is.
var ErrBadKeyText = errors.New("flowcache: malformed key text")

// protoNames are the protocols String names: the IANA keywords, lower
// case, except icmpv6 (IANA's "ipv6-icmp") and ospf ("ospfigp"), which
// every tool calls by these names. Any other number is "proto-N".
var protoNames = [256]string{
	ProtoICMP:   "icmp",
	2:           "igmp",
	4:           "ipv4", // IP in IP
	ProtoTCP:    "tcp",
	ProtoUDP:    "udp",
	ProtoDCCP:   "dccp",
	41:          "ipv6", // IPv6 in IP (6in4)
	47:          "gre",
	50:          "esp",
	51:          "ah",
	ProtoICMPv6: "icmpv6",
	89:          "ospf",
	103:         "pim",
	112:         "vrrp",
	115:         "l2tp",
	ProtoSCTP:   "sctp",
	136:         "udplite",
}

const protoPrefix = "proto-"

// hasPorts: the protocols whose first four transport bytes the parsers
// read as ports. Their text always shows both ports, 0 included (a
// non-first fragment), so that the common text has one shape.
func hasPorts(p uint8) bool {
	return p == ProtoTCP || p == ProtoUDP || p == ProtoDCCP || p == ProtoSCTP
}

// isICMP: the protocols whose echo messages put the identifier in both
// ports.
func isICMP(p uint8) bool { return p == ProtoICMP || p == ProtoICMPv6 }

// String formats the key on one line, the way logs, Dump listings and JSON
// show it:
//
//	tcp 10.0.0.1:1234 -> 10.0.0.2:80
//	udp [2001:db8::1]:53 -> [2001:db8::2]:4000
//	icmp 10.0.0.1 -> 10.0.0.2 id 7           an echo: both ports hold the identifier
//	icmpv6 fe80::1 -> ff02::2                any other ICMP message: ports 0/0
//	gre 10.0.0.1 -> 10.0.0.2                 a protocol without ports
//	proto-253 10.0.0.1 -> 10.0.0.2           an unnamed protocol
//
// The grammar, with exactly one space between fields:
//
//	key   = proto " " end " -> " end [ " id " num ]
//	proto = name | "proto-" num
//	end   = ipv4 [ ":" num ] | ipv6 | "[" ipv6 "]" [ ":" num ]
//	num   = decimal digits, no sign, no leading zero: 0-255 after proto-, 0-65535 for a port or id
//
// The names are icmp (1), igmp (2), ipv4 (4), tcp (6), udp (17), dccp
// (33), ipv6 (41), gre (47), esp (50), ah (51), icmpv6 (58), ospf (89),
// pim (103), vrrp (112), l2tp (115), sctp (132) and udplite (136); every
// other protocol is proto-N. IPv6 addresses are in brackets when a port
// follows, bare otherwise, and IPv4 addresses are written as IPv4 (the key
// stores them IPv4-mapped). Which ports String writes depends on the
// protocol, so that each key has one text:
//
//   - tcp, udp, dccp and sctp: always both ports, 0 included.
//   - icmp and icmpv6: "id N" when both ports are N ≠ 0 (an echo); nothing
//     when both are 0; both ports when they differ, which no parser
//     produces but NewFlowKey can.
//   - any other protocol: nothing when both ports are 0, else both.
//
// UnmarshalText reads every text String writes back to the same key. It
// also reads the protocol names in any case and "proto-N" for a named
// protocol, bracketed IPv6 without a port, and IPv4-mapped IPv6 addresses,
// so text written by hand or by older versions (which wrote "TCP" and
// every port) reads back too.
func (k FlowKey) String() string {
	return string(k.appendText(make([]byte, 0, 64)))
}

// MarshalText writes exactly String(), so encoding/json and other text
// encoders carry the readable key (also as a JSON object key). It never
// fails. json.Marshal escapes the arrow's ">" as \u003e, as it does every
// <, > and & so that JSON can sit in HTML; every JSON decoder reads the
// same text back, and a json.Encoder with SetEscapeHTML(false) writes the
// ">" as it is.
func (k FlowKey) MarshalText() ([]byte, error) {
	return k.appendText(make([]byte, 0, 64)), nil
}

// UnmarshalText parses text in the form String writes (see String for the
// grammar). An absent port is 0 and "id N" sets both ports to N. It
// refuses a port on one address only; tcp, udp, dccp or sctp without
// ports (so "2001:db8::1:80", an IPv6 address whose port lacks brackets,
// is an error rather than port 0); an id for any protocol but icmp and
// icmpv6, or beside ports; and an address with a zone, which no key
// holds. On an error, which wraps ErrBadKeyText, *k is left unchanged.
func (k *FlowKey) UnmarshalText(text []byte) error {
	nk, err := parseKeyText(string(text))
	if err != nil {
		return err
	}
	*k = nk
	return nil
}

func (k FlowKey) appendText(b []byte) []byte {
	f := k.fields()
	if name := protoNames[f.proto]; name != "" {
		b = append(b, name...)
	} else {
		b = append(b, protoPrefix...)
		b = strconv.AppendUint(b, uint64(f.proto), 10)
	}
	ports, id := true, false
	switch {
	case hasPorts(f.proto):
	case f.srcPort == 0 && f.dstPort == 0:
		ports = false
	case isICMP(f.proto) && f.srcPort == f.dstPort:
		ports, id = false, true
	}
	b = append(b, ' ')
	b = appendEnd(b, k.Src(), f.srcPort, ports)
	b = append(b, " -> "...)
	b = appendEnd(b, k.Dst(), f.dstPort, ports)
	if id {
		b = append(b, " id "...)
		b = strconv.AppendUint(b, uint64(f.srcPort), 10)
	}
	return b
}

func appendEnd(b []byte, a netip.Addr, port uint16, withPort bool) []byte {
	if !withPort {
		return a.AppendTo(b)
	}
	// AddrPort's text brackets IPv6 and leaves IPv4 bare; a key's
	// addresses carry no zone.
	return netip.AddrPortFrom(a, port).AppendTo(b)
}

// keyTextError wraps ErrBadKeyText with the reason and the text, cut short
// so that a huge input does not make a huge error.
func keyTextError(text, reason string) error {
	const most = 80
	if len(text) > most {
		text = text[:most] + "…"
	}
	return fmt.Errorf("%w: %s in %q", ErrBadKeyText, reason, text)
}

func parseKeyText(text string) (FlowKey, error) {
	f := strings.Split(text, " ")
	switch {
	case len(f) == 6 && f[4] == "id":
	case len(f) == 4:
	default:
		return FlowKey{}, keyTextError(text, `want "proto src -> dst" or "proto src -> dst id N", one space apart`)
	}
	if f[2] != "->" {
		return FlowKey{}, keyTextError(text, `want "->" between the addresses`)
	}
	proto, ok := parseProto(f[0])
	if !ok {
		return FlowKey{}, keyTextError(text, fmt.Sprintf("unknown protocol %q", f[0]))
	}
	src, sport, sHas, err := parseEnd(f[1])
	if err != nil {
		return FlowKey{}, keyTextError(text, "source: "+err.Error())
	}
	dst, dport, dHas, err := parseEnd(f[3])
	if err != nil {
		return FlowKey{}, keyTextError(text, "destination: "+err.Error())
	}
	if hasPorts(proto) && !(sHas && dHas) {
		// Required, so that an IPv6 address with a port but no brackets
		// ("2001:db8::1:80", itself an address) is caught, not read as
		// port 0.
		return FlowKey{}, keyTextError(text, f[0]+" needs both ports (an IPv6 address takes brackets before its port)")
	}
	if sHas != dHas {
		return FlowKey{}, keyTextError(text, "a port on one address but not the other")
	}
	if len(f) == 6 {
		if !isICMP(proto) {
			return FlowKey{}, keyTextError(text, "an id is for icmp and icmpv6 only")
		}
		if sHas {
			return FlowKey{}, keyTextError(text, "both ports and an id")
		}
		id, ok := parseNum(f[5], 0xffff)
		if !ok {
			return FlowKey{}, keyTextError(text, fmt.Sprintf("id %q is not a number from 0 to 65535", f[5]))
		}
		sport, dport = uint16(id), uint16(id)
	}
	return NewFlowKey(src, dst, sport, dport, proto), nil
}

func parseProto(s string) (uint8, bool) {
	if len(s) > len(protoPrefix) && equalFoldASCII(s[:len(protoPrefix)], protoPrefix) {
		n, ok := parseNum(s[len(protoPrefix):], 0xff)
		return uint8(n), ok
	}
	for p, name := range protoNames {
		if name != "" && equalFoldASCII(s, name) {
			return uint8(p), true
		}
	}
	return 0, false
}

// equalFoldASCII is strings.EqualFold for ASCII only: EqualFold would
// also take "ſctp" (U+017F folds to s) for sctp.
func equalFoldASCII(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// parseNum reads a decimal number up to most, with no sign, space or
// leading zero: one number has one text.
func parseNum(s string, most uint64) (uint64, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' || len(s) > 5 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, n <= most
}

// parseEnd reads one address with its optional port.
func parseEnd(s string) (a netip.Addr, port uint16, hasPort bool, err error) {
	host, ps := s, ""
	if strings.HasPrefix(s, "[") {
		i := strings.IndexByte(s, ']')
		if i < 0 {
			return a, 0, false, errors.New("no closing bracket")
		}
		host, ps = s[1:i], s[i+1:]
		if ps != "" {
			if ps[0] != ':' {
				return a, 0, false, errors.New(`want ":port" after the bracket`)
			}
			ps, hasPort = ps[1:], true
		}
		a, err = netip.ParseAddr(host)
		if err == nil && a.Is4() {
			return a, 0, false, errors.New("an IPv4 address in brackets")
		}
	} else {
		a, err = netip.ParseAddr(s)
		if err != nil {
			// Not an address by itself: IPv4 with a port. (An IPv6
			// address takes brackets before a port.)
			i := strings.LastIndexByte(s, ':')
			if i < 0 {
				return a, 0, false, err
			}
			host, ps, hasPort = s[:i], s[i+1:], true
			a, err = netip.ParseAddr(host)
			if err == nil && !a.Is4() {
				return a, 0, false, errors.New("an IPv6 address with a port needs brackets")
			}
		}
	}
	if err != nil {
		return a, 0, false, err
	}
	if a.Zone() != "" {
		// A zone is not on the wire, so no key holds one.
		return a, 0, false, errors.New("an address with a zone")
	}
	if hasPort {
		n, ok := parseNum(ps, 0xffff)
		if !ok {
			return a, 0, false, fmt.Errorf("port %q is not a number from 0 to 65535", ps)
		}
		port = uint16(n)
	}
	return a, port, hasPort, nil
}
