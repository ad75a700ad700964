package replicate

import (
	"bytes"
	"os/exec"
	"testing"
)

// TestNoNATSInFlowcache: only a program that imports replicate links
// NATS; the table, its storage, its grace periods and the table metrics
// do not.
func TestNoNATSInFlowcache(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	const mod = "github.com/flowcache/flowcache/"
	for _, pkg := range []string{"flowcache", "shard", "reclaim", "seed", "metrics"} {
		out, err := exec.Command(goTool, "list", "-deps", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		if bytes.Contains(out, []byte("nats-io")) || bytes.Contains(out, []byte(mod+"replicate")) {
			t.Errorf("%s depends on NATS or replicate:\n%s", pkg, out)
		}
	}
	out, err := exec.Command(goTool, "list", "-deps", mod+"replicate").Output()
	if err != nil || !bytes.Contains(out, []byte("github.com/nats-io/nats.go/jetstream\n")) {
		t.Errorf("replicate does not list nats.go among its dependencies (%v): the check above checks nothing", err)
	}
}
