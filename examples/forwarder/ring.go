package main

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/afpacket"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The default I/O (-io=ring) goes through gopacket/afpacket: one TPacket
// per worker, each a TPACKET_V3 receive ring mapped into this process,
// all joined in one PACKET_FANOUT hash group on -in as the syscall path's
// sockets are. The kernel writes frames into the ring's blocks and hands
// a block over when it is full or -ring-block-timeout has passed; the
// worker then reads the block's frames without a system call each.
//
//	ring (-ring-blocks × -ring-block-size bytes, one per worker)
//	┌──────────────────────────┬──────────────────────────┬─────
//	│ block 0: hdr │ f │ f │ f │ block 1: hdr │ f │ f │    │ ...
//	└──────────────────────────┴──────────────────────────┴─────
//	  owned by the worker until it moves past the block, then the kernel's
//
// A frame from ZeroCopyReadPacketData points into the ring, and the
// library promises it only until the next read (it may hand the block back
// to the kernel then). A batch is several reads, so each frame is copied
// into the worker's own batch buffers as it is read, which is also where
// the MAC rewrite happens; the copy is of the frame's length only.
//
// Sending: gopacket/afpacket v1.7.7 maps a receive ring only (no
// PACKET_TX_RING), and TPacket.WritePacketData is one write(2) on the
// handle's socket. So each worker sends through a send-only TPacket on
// -out (protocol 0: it receives nothing; its ring is one page) with
// WritePacketData, one system call per frame as on the syscall path. The
// library keeps the socket to itself, so PACKET_QDISC_BYPASS (which the
// syscall path sets) cannot be set here; a veth has no queue (noqueue), so
// in the end-to-end test that makes no difference.

// ringConfig is the -ring-* flags.
type ringConfig struct {
	blockSize, frameSize, blocks int
	blockTimeout                 time.Duration
}

// defaultRing: 128 blocks of 256 KiB, 32 MiB per worker. At the e2e's
// 50,000 pkt/s over two workers a 10 ms block holds about 250 frames, so
// the ring can fall behind by about a second before it drops; at full
// speed a block holds some 500 frames of 500 bytes, 64,000 in the ring.
// 10 ms bounds the wait of a frame at a low rate (Suricata's default).
// The frame size only sets how many frames the kernel counts per block:
// V3 packs frames by their length, and one longer than it (a jumbo frame)
// still fits, up to the block size less its header.
var defaultRing = ringConfig{
	blockSize:    256 << 10,
	frameSize:    2048,
	blocks:       128,
	blockTimeout: 10 * time.Millisecond,
}

// ringPollTimeout is how long a read waits for the kernel to hand over a
// block. The library fixes it per handle, for every read: it is both how
// long an idle worker sleeps before it looks at stop again and how long a
// batch that has some frames waits for more once the ring is drained. One
// millisecond keeps the second short (a batch goes as soon as the ring is
// empty, give or take 1 ms), at the cost of about 1,000 empty polls a
// second per idle worker: idle for 10 s with two workers, the forwarder
// used 0.45 s of CPU on rings and 0.03 s on sockets (-io=syscall, where
// the worker polls its own socket for 100 ms at a time). A library that
// gave out its socket would let an idle worker block in poll instead.
const ringPollTimeout = time.Millisecond

// zeroCopySource is what ringRx needs of a TPacket: reads whose data is
// valid until the next read. Tests give it a fake that reuses one buffer.
type zeroCopySource interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// ringRx is one worker's ring, and the buffers its batch is copied into.
type ringRx struct {
	src  zeroCopySource
	tp   *afpacket.TPacket // src, for stats and close; nil in tests
	bufs [][]byte
}

func newRingRx(src zeroCopySource, bufSize, batch int) *ringRx {
	r := &ringRx{src: src, bufs: make([][]byte, batch)}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, bufSize)
	}
	return r
}

