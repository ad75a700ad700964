package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProgressMode: only a terminal gets the redrawn line; a buffer, a
// file, a pipe and /dev/null get plain lines. (The terminal case is in
// progress_linux_test.go, which can open a pseudo-terminal.)
func TestProgressMode(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	for _, tc := range []struct {
		name string
		w    io.Writer
	}{
		{"buffer", new(bytes.Buffer)},
		{"file", file},
		{"pipe", pw},
		{"dev-null", devNull},
	} {
		if newProgress(tc.w).redraw {
			t.Errorf("%s: redrawn progress, want plain lines", tc.name)
		}
	}
}

// fakeRun updates p every 100 ms of a run of d, as sim.report does, and
// ends it.
func fakeRun(p *progress, d time.Duration) {
	for el := 100 * time.Millisecond; el <= d; el += 100 * time.Millisecond {
		p.update(el, "flowcache", "[===   ] ", "state at "+el.String())
	}
	p.done()
}

// TestProgressLines: where the output is not a terminal, a run writes
// one plain line every 5 s of it, and its final state once: 6 lines for a
// 30 s run (the last tick is the 30 s line), 7 for 32 s, 1 for 2 s. No
// carriage return, no bar.
func TestProgressLines(t *testing.T) {
	for _, tc := range []struct {
		run  time.Duration
		want []string // the time in each line
	}{
		{30 * time.Second, []string{"5s", "10s", "15s", "20s", "25s", "30s"}},
		{32 * time.Second, []string{"5s", "10s", "15s", "20s", "25s", "30s", "32s"}},
		{2 * time.Second, []string{"2s"}},
		{5 * time.Second, []string{"5s"}},
	} {
		t.Run(tc.run.String(), func(t *testing.T) {
			var buf bytes.Buffer
			fakeRun(newProgress(&buf), tc.run)
			out := buf.String()
			if strings.ContainsAny(out, "\r[") {
				t.Errorf("a carriage return or bar in plain lines:\n%q", out)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tc.want), out)
			}
			for i, l := range lines {
				if want := "flowcache         state at " + tc.want[i]; l != want {
					t.Errorf("line %d = %q, want %q", i, l, want)
				}
			}
		})
	}
}

// TestProgressLate: a tick that comes late writes its line, and the next
// line is due at the next multiple of 5 s, not 5 s after the late one.
func TestProgressLate(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf)
	for _, el := range []time.Duration{time.Second, 7 * time.Second, 9 * time.Second, 10 * time.Second, 11 * time.Second} {
		p.update(el, "x", "", el.String())
	}
	p.done()
	if got, want := buf.String(), "x                 7s\nx                 10s\nx                 11s\n"; got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

// TestProgressRedraw: on a terminal every update redraws the one line
// (a carriage return each, no newline) and the end adds one newline.
func TestProgressRedraw(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf)
	p.redraw = true // what newProgress picks on a terminal (TestProgressTerminal)
	fakeRun(p, 30*time.Second)
	out := buf.String()
	if n := strings.Count(out, "\r"); n != 300 {
		t.Errorf("%d redraws, want 300", n)
	}
	if n := strings.Count(out, "\n"); n != 1 || !strings.HasSuffix(out, "\n") {
		t.Errorf("%d newlines, want 1 at the end", n)
	}
	if !strings.Contains(out, "\rflowcache         [===   ] state at 30s \n") {
		t.Errorf("last redraw not as expected: %q", out[max(0, len(out)-80):])
	}
}
