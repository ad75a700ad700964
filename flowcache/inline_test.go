package flowcache

import (
	"os/exec"
	"regexp"
	"testing"
)

// TestGetInlines: Get inlines into its caller (testdata/inline, a
// program's by-value wrapper), so that the key the caller holds is handed
// to Get's body by address instead of being copied into a call. It reads
// the compiler's -m report, so it needs the go command, and skips without
// it.
func TestGetInlines(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command(gobin, "build", "-gcflags=-m", "./testdata/inline").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -gcflags=-m ./testdata/inline: %v\n%s", err, out)
	}
	inlined := regexp.MustCompile(`(?m)^\S*inline\.go:\d+:\d+: inlining call to flowcache\.\(\*Table\[.*\]\)\.Get$`)
	if !inlined.Match(out) {
		t.Errorf("the compiler did not inline Table.Get into its caller; its report:\n%s", out)
	}
}
