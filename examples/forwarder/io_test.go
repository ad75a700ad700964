package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/afpacket"
	"golang.org/x/sys/unix"
)

func TestUsage(t *testing.T) {
	fs := flag.NewFlagSet("forwarder", flag.ContinueOnError)
	defineFlags(fs, new(options))
	var b strings.Builder
	printUsage(&b, fs)
	text := b.String()

	for _, g := range flagGroups {
		if n := strings.Count(text, "\n"+g.title+"\n"); n != 1 {
			t.Errorf("heading %q appears %d times, want 1", g.title, n)
		}
	}
	if strings.Contains(text, "\nOther:\n") {
		t.Error("some flags are in no group")
	}
	fs.VisitAll(func(f *flag.Flag) {
		line := regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f.Name) + `( .*)?$`)
		found := line.FindAllString(text, -1)
		if len(found) != 1 {
			t.Errorf("-%s is listed %d times, want 1", f.Name, len(found))
			return
		}
		if f.DefValue != "" && !strings.Contains(found[0], "(default ") {
			t.Errorf("-%s: no default in %q", f.Name, found[0])
		}
	})
	t.Log("\n" + text)
}

// zeroCopyFake hands out frames the way a ring does at its strictest:
// every read returns the same buffer, overwritten, so a frame the reader
// did not copy before the next read is lost. A frame longer than the
// buffer is cut, as the kernel cuts one longer than a ring block.
type zeroCopyFake struct {
	frames [][]byte
	buf    []byte
	err    error // once frames run out; ErrTimeout when nil
}

func (f *zeroCopyFake) ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	if len(f.frames) == 0 {
		if f.err != nil {
			return nil, gopacket.CaptureInfo{}, f.err
		}
		return nil, gopacket.CaptureInfo{}, afpacket.ErrTimeout
	}
	frame := f.frames[0]
	f.frames = f.frames[1:]
	n := copy(f.buf, frame)
	return f.buf[:n], gopacket.CaptureInfo{CaptureLength: n, Length: len(frame)}, nil
}

