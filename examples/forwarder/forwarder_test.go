package main

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// These tests need no root and no network: they drive a worker with
// frames built here and a send function that records, and -keys-from with
// captures written here. e2e.sh tests the rest between namespaces.

var (
	genMAC  = [6]byte{2, 0, 0, 0, 0, 1}
	inMAC   = [6]byte{2, 0, 0, 0, 0, 2}
	outMAC  = [6]byte{2, 0, 0, 0, 0, 3}
	sinkMAC = [6]byte{2, 0, 0, 0, 0, 4}
)

// udp4 is an Ethernet frame carrying an IPv4 UDP datagram.
func udp4(src, dst string, sport, dport uint16) []byte {
	f := eth(0x0800)
	ip := make([]byte, 20+8)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8] = 64
	ip[9] = flowcache.ProtoUDP
	copy(ip[12:16], netip.MustParseAddr(src).AsSlice())
	copy(ip[16:20], netip.MustParseAddr(dst).AsSlice())
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	return append(f, ip...)
}

// tcp6 is an Ethernet frame carrying an IPv6 TCP segment's first bytes.
func tcp6(src, dst string, sport, dport uint16) []byte {
	f := eth(0x86DD)
	ip := make([]byte, 40+20)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 20)
	ip[6] = flowcache.ProtoTCP
	ip[7] = 64
	copy(ip[8:24], netip.MustParseAddr(src).AsSlice())
	copy(ip[24:40], netip.MustParseAddr(dst).AsSlice())
	binary.BigEndian.PutUint16(ip[40:], sport)
	binary.BigEndian.PutUint16(ip[42:], dport)
	return append(f, ip...)
}

func arp() []byte { return append(eth(0x0806), make([]byte, 28)...) }

func eth(etype uint16) []byte {
	f := make([]byte, 14)
	copy(f[0:6], inMAC[:])
	copy(f[6:12], genMAC[:])
	binary.BigEndian.PutUint16(f[12:], etype)
	return f
}

func newTestTable(t *testing.T, limit int) *flowcache.Table[Flow] {
	return newPolicyTable(t, limit, DropWhenFull)
}

// newPolicyTable is the forwarder's table (tableConfig) for policy, with a
// fixed seed and a domain of its own.
func newPolicyTable(t *testing.T, limit int, policy FullPolicy) *flowcache.Table[Flow] {
	t.Helper()
	cfg := tableConfig("test", limit, 0, policy, reclaim.NewDomain())
	cfg.Seed = 1
	table, err := flowcache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { table.Close() })
	return table
}

// testWorker is a worker whose sends land in *sent.
func testWorker(t *testing.T, table *flowcache.Table[Flow], policy FullPolicy, sent *[][]byte) *worker {
	w := newWorker(table, 64)
	w.policy = policy
	w.dstMAC, w.srcMAC = sinkMAC, outMAC
	w.peak = new(atomic.Int64)
	w.seen = make(map[flowcache.FlowKey]struct{})
	w.send = func(f []byte) error {
		*sent = append(*sent, bytes.Clone(f))
		return nil
	}
	return w
}

