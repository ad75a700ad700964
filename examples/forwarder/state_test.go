package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flowcache/flowcache/flowcache"
	"github.com/flowcache/flowcache/reclaim"
)

// keyOf is the key the forwarder gives frame.
func keyOf(t *testing.T, frame []byte) flowcache.FlowKey {
	t.Helper()
	k, err := flowcache.ParseFrame(frame)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// flowOf is the flow stored under the key of frame, either of a pair's,
// or nil. It uses Dump, not Get, so that looking does not count as a
// lookup or refresh the flow.
func flowOf(t *testing.T, table *flowcache.Table[Flow], frame []byte) *flowcache.DumpRow[Flow] {
	t.Helper()
	k := keyOf(t, frame)
	for _, r := range table.Dump() {
		if r.Key == k || r.Paired && r.Reply == k {
			return &r
		}
	}
	return nil
}

// padded is frame grown to n bytes, so flows differ in their byte counts.
func padded(frame []byte, n int) []byte { return append(frame, make([]byte, n-len(frame))...) }

// TestCountPerFlow: every packet a flow carried is counted on it, in the
// table, whatever batch it came in and wherever it sat in the batch.
func TestCountPerFlow(t *testing.T) {
	table := newTestTable(t, 100)
	var sent [][]byte
	w := testWorker(t, table, DropWhenFull, &sent)

	flows := [][]byte{
		padded(udp4("198.18.0.10", "198.18.0.1", 1000, 53), 60),
		padded(udp4("198.18.0.11", "198.18.0.1", 1001, 53), 100),
		padded(tcp6("fd66:6c6f:7763::10", "fd66:6c6f:7763::1", 40000, 443), 200),
	}
	want := make([]uint64, len(flows))
	// Batches of 1 to 7 frames, the flows interleaved unevenly; a non-IP
	// frame now and then, which counts on no flow.
	for b := range 12 {
		var batch [][]byte
		for i := range b%7 + 1 {
			f := (b + i*i) % len(flows)
			batch = append(batch, bytes.Clone(flows[f]))
			want[f]++
		}
		if b%4 == 0 {
			batch = append(batch, arp())
		}
		w.handle(batch)
	}

	var total uint64
	for i, f := range flows {
		r := flowOf(t, table, f)
		if r == nil {
			t.Fatalf("flow %d not in the table", i)
		}
		if r.Packets != want[i] || r.Bytes != want[i]*uint64(len(f)) {
			t.Errorf("flow %s: packets %d bytes %d, want %d and %d", r.Key, r.Packets, r.Bytes, want[i], want[i]*uint64(len(f)))
		}
		total += r.Packets
	}
	if out := w.c.out.Load(); total != out || out != uint64(len(sent)) {
		t.Errorf("packets counted on flows %d, frames sent %d (recorded %d): want equal", total, out, len(sent))
	}
	if st := table.Stats(); st.Inserts != 3 {
		t.Errorf("inserts %d, want 3", st.Inserts)
	}
}

// TestAssuredAfterPackets: a one-way flow is assured by its 4th packet,
// not before, whether the packets come a batch each or all in one.
func TestAssuredAfterPackets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		batches []int // frames of the flow per batch
	}{
		{"one per batch", []int{1, 1, 1, 1}},
		{"all in one batch", []int{4}},
		{"3 then 1", []int{3, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := newTestTable(t, 100)
			var sent [][]byte
			w := testWorker(t, table, DropWhenFull, &sent)
			a := udp4("198.19.0.1", "198.18.0.1", 5000, 5001)
			n := 0
			for _, b := range tc.batches {
				if r := flowOf(t, table, a); r != nil && r.State&assured != 0 {
					t.Fatalf("assured after %d packets", n)
				}
				var batch [][]byte
				for range b {
					batch = append(batch, bytes.Clone(a))
				}
				w.handle(batch)
				n += b
			}
			r := flowOf(t, table, a)
			if r == nil || r.Packets != 4 || r.State != assured {
				t.Fatalf("after 4 packets: %+v, want 4 packets and state assured", r)
			}
		})
	}
	t.Run("three are not enough", func(t *testing.T) {
		table := newTestTable(t, 100)
		var sent [][]byte
		w := testWorker(t, table, DropWhenFull, &sent)
		a := udp4("198.19.0.1", "198.18.0.1", 5000, 5001)
		w.handle([][]byte{a, bytes.Clone(a), bytes.Clone(a)})
		if r := flowOf(t, table, a); r.Packets != 3 || r.State != 0 {
			t.Errorf("after 3 packets: packets %d, state %#x; want 3 and 0", r.Packets, r.State)
		}
	})
}

