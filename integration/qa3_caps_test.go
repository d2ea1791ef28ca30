package integration

import (
	"testing"
)

// TestQA3Capabilities: a process's capabilities come back as they were
// (qa3_caps compares its own /proc/self/status lines). Before, a process
// running as another user with capabilities kept (CAP_NET_BIND_SERVICE,
// ambient) was killed by the dump and never restored ("capset ...:
// operation not permitted": setresuid had cleared them), and a root
// process with capabilities dropped (a container's) came back with all of
// lazycr's: its bounding, permitted and effective sets were not restored.
func TestQA3Capabilities(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "qa3_caps")
	for _, mode := range []string{"user", "root"} {
		t.Run(mode, func(t *testing.T) {
			p := startTicking(t, start, "ok", 2, bin, mode)
			rp := restoreFrom(t, p, dumpKill(t, p))
			requireProgress(t, rp, "ok")
			checkSequence(t, rp, "ok")
		})
	}
}
