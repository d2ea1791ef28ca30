package integration

import (
	"testing"
)

// TestQA3UserNamespaceRefused: a process of a user namespace of its own
// (root there, with every capability over that namespace only) is not
// restored into lazycr's: there its uids and capabilities would be this
// namespace's. The restore fails, naming both namespaces, and leaves no
// process. Before, it came back as root of lazycr's namespace with all of
// lazycr's capabilities (and after QA3 R24 a mapped non-root one too).
func TestQA3UserNamespaceRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "qa3_userns"))
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 1)
	dir := dumpKill(t, p)
	_, errOut, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore of a process of another user namespace", errOut, code,
		`ran in user namespace user:\[\d+\], not lazycr's user:\[\d+\]`)
	waitGone(t, p.pid)
}