// TestAssuredByReply: a connection's two directions are one flow, a pair
// under the key of the packet that came first and its reverse; one packet
// each way assures it, whichever came first and whether or not they share
// a batch. A flow that has seen one direction only stays unassured, as
// does one that is its own reverse (a one-key flow).
func TestAssuredByReply(t *testing.T) {
	req := udp4("198.19.0.1", "198.18.0.1", 5000, 5001)
	reply := udp4("198.18.0.1", "198.19.0.1", 5001, 5000)
	other := udp4("198.19.0.9", "198.18.0.1", 5000, 5001)
	self := udp4("198.19.0.7", "198.19.0.7", 7, 7)
	for _, tc := range []struct {
		name    string
		batches [][][]byte
	}{
		{"reply in a later batch", [][][]byte{{req, other, self}, {reply}}},
		{"same batch", [][][]byte{{req, reply, other, self}}},
		{"reply first", [][][]byte{{reply}, {other, req, self}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := newTestTable(t, 100)
			var sent [][]byte
			w := testWorker(t, table, DropWhenFull, &sent)
			for _, b := range tc.batches {
				var batch [][]byte
				for _, f := range b {
					batch = append(batch, bytes.Clone(f))
				}
				w.handle(batch)
			}
			first := keyOf(t, tc.batches[0][0])
			for _, f := range [][]byte{req, reply} {
				if r := flowOf(t, table, f); r == nil || r.State != assured || r.Packets != 2 || r.Key != first {
					t.Errorf("%s: %+v, want the pair under %s, assured after its two packets", keyOf(t, f), r, first)
				}
			}
			for _, f := range [][]byte{other, self} {
				if r := flowOf(t, table, f); r == nil || r.State != 0 {
					t.Errorf("%s: %+v, want in the table, not assured", keyOf(t, f), r)
				}
			}
			if r := flowOf(t, table, self); r.Paired {
				t.Errorf("a key that is its own reverse: %+v, want a one-key flow", r)
			}
			if st := table.Stats(); st.Live != 3 {
				t.Errorf("%d flows, want 3: the connection, other and self", st.Live)
			}
		})
	}
}

