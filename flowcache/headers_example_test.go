package flowcache_test

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/flowcache/flowcache/flowcache"
)

// A connection tracker's first step on a frame from an AF_PACKET SOCK_RAW
// socket: one parse gives the flow's key, for the table, and the TCP
// flags and offsets, for the state machine, with no second walk over the
// tags and the IP header.
func ExampleParseFrameHeaders() {
	// A TCP SYN from 192.0.2.1:49152 to 198.51.100.2:443 on VLAN 100.
	frame, _ := hex.DecodeString("020000000001" + "020000000002" + "81000064" + "0800" +
		"4500002800000000400600" + "00c0000201c6336402" + // IPv4, 20 bytes
		"c00001bb" + "01020304" + "00000000" + "5002faf0" + "00000000") // TCP, 20 bytes: SYN, window 64240

	var h flowcache.Headers
	if err := flowcache.ParseFrameHeaders(frame, &h); err != nil {
		fmt.Println("drop:", err)
		return
	}
	fmt.Println(h.Key)
	fmt.Println("IPv", h.Version, "at", h.L3, "TCP at", h.L4, "payload at", h.Payload, "of", h.PayloadLen, "bytes")
	if h.Key.Proto() == flowcache.ProtoTCP && h.L4Whole {
		// L4Whole: all of the TCP header is in the frame, options too.
		fmt.Println(h.Flags, "window", binary.BigEndian.Uint16(frame[h.L4+14:]))
		if h.Flags&(flowcache.SYN|flowcache.ACK|flowcache.RST) == flowcache.SYN {
			fmt.Println("a connection opens")
		}
	}
	// Output:
	// tcp 192.0.2.1:49152 -> 198.51.100.2:443
	// IPv 4 at 18 TCP at 38 payload at 58 of 0 bytes
	// SYN window 64240
	// a connection opens
}

// ParseHeaders reads an IP packet from its first byte (a TUN device, an
// AF_PACKET SOCK_DGRAM socket). It fails exactly where ParseFlowKey does,
// with the same error.
func ExampleParseHeaders() {
	for _, s := range []string{
		// An ICMPv6 echo request from 2001:db8::1 to 2001:db8:ffff::2
		// carrying "ping".
		"60000000000c3a40" + "20010db8000000000000000000000001" + "20010db8ffff00000000000000000002" +
			"8000beef12340001" + "70696e67",
		// The last fragment of a UDP datagram (offset 185×8): no UDP
		// header, so no ports and no L4 offset.
		"4500002c000000b940110000" + "c0000201" + "c6336402" +
			"2e2e2e72657374206f66206120646174616772616d2e2e2e",
		// A TCP packet cut inside its ports.
		"4500002800000000400600" + "00c0000201c6336402" + "c000",
	} {
		packet, _ := hex.DecodeString(s)
		var h flowcache.Headers
		if err := flowcache.ParseHeaders(packet, &h); err != nil {
			fmt.Println("drop:", err, errors.Is(err, flowcache.ErrTruncated))
			continue
		}
		fmt.Println(h.Key)
		fmt.Printf("  L4 %d, ICMP type %d code %d, fragment %v, non-first %v, payload %q\n",
			h.L4, h.ICMPType, h.ICMPCode, h.Fragment, h.NonFirstFragment, packet[h.Payload:h.Payload+h.PayloadLen])
	}
	// Output:
	// icmpv6 2001:db8::1 -> 2001:db8:ffff::2 id 4660
	//   L4 40, ICMP type 128 code 0, fragment false, non-first false, payload "ping"
	// udp 192.0.2.1:0 -> 198.51.100.2:0
	//   L4 -1, ICMP type 0 code 0, fragment true, non-first true, payload "...rest of a datagram..."
	// drop: flowcache: truncated packet: transport header shorter than its 4 bytes of ports true
}

func ExampleTCPFlags_String() {
	fmt.Println(flowcache.SYN|flowcache.ACK, flowcache.FIN|flowcache.PSH|flowcache.ACK, flowcache.TCPFlags(0))
	// Output: SYN|ACK FIN|PSH|ACK 0
}
