package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hangTimeout bounds a dump that normally takes tens of milliseconds; it
// only tells a hang from a slow run.
const hangTimeout = 15 * time.Second

// TestDumpKillsPIDNSInit dumps (and so kills) a 9-thread process that is
// the init of its own PID namespace, several times: lazycr dump must end.
//
// Killing a namespace's init makes its last exiting thread wait in
// zap_pid_ns_processes until every other task of the namespace is reaped,
// its own traced zombie threads included. A tracer that blocks in wait4 on
// that one thread before it has reaped the others never returns (kernel/
// pid_namespace.c, zap_pid_ns_processes; kernel/exit.c, find_child_reaper).
// Which thread exits last varies (about one dump in five hangs here), hence
// the repetitions.
func TestDumpKillsPIDNSInit(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "threadcheck")
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	for i := range 12 {
		cmd := exec.Command(bin)
		cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
		p := startCmd(t, cmd)
		var r struct {
			Pid     int `json:"pid"`
			Threads int `json:"threads"`
		}
		waitReport(t, p, &r)
		if r.Pid != 1 {
			t.Fatalf("program in a new PID namespace reports pid %d, want 1", r.Pid)
		}
		requireProgress(t, p, values(waitThreadKeys(t, p, 1))...)

		dir := filepath.Join(t.TempDir(), "img")
		dump := exec.Command(lazycrPath, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
		var errOut bytes.Buffer
		dump.Stderr = &errOut
		if err := dump.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- dump.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: lazycr dump --pid %d: %v\n%s", i, p.pid, err, errOut.String())
			}
		case <-time.After(hangTimeout):
			diag := describeHang(dump.Process.Pid, p.pid)
			dump.Process.Kill() // the tracer's death releases the zombies
			<-done
			t.Fatalf("round %d: `lazycr dump --pid %d` (a PID namespace's init, 9 threads) still runs after %v:\n%s",
				i, p.pid, hangTimeout, diag)
		}
		select {
		case <-p.done:
		case <-time.After(goneTimeout):
			t.Fatalf("round %d: pid %d still runs after the dump", i, p.pid)
		}
	}
}

// describeHang says what each thread of lazycr and of the dumped process
// is doing: state, kernel wait channel and, for lazycr, the syscall.
func describeHang(lazycr, pid int) string {
	var b strings.Builder
	for _, who := range []struct {
		name string
		pid  int
	}{{"lazycr", lazycr}, {"dumped process", pid}} {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", who.pid))
		for _, e := range ents {
			base := fmt.Sprintf("/proc/%d/task/%s/", who.pid, e.Name())
			stat, _ := os.ReadFile(base + "stat")
			wchan, _ := os.ReadFile(base + "wchan")
			line := fmt.Sprintf("  %s pid %d tid %s: state %s wchan %s", who.name, who.pid, e.Name(), statState(string(stat)), wchan)
			if sc, err := os.ReadFile(base + "syscall"); err == nil {
				if f := strings.Fields(string(sc)); len(f) > 1 && f[0] == strconv.Itoa(unix.SYS_WAIT4) {
					tid, _ := strconv.ParseInt(f[1], 0, 64)
					line += fmt.Sprintf(" (wait4 on tid %d)", tid)
				}
			}
			if who.name == "lazycr" && !strings.Contains(line, "wait4") {
				continue // idle Go runtime threads
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
