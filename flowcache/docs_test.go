package flowcache_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The README and the design pages answer a new user's first questions
// (issue 18): the first example starts a Reclaimer and says what happens
// without one; the NAT's port-pool rule is written down; and no page
// names Config.Expiry, which timeout classes replaced.
func TestDocsAnswerFirstQuestions(t *testing.T) {
	read := func(path string) string {
		b, err := os.ReadFile(filepath.Join("..", path))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readme := read("README.md")
	first := readme[strings.Index(readme, "```go"):]
	first = first[:strings.Index(first[5:], "```")+5]
	for _, want := range []string{"reclaim.NewReclaimer(", ".Start()", "Without a Reclaimer"} {
		if !strings.Contains(first, want) {
			t.Errorf("the README's first example lacks %q", want)
		}
	}
	if !strings.Contains(readme, "ports held = live flows + flows evicted within the last grace period") {
		t.Error("the README does not give the port-pool rule")
	}
	// A flow's value changes with SetValue; Insert under its key stores
	// another flow (issue 18: the old advice freed a NAT's live port).
	for _, want := range []string{"To change a flow's value,\n`t.SetValue(e, v)`", "`t.RemoveEntry(e)`"} {
		if !strings.Contains(readme, want) {
			t.Errorf("the README does not say %q", want)
		}
	}
	pages, _ := filepath.Glob("../docs/*.md")
	for _, p := range append(pages, "../README.md") {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), "Config.Expiry") {
			t.Errorf("%s names Config.Expiry, which timeout classes replaced", p)
		}
	}
}
