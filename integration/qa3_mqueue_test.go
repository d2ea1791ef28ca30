package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestQA3MqueueRefused: a POSIX message queue fd (mq_open) is refused at
// dump, naming it, and the process keeps running with its messages.
// Before, it was dumped as a regular file "/NAME" (its link on the
// kernel's mqueue mount): the dump killed the process and the restore
// failed (file changed since the dump: /NAME: no such file or directory),
// its messages lost.
func TestQA3MqueueRefused(t *testing.T) {
	t.Parallel()
	name := fmt.Sprintf("/lazycr-qa3-%d", os.Getpid())
	bin := buildC(t, "qa3_mqueue", "-lrt")
	t.Cleanup(func() { exec.Command(bin, "-u", name).Run() })
	p := startTicking(t, start, "ok", 1, bin, name)
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
	requireExit1(t, "dump of a process with a message queue", errOut, code,
		`unsupported: POSIX message queue `+regexp.QuoteMeta(name)+` \(mq_open\)`)
	requireProgress(t, p, "ok")
}