func TestHandleForwardsIPAndDropsTheRest(t *testing.T) {
	table := newTestTable(t, 100)
	var sent [][]byte
	w := testWorker(t, table, DropWhenFull, &sent)

	a := udp4("198.18.0.10", "198.18.0.1", 1000, 53)
	b := tcp6("fd66:6c6f:7763::10", "fd66:6c6f:7763::1", 40000, 443)
	batch := [][]byte{a, arp(), b, bytes.Clone(a), eth(0x0800)[:10], udp4("198.18.0.11", "198.18.0.1", 1000, 53)}
	w.handle(batch)

	if got, want := len(sent), 4; got != want {
		t.Fatalf("sent %d frames, want %d (the IP ones)", got, want)
	}
	for i, f := range sent {
		if [6]byte(f[0:6]) != sinkMAC || [6]byte(f[6:12]) != outMAC {
			t.Errorf("frame %d: MACs %x %x, want dst = next hop, src = out interface", i, f[0:6], f[6:12])
		}
		if !bytes.Equal(f[12:], batch[[]int{0, 2, 3, 5}[i]][12:]) {
			t.Errorf("frame %d: changed past the MACs", i)
		}
	}
	if n := w.c.notIP.Load(); n != 1 {
		t.Errorf("notIP = %d, want 1 (the ARP frame)", n)
	}
	if n := w.c.malformed.Load(); n != 1 {
		t.Errorf("malformed = %d, want 1 (the 10-byte frame)", n)
	}
	if n := w.c.out.Load(); n != 4 {
		t.Errorf("out = %d, want 4", n)
	}
	// a appears twice in the batch: both miss, one inserts.
	if got := table.Len(); got != 3 || len(w.seen) != 6 || w.peak.Load() != 3 {
		t.Errorf("Len %d, seen %d keys, peak %d: want 3 flows, 6 keys", got, len(w.seen), w.peak.Load())
	}
	// One lookup per IP frame (4 misses), and no other: the reply
	// direction of a flow is its pair's second key, found by the same
	// lookup as any packet. Each new flow is a pair.
	if st := table.Stats(); st.Misses != 4 || st.Inserts != 3 || st.Pairs != 3 {
		t.Errorf("misses %d, inserts %d, pairs %d; want 4, 3 and 3", st.Misses, st.Inserts, st.Pairs)
	}

	// The next batch of the same flows hits: nothing new is inserted.
	sent = sent[:0]
	w.handle([][]byte{bytes.Clone(a), bytes.Clone(b)})
	if len(sent) != 2 || table.Stats().Inserts != 3 {
		t.Errorf("second batch: sent %d, inserts %d; want 2 and still 3", len(sent), table.Stats().Inserts)
	}
}

func TestFullPolicy(t *testing.T) {
	for _, tc := range []struct {
		name         string
		policy       FullPolicy
		wantSent     int
		dropped, fwd uint64
	}{
		{"drop", DropWhenFull, 2, 2, 0},
		{"forward", ForwardWhenFull, 4, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := newTestTable(t, 1)
			var sent [][]byte
			w := testWorker(t, table, tc.policy, &sent)
			old := udp4("198.18.0.10", "198.18.0.1", 1000, 53)
			w.handle([][]byte{old})
			// The table is full: a new flow is refused, twice; the old
			// one still goes through.
			newer := udp4("198.18.0.20", "198.18.0.1", 2000, 53)
			w.handle([][]byte{newer, bytes.Clone(newer), bytes.Clone(old)})
			if len(sent) != tc.wantSent {
				t.Errorf("sent %d frames, want %d", len(sent), tc.wantSent)
			}
			if w.c.droppedFull.Load() != tc.dropped || w.c.forwardedFull.Load() != tc.fwd {
				t.Errorf("droppedFull %d forwardedFull %d, want %d %d", w.c.droppedFull.Load(), w.c.forwardedFull.Load(), tc.dropped, tc.fwd)
			}
			st := table.Stats()
			if st.Live != 1 || st.FullRejections != 2 || w.peak.Load() != 1 {
				t.Errorf("live %d, rejections %d, peak %d; want 1, 2, 1", st.Live, st.FullRejections, w.peak.Load())
			}
		})
	}
}

// TestExpiryFreesRoom: once the only flow expires, a new one gets in.
func TestExpiryFreesRoom(t *testing.T) {
	table := newTestTable(t, 1)
	table.SetTTL(time.Second)
	var sent [][]byte
	w := testWorker(t, table, DropWhenFull, &sent)
	w.handle([][]byte{udp4("198.18.0.10", "198.18.0.1", 1000, 53)})
	table.Expire(time.Now().Add(2 * time.Second))
	w.handle([][]byte{udp4("198.18.0.20", "198.18.0.1", 2000, 53)})
	if len(sent) != 2 || table.Stats().FullRejections != 0 {
		t.Errorf("sent %d, rejections %d; want 2 and 0", len(sent), table.Stats().FullRejections)
	}
}