// TestEvictPolicy: a table at its limit under -full-policy=evict. A new
// flow takes the place of an unassured flow, never of an assured one,
// however many new flows come; when every flow is assured, a new one is
// refused and its packet dropped.
func TestEvictPolicy(t *testing.T) {
	const limit = 4
	table := newPolicyTable(t, limit, EvictWhenFull)
	var sent [][]byte
	w := testWorker(t, table, EvictWhenFull, &sent)

	// Three assured flows: one by packet count, two by their replies;
	// one unassured.
	steady := udp4("198.19.0.1", "198.18.0.1", 5000, 5001)
	req := udp4("198.19.0.2", "198.18.0.1", 6000, 80)
	reply := udp4("198.18.0.1", "198.19.0.2", 80, 6000)
	req2 := udp4("198.19.0.4", "198.18.0.1", 6001, 80)
	reply2 := udp4("198.18.0.1", "198.19.0.4", 80, 6001)
	lone := udp4("198.19.0.3", "198.18.0.1", 7000, 80)
	w.handle([][]byte{steady, bytes.Clone(steady), bytes.Clone(steady), bytes.Clone(steady), req, lone, req2})
	w.handle([][]byte{reply, reply2})
	if st := table.Stats(); st.Live != limit || st.Evicted != 0 {
		t.Fatalf("setup: live %d evicted %d, want %d and 0", st.Live, st.Evicted, limit)
	}
	protected := [][]byte{steady, req, reply, req2, reply2}

	// A flood of one-packet flows: each gets in, in place of an
	// unassured flow (lone, then each other).
	const flood = 50
	for i := range flood {
		syn := udp4(fmt.Sprintf("198.20.%d.%d", i/250, i%250+1), "198.18.0.1", uint16(10000+i), 80)
		w.handle([][]byte{syn})
		if r := flowOf(t, table, syn); r == nil {
			t.Fatalf("flood flow %d did not get in", i)
		}
		for _, f := range protected {
			if flowOf(t, table, f) == nil {
				t.Fatalf("after flood flow %d: assured flow %s evicted", i, keyOf(t, f))
			}
		}
	}
	st := table.Stats()
	if st.Live != limit || st.Evicted != flood || st.FullRejections != 0 || w.c.droppedFull.Load() != 0 {
		t.Errorf("after the flood: live %d evicted %d rejections %d dropped %d; want %d, %d, 0, 0",
			st.Live, st.Evicted, st.FullRejections, w.c.droppedFull.Load(), limit, flood)
	}
	if flowOf(t, table, lone) != nil {
		t.Error("the unassured flow is still in the table")
	}
	// The assured flows were never evicted and put back: their counts
	// run on from before the flood.
	if r := flowOf(t, table, steady); r.Packets != 4 || r.State != assured {
		t.Errorf("steady flow: %+v, want its 4 packets and assured", r)
	}

	// Assure the last unassured flow (the latest flood flow, by its
	// packet count): now nothing may be evicted, and a new flow is
	// refused; its packet is dropped and the assured flows stay.
	last := udp4(fmt.Sprintf("198.20.%d.%d", (flood-1)/250, (flood-1)%250+1), "198.18.0.1", uint16(10000+flood-1), 80)
	w.handle([][]byte{bytes.Clone(last), bytes.Clone(last), bytes.Clone(last)})
	before := len(sent)
	w.handle([][]byte{udp4("198.21.0.1", "198.18.0.1", 1, 80)})
	st = table.Stats()
	if len(sent) != before || w.c.droppedFull.Load() != 1 || st.FullRejections != 1 || st.Evicted != flood {
		t.Errorf("all assured: sent %d more, dropped %d, rejections %d, evicted %d; want 0, 1, 1, %d",
			len(sent)-before, w.c.droppedFull.Load(), st.FullRejections, st.Evicted, flood)
	}
}

