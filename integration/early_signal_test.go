package integration

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestEarlySignalHandler: lazycr catches SIGINT/SIGTERM from its package
// initialisation on (internal/earlysig), not from main: otherwise an
// interrupt while protobuf, cobra and the rest initialise (~10 ms, more on
// a busy machine) kills it with the signal (exit 130) instead of the usual
// "interrupted" error and exit 1. Go initialises packages in a fixed order
// (GODEBUG=inittrace=1 prints it); only standard-library packages, the
// dependencies of os/signal and cheap ones sorted before it, may come
// first.
func TestEarlySignalHandler(t *testing.T) {
	needRoot(t)
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	cmd := exec.Command(lazycrPath, "version")
	cmd.Env = append(cmd.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("lazycr version: %v\n%s", err, stderr.String())
	}
	re := regexp.MustCompile(`(?m)^init (\S+) @`)
	var before []string
	found := false
	for _, m := range re.FindAllStringSubmatch(stderr.String(), -1) {
		if m[1] == "github.com/lazycr/lazycr/internal/earlysig" {
			found = true
			break
		}
		if first, _, _ := strings.Cut(m[1], "/"); strings.Contains(first, ".") {
			before = append(before, m[1])
		}
	}
	if !found {
		t.Fatalf("internal/earlysig is not initialised by lazycr:\n%s", stderr.String())
	}
	if len(before) > 0 {
		t.Errorf("packages initialised before internal/earlysig (an interrupt meanwhile exits 130): %v", before)
	}
}