// writeCapture writes frames as a pcap, or a pcapng with ng.
func writeCapture(t *testing.T, path string, ng bool, frames [][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var write func(gopacket.CaptureInfo, []byte) error
	var flush func() error
	if ng {
		w, err := pcapgo.NewNgWriter(f, layers.LinkTypeEthernet)
		if err != nil {
			t.Fatal(err)
		}
		write, flush = w.WritePacket, w.Flush
	} else {
		w := pcapgo.NewWriter(f)
		if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
			t.Fatal(err)
		}
		write, flush = w.WritePacket, func() error { return nil }
	}
	for i, b := range frames {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1700000000, int64(i)*1000), CaptureLength: len(b), Length: len(b)}
		if err := write(ci, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := flush(); err != nil {
		t.Fatal(err)
	}
}

func TestKeysFrom(t *testing.T) {
	jumbo := udp4("198.18.0.30", "198.18.0.1", 3000, 53)
	jumbo = append(jumbo, make([]byte, 9100-len(jumbo))...)
	frames := [][]byte{
		udp4("198.18.0.10", "198.18.0.1", 1000, 53),
		udp4("198.18.0.10", "198.18.0.1", 1000, 53),
		udp4("198.18.0.1", "198.18.0.10", 53, 1000), // the reply: the same flow
		tcp6("fd66:6c6f:7763::10", "fd66:6c6f:7763::1", 40000, 443),
		arp(),
		{0, 0, 0, 0}, // a runt, as in a real capture
		jumbo,
		eth(0x86DD), // IPv6 with no header: truncated
	}
	for _, ng := range []bool{false, true} {
		name := map[bool]string{false: "pcap", true: "pcapng"}[ng]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "in."+name)
			writeCapture(t, in, ng, frames)

			var filtered bytes.Buffer
			rep, counts, err := keyCapture(in, frameSel{maxFrame: 9014, hi: -1}, &filtered)
			if err != nil {
				t.Fatal(err)
			}
			want := captureReport{File: in, MaxFrame: 9014, Frames: 8, Oversize: 1, Runts: 1, Kept: 6, IPFrames: 4, NotIP: 1, Malformed: 1, Flows: 2}
			if rep != want {
				t.Errorf("report\n got %+v\nwant %+v", rep, want)
			}

			// -frames 1:3: the second and third of the frames kept.
			rep1, counts1, err := keyCapture(in, frameSel{maxFrame: 9014, lo: 1, hi: 3}, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The query and its reply: one flow, a key each.
			want1 := captureReport{File: in, MaxFrame: 9014, Frames: 8, Oversize: 1, Runts: 1, Skipped: 4, Kept: 2, IPFrames: 2, Flows: 1}
			if rep1 != want1 || len(counts1) != 2 || counts1[keyOf(t, frames[1])] != 1 {
				t.Errorf("-frames 1:3: report\n got %+v\nwant %+v; counts %v", rep1, want1, counts1)
			}
			cf := filepath.Join(dir, "counts.txt")
			if err := writeCounts(cf, counts); err != nil {
				t.Fatal(err)
			}
			wantCounts := "tcp [fd66:6c6f:7763::10]:40000 -> [fd66:6c6f:7763::1]:443\t1\ttcp [fd66:6c6f:7763::1]:443 -> [fd66:6c6f:7763::10]:40000\n" +
				"udp 198.18.0.1:53 -> 198.18.0.10:1000\t1\tudp 198.18.0.10:1000 -> 198.18.0.1:53\n" +
				"udp 198.18.0.10:1000 -> 198.18.0.1:53\t2\tudp 198.18.0.1:53 -> 198.18.0.10:1000\n"
			if got, _ := os.ReadFile(cf); string(got) != wantCounts {
				t.Errorf("counts file:\n%s", got)
			}

			// The filtered file holds the kept frames, in order, and
			// keys the same way.
			path := filepath.Join(dir, "kept.pcap")
			if err := os.WriteFile(path, filtered.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			rep2, counts2, err := keyCapture(path, frameSel{hi: -1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rep2.Frames != 6 || rep2.Flows != 2 {
				t.Errorf("filtered file: %+v, want 6 frames and 2 flows", rep2)
			}

			// The flows file: sorted by the Dump order, one key a line.
			for i, ks := range [][]flowcache.FlowKey{bothKeys(counts), bothKeys(counts2)} {
				out := filepath.Join(dir, "flows.txt")
				if err := writeKeys(out, ks); err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(out)
				// Both keys of each flow; tcp (6) sorts before udp (17).
				wantText := "tcp [fd66:6c6f:7763::1]:443 -> [fd66:6c6f:7763::10]:40000\n" +
					"tcp [fd66:6c6f:7763::10]:40000 -> [fd66:6c6f:7763::1]:443\n" +
					"udp 198.18.0.1:53 -> 198.18.0.10:1000\n" +
					"udp 198.18.0.10:1000 -> 198.18.0.1:53\n"
				if string(got) != wantText {
					t.Errorf("flows file %d:\n%s\nwant\n%s", i, got, wantText)
				}
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	k, err := parseKey("17,198.19.0.1,5000,198.18.0.1,5001")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := flowcache.ParseFrame(udp4("198.19.0.1", "198.18.0.1", 5000, 5001))
	if k != want {
		t.Errorf("parseKey = %v, want %v", k, want)
	}
	for _, bad := range []string{"", "17,198.19.0.1,5000,198.18.0.1", "17,nothing,5000,198.18.0.1,5001", "300,198.19.0.1,5000,198.18.0.1,5001"} {
		if _, err := parseKey(bad); err == nil || !strings.Contains(err.Error(), "-watch") {
			t.Errorf("parseKey(%q) = %v, want a -watch error", bad, err)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	if p, err := parsePolicy("drop"); p != DropWhenFull || err != nil {
		t.Errorf("drop: %v %v", p, err)
	}
	if p, err := parsePolicy("forward"); p != ForwardWhenFull || err != nil {
		t.Errorf("forward: %v %v", p, err)
	}
	if p, err := parsePolicy("evict"); p != EvictWhenFull || err != nil {
		t.Errorf("evict: %v %v", p, err)
	}
	if _, err := parsePolicy("maybe"); err == nil {
		t.Error("maybe: no error")
	}
}

// TestReadBatch reads from a datagram socket pair, which has the packet
// socket's one-frame-per-read semantics and needs no privilege.
func TestReadBatch(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Skip("no socketpair:", err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	for _, n := range []int{60, 100, 30, 99} {
		if _, err := unix.Write(fds[1], make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 3)
	for i := range bufs {
		bufs[i] = make([]byte, 100) // a 100-byte frame fills it: too long
	}
	frames, oversize, err := readBatch(fds[0], bufs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 || len(frames[0]) != 60 || len(frames[1]) != 30 || oversize != 1 {
		t.Errorf("first batch: %d frames, oversize %d; want 60 and 30 bytes, 1 oversize", len(frames), oversize)
	}
	frames, oversize, err = readBatch(fds[0], bufs, frames)
	if err != nil || len(frames) != 1 || len(frames[0]) != 99 || oversize != 0 {
		t.Errorf("second batch: %d frames, oversize %d, %v; want one of 99 bytes", len(frames), oversize, err)
	}
	// Empty: no error, no frames (EAGAIN), and no blocking.
	frames, _, err = readBatch(fds[0], bufs, frames)
	if err != nil || len(frames) != 0 {
		t.Errorf("empty socket: %d frames, %v", len(frames), err)
	}
	if err := waitReadable(fds[0], 1); err != nil {
		t.Errorf("waitReadable: %v", err)
	}
}