// TestDumpFormats: the text dump, one flow a line; and the JSON dump, one
// DumpRow a line, whose keys, values, counters and state read back.
func TestDumpFormats(t *testing.T) {
	table := newTestTable(t, 100)
	var sent [][]byte
	w := testWorker(t, table, DropWhenFull, &sent)
	a := udp4("198.19.0.1", "198.18.0.1", 5000, 5001)
	b := tcp6("fd66:6c6f:7763::10", "fd66:6c6f:7763::1", 40000, 443)
	w.handle([][]byte{a, bytes.Clone(a), bytes.Clone(a), bytes.Clone(a), b})
	rows := table.Dump()

	var text bytes.Buffer
	if err := writeDump(&text, "test", rows, "text"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(text.String(), "\n"), "\n")
	if len(lines) != 3 || lines[0] != "# test: 2 flows" {
		t.Fatalf("text dump:\n%s", text.String())
	}
	// tcp sorts before udp; the e2e test strips "  forward  hits=..." to
	// get the keys.
	wantA := fmt.Sprintf("udp 198.19.0.1:5000 -> 198.18.0.1:5001  forward  hits=%d  packets=4  bytes=%d  state=0x1  last=", rows[1].Hits, 4*len(a))
	if !strings.HasPrefix(lines[2], wantA) || !strings.HasPrefix(lines[1], "tcp [fd66:6c6f:7763::10]:40000 -> [fd66:6c6f:7763::1]:443  forward  hits=") {
		t.Errorf("text dump lines:\n%s\n%s\nwant the first to start\n%s", lines[1], lines[2], wantA)
	}

	var js bytes.Buffer
	if err := writeDump(&js, "test", rows, "json"); err != nil {
		t.Fatal(err)
	}
	// Keys are text, readable as they are.
	if !strings.Contains(js.String(), `"Key":"udp 198.19.0.1:5000 -> 198.18.0.1:5001"`) ||
		!strings.Contains(js.String(), `"Value":{"Action":"forward"}`) {
		t.Errorf("JSON dump:\n%s", js.String())
	}
	var got []flowcache.DumpRow[Flow]
	sc := bufio.NewScanner(&js)
	for sc.Scan() {
		var r flowcache.DumpRow[Flow]
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	if len(got) != len(rows) {
		t.Fatalf("JSON dump: %d rows, want %d", len(got), len(rows))
	}
	for i := range rows {
		want := rows[i]
		// JSON keeps the time to the nanosecond but not its location.
		if !got[i].LastSeen.Equal(want.LastSeen) {
			t.Errorf("row %d: LastSeen %v, want %v", i, got[i].LastSeen, want.LastSeen)
		}
		got[i].LastSeen = want.LastSeen
		if got[i] != want {
			t.Errorf("row %d read back\n got %+v\nwant %+v", i, got[i], want)
		}
	}

	if err := writeDump(io.Discard, "test", rows, "xml"); err == nil {
		t.Error("format xml: no error")
	}
}

// TestMetricsServer: -metrics serves the table's and the domain's series
// in Prometheus' text format, with the numbers the table's Stats has.
func TestMetricsServer(t *testing.T) {
	domain := reclaim.NewDomain()
	cfg := tableConfig("test", 2, time.Minute, EvictWhenFull, domain)
	table, err := flowcache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	var sent [][]byte
	w := testWorker(t, table, EvictWhenFull, &sent)
	w.handle([][]byte{
		udp4("198.19.0.1", "198.18.0.1", 1, 80),
		udp4("198.19.0.2", "198.18.0.1", 2, 80),
		udp4("198.19.0.3", "198.18.0.1", 3, 80), // evicts one
	})

	srv, addr, err := serveMetrics("127.0.0.1:0", table, domain, nil)
	if err != nil {
		t.Skip("cannot listen on loopback:", err)
	}
	defer srv.Close()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", resp.Status, err)
	}
	for _, want := range []string{
		"\n" + `flowcache_flows{table="test"} 2` + "\n",
		"\n" + `flowcache_flows_limit{table="test"} 2` + "\n",
		"\n" + `flowcache_evictions_total{table="test"} 1` + "\n",
		"\n" + `flowcache_removals_total{cause="evicted",table="test"} 1` + "\n",
		"\n" + `flowcache_removals_total{cause="expired",table="test"} 0` + "\n",
		"\n" + `flowcache_inserts_total{table="test"} 3` + "\n",
		"\nflowcache_domain_readers 0\n",
		"\ngo_memstats_heap_inuse_bytes ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %q", want)
		}
	}
	if _, _, err := serveMetrics("127.0.0.1:-1", table, domain, nil); err == nil {
		t.Error("a bad address: no error")
	}
}

// idleRx is a receiver with nothing to read: it waits a little, as a ring
// does, and returns no frames.
type idleRx struct{}

func (idleRx) read(frames [][]byte) ([][]byte, int, error) {
	time.Sleep(time.Millisecond)
	return frames[:0], 0, nil
}
func (idleRx) drops() uint64 { return 0 }
func (idleRx) close()        {}

// TestIdleWorkerIsQuiescent: a worker with no traffic still lets grace
// periods end, so that what the table retired (storage compacted away,
// OnRemove callbacks) is not held back until the next packet.
func TestIdleWorkerIsQuiescent(t *testing.T) {
	domain := reclaim.NewDomain()
	table, err := flowcache.New(tableConfig("test", 10, time.Minute, DropWhenFull, domain))
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	var sent [][]byte
	w := testWorker(t, table, DropWhenFull, &sent)
	w.reader = domain.Register()
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- w.run(stop, idleRx{}, new(busyTime)) }()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	synced := make(chan struct{})
	go func() {
		domain.Synchronize()
		close(synced)
	}()
	select {
	case <-synced:
	case <-time.After(10 * time.Second):
		t.Fatal("Synchronize did not return in 10 s: the idle worker never reported a quiescent state")
	}
}