// filled is a frame of n bytes, every byte b.
func filled(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func TestRingReadCopiesEachFrame(t *testing.T) {
	src := &zeroCopyFake{buf: make([]byte, 128), frames: [][]byte{
		filled('a', 60), filled('b', 61),
		filled('c', 150), // cut by the ring: oversize
		filled('d', 99),
		filled('e', 100), // fills a 100-byte batch buffer: maybe cut, oversize
		filled('f', 30),
	}}
	r := newRingRx(src, 100, 3)

	for i, want := range []struct {
		frames   [][]byte
		oversize int
	}{
		{[][]byte{filled('a', 60), filled('b', 61)}, 1}, // a batch is 3 frames read, kept or not
		{[][]byte{filled('d', 99), filled('f', 30)}, 1},
		{nil, 0}, // empty: ErrTimeout ends the batch, with no error
	} {
		frames, oversize, err := r.read(nil)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if oversize != want.oversize || len(frames) != len(want.frames) {
			t.Fatalf("read %d: %d frames, %d oversize; want %d, %d", i, len(frames), oversize, len(want.frames), want.oversize)
		}
		for j := range frames {
			// Had read kept the ring's slice, a would read as c here.
			if !bytes.Equal(frames[j], want.frames[j]) {
				t.Errorf("read %d frame %d: %q..., want %q...", i, j, frames[j][:3], want.frames[j][:3])
			}
		}
	}

	// A partial batch goes as soon as the ring is drained.
	src.frames = [][]byte{filled('g', 40)}
	if frames, _, err := r.read(nil); err != nil || len(frames) != 1 {
		t.Errorf("partial batch: %d frames, %v; want 1", len(frames), err)
	}
	// Errors other than the poll timeout stop the worker.
	src.err = afpacket.ErrPoll
	if _, _, err := r.read(nil); !errors.Is(err, afpacket.ErrPoll) {
		t.Errorf("read after a poll error: %v, want ErrPoll", err)
	}
}

// TestRingOnVeth runs the ring path on a veth pair in a network namespace
// of its own: two rings in one hash fanout group on one end, frames of
// eight flows sent into the other end. Every frame arrives once and
// whole, each flow's on one ring and in order, and a frame sent out of
// the rings' own interface is not read. Needs root.
func TestRingOnVeth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace and a veth pair")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2)")
	}
	// Never unlocked: when the test ends, its goroutine exits and takes
	// the thread, and with it the namespace, away.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skip("cannot make a network namespace:", err)
	}
	// No IPv6 on the links, so that no kernel traffic (router
	// solicitations, MLD) reaches the rings.
	for _, p := range []string{"all", "default"} {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p+"/disable_ipv6", []byte("1"), 0); err != nil {
			t.Log("IPv6 left on:", err)
		}
	}
	for _, args := range [][]string{
		{"link", "add", "ra", "type", "veth", "peer", "name", "rb"},
		{"link", "set", "ra", "up"},
		{"link", "set", "rb", "up"},
	} {
		// The child inherits this thread's namespace.
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Skipf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}

	// One page per block, so the frames span several blocks and the
	// worker's batches cross from one to the next.
	rc := ringConfig{blockSize: os.Getpagesize(), frameSize: 512, blocks: 8, blockTimeout: time.Millisecond}
	var rings []*ringRx
	for range 2 {
		r, err := openRingRx("ra", 7, rc, 1500+23, 8)
		if err != nil {
			t.Fatal(err)
		}
		defer r.close()
		rings = append(rings, r)
	}
	in, err := openRingTx("rb")
	if err != nil {
		t.Fatal(err)
	}
	defer in.close()
	back, err := openRingTx("ra")
	if err != nil {
		t.Fatal(err)
	}
	defer back.close()

	// Leaving through ra: the rings must not read it.
	outgoing := udp4("198.18.9.9", "198.18.0.1", 9999, 9)
	if err := back.send(outgoing); err != nil {
		t.Fatal(err)
	}
	const flows, perFlow = 8, 10
	for i := range flows * perFlow {
		f := udp4(fmt.Sprintf("198.18.0.%d", 10+i%flows), "198.18.0.1", 1000, 53)
		f = binary.BigEndian.AppendUint16(f, uint16(i)) // the frame's number
		if err := in.send(f); err != nil {
			t.Fatal(err)
		}
	}

	// Read both rings until every frame is in, then 50 ms more.
	got := make([][]int, len(rings)) // per ring, the frame numbers read
	srcOf := make(map[int]string)
	total, quiet := 0, time.Time{}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		for ri, r := range rings {
			frames, oversize, err := r.read(nil)
			if err != nil || oversize != 0 {
				t.Fatalf("ring %d: %v, oversize %d", ri, err, oversize)
			}
			for _, f := range frames {
				if bytes.Equal(f, outgoing) {
					t.Errorf("ring %d read a frame sent out of its own interface", ri)
					continue
				}
				if len(f) != len(outgoing)+2 {
					t.Errorf("ring %d: a frame of %d bytes: %x", ri, len(f), f)
					continue
				}
				n := int(binary.BigEndian.Uint16(f[len(f)-2:]))
				got[ri] = append(got[ri], n)
				srcOf[n] = fmt.Sprint(f[26:30])
				total++
			}
		}
		if total >= flows*perFlow && quiet.IsZero() {
			quiet = time.Now().Add(50 * time.Millisecond)
		}
		if !quiet.IsZero() && time.Now().After(quiet) {
			break
		}
	}
	if total != flows*perFlow {
		t.Fatalf("read %d frames, want %d (ring 0: %v, ring 1: %v)", total, flows*perFlow, got[0], got[1])
	}
	seen := make(map[int]bool)
	ringOf := make(map[int]int) // flow → ring
	for ri, ns := range got {
		last := make(map[int]int)
		for _, n := range ns {
			if seen[n] {
				t.Errorf("frame %d read twice", n)
			}
			seen[n] = true
			flow := n % flows
			if r, ok := ringOf[flow]; ok && r != ri {
				t.Errorf("flow %d (%s) on rings %d and %d", flow, srcOf[n], r, ri)
			}
			ringOf[flow] = ri
			if l, ok := last[flow]; ok && n < l {
				t.Errorf("flow %d: frame %d after %d", flow, n, l)
			}
			last[flow] = n
		}
	}
	for ri, r := range rings {
		if d := r.drops(); d != 0 {
			t.Errorf("ring %d dropped %d", ri, d)
		}
	}
	t.Logf("frames per ring: %d and %d", len(got[0]), len(got[1]))
}
