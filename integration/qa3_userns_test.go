package integration

import (
	"path/filepath"
	"strconv"
	"testing"
)

// TestQA3UserNamespaceRefused: a process of a user namespace of its own
// (root there, with every capability over that namespace only) is refused
// by the dump, naming both namespaces, and runs on: restored into
// lazycr's namespace its uids and capabilities would be this namespace's
// (before, it came back as root of lazycr's namespace with all of
// lazycr's capabilities; then the restore refused it after the dump had
// killed it). TestRestoreTampered's "another user namespace" checks the
// restore's own refusal.
func TestQA3UserNamespaceRefused(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 1, buildC(t, "qa3_userns"))
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", filepath.Join(t.TempDir(), "img"))
	requireExit1(t, "dump of a process of another user namespace", errOut, code,
		`runs in user namespace user:\[\d+\], not lazycr's user:\[\d+\]`)
	requireProgress(t, p, "ok")
}