// openRingRx maps a receive ring on iface and, with fanout > 0, joins
// that fanout group in hash mode.
func openRingRx(iface string, fanout uint16, rc ringConfig, bufSize, batch int) (*ringRx, error) {
	tp, err := afpacket.NewTPacket(
		afpacket.OptInterface(iface),
		afpacket.OptTPacketVersion(afpacket.TPacketVersion3),
		afpacket.OptBlockSize(rc.blockSize),
		afpacket.OptFrameSize(rc.frameSize),
		afpacket.OptNumBlocks(rc.blocks),
		afpacket.OptBlockTimeout(rc.blockTimeout),
		afpacket.OptPollTimeout(ringPollTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("TPACKET_V3 ring: %w", err)
	}
	// The syscall path sets PACKET_IGNORE_OUTGOING; the library hides the
	// socket, so a filter does the same: the ring sees the frames that
	// arrive on iface, not the ones this host sends there.
	if err := tp.SetBPF(ignoreOutgoing); err != nil {
		tp.Close()
		return nil, fmt.Errorf("ring filter: %w", err)
	}
	if fanout > 0 {
		if err := tp.SetFanout(afpacket.FanoutHash, fanout); err != nil {
			tp.Close()
			return nil, fmt.Errorf("PACKET_FANOUT: %w", err)
		}
	}
	r := newRingRx(tp, bufSize, batch)
	r.tp = tp
	return r, nil
}

// ignoreOutgoing is a classic BPF program that keeps a frame whole unless
// its packet type is PACKET_OUTGOING.
var ignoreOutgoing = mustAssemble(
	bpf.LoadExtension{Num: bpf.ExtType},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 1},
	bpf.RetConstant{Val: math.MaxUint32},
	bpf.RetConstant{Val: 0},
)

func mustAssemble(prog ...bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err)
	}
	return raw
}

// read copies up to a batch of frames out of the ring: frames[i] is
// bufs[i] cut to the frame. It stops early when the ring has nothing more
// within ringPollTimeout, so a batch goes as soon as the ring is drained.
// Frames that do not fit a buffer, or that the ring cut short, are counted
// as oversize and left out.
func (r *ringRx) read(frames [][]byte) (_ [][]byte, oversize int, err error) {
	frames = frames[:0]
	for len(frames)+oversize < len(r.bufs) {
		data, ci, err := r.src.ZeroCopyReadPacketData()
		if errors.Is(err, afpacket.ErrTimeout) {
			break
		}
		if err != nil {
			return frames, oversize, err
		}
		b := r.bufs[len(frames)]
		if ci.CaptureLength < ci.Length || len(data) >= len(b) {
			oversize++
			continue
		}
		// data is the ring's, until the next read: keep a copy.
		frames = append(frames, b[:copy(b, data)])
	}
	return frames, oversize, nil
}

// drops is how many frames the kernel dropped because the ring was full,
// since it was opened.
func (r *ringRx) drops() uint64 {
	if r.tp == nil {
		return 0
	}
	// The library adds up what the kernel reports (and resets) per call.
	_, v3, err := r.tp.SocketStats()
	if err != nil {
		return 0
	}
	return uint64(v3.Drops())
}

func (r *ringRx) close() {
	if r.tp != nil {
		r.tp.Close()
	}
}

// ringTx sends on an interface through a send-only TPacket (see above).
type ringTx struct{ tp *afpacket.TPacket }

func openRingTx(iface string) (*ringTx, error) {
	page := unix.Getpagesize()
	tp, err := afpacket.NewTPacket(
		afpacket.OptInterface(iface),
		afpacket.OptProtocol(0), // receive nothing
		afpacket.OptBlockSize(page),
		afpacket.OptFrameSize(page),
		afpacket.OptNumBlocks(1),
	)
	if err != nil {
		return nil, fmt.Errorf("send handle: %w", err)
	}
	return &ringTx{tp}, nil
}

func (t *ringTx) send(frame []byte) error { return t.tp.WritePacketData(frame) }
func (t *ringTx) close()                  { t.tp.Close() }
