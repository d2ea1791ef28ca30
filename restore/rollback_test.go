package restore

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/dump"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/internal/leakcheck"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// dumpSleep dumps a running /bin/sleep with --leave-running into a new
// directory and returns the directory and the still running process.
func dumpSleep(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dump and restore need root (ptrace, pidfd_getfd, clone3 set_tid)")
	}
	cmd := exec.Command("/bin/sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	dir := filepath.Join(t.TempDir(), "img")
	if _, err := dump.Dump(context.Background(), dump.Options{
		PID: cmd.Process.Pid, Dir: dir, Mode: dump.ModeLeaveRunning, Log: zerolog.New(zerolog.NewTestWriter(t)),
	}); err != nil {
		t.Fatal(err)
	}
	return dir, cmd
}

// ourChildren lists the children of every thread of the test process.
func ourChildren(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/children")
		if err != nil {
			continue // the thread exited meanwhile
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
	}
	slices.Sort(out)
	return out
}

// requireNothingLeft fails t if Build left a child process (a ptrace-stopped
// stub), a goroutine (the tracer thread) or an fd behind.
func requireNothingLeft(t *testing.T, children []int, fds []string, opts ...goleak.Option) {
	t.Helper()
	for _, c := range ourChildren(t) {
		if !slices.Contains(children, c) {
			t.Errorf("child pid %d appeared during the failed restore (a stub was left); before: %v", c, children)
		}
	}
	if err := goleak.Find(opts...); err != nil {
		t.Errorf("goroutines left by the failed restore: %v", err)
	}
	if got := leakcheck.Fds(); !slices.Equal(got, fds) {
		t.Errorf("fds after the failed restore: %v, before %v", got, fds)
	}
}

// TestBuildPIDTakenRollsBack: the original pid is taken (the dumped process
// still runs). Build used to return ErrPIDTaken with the ptrace-stopped stub
// and its locked tracer thread left behind: the kill-on-failure was set up
// only after the stub had its PID.
func TestBuildPIDTakenRollsBack(t *testing.T) {
	dir, cmd := dumpSleep(t)
	children, fds := ourChildren(t), leakcheck.Fds()
	ignore := goleak.IgnoreCurrent()
	_, err := Build(context.Background(), Options{Dir: dir, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if !errors.Is(err, ErrPIDTaken) {
		t.Fatalf("Build over the running pid %d: %v, want ErrPIDTaken", cmd.Process.Pid, err)
	}
	if !strings.Contains(err.Error(), "sleep") || !strings.Contains(err.Error(), "--new-pid") {
		t.Errorf("error %q does not name the holder (sleep) and --new-pid", err)
	}
	requireNothingLeft(t, children, fds, ignore)
}

// TestBuildPIDZombie: the pid belongs to a zombie whose parent (here the
// test itself) has not reaped it. The error says so and names the parent,
// rather than suggesting --new-pid.
func TestBuildPIDZombie(t *testing.T) {
	dir, _ := dumpSleep(t)
	set, err := image.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := image.OpenPages(dir, set.Root().Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	z := exec.Command("/bin/true")
	if err := z.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// inject's reaping of the killed stub may have reaped it already
		// (wait4(-1) on the tracer thread, which may be the one that forked
		// it): then only the process handle is left to free.
		if err := z.Wait(); err != nil {
			z.Process.Release()
		}
	}()
	zpid := z.Process.Pid
	waitZombie(t, zpid)
	old := set.Root().Pid
	set.Root().Pid = uint32(zpid)
	set.Memory[uint32(zpid)], set.Fds[uint32(zpid)] = set.Memory[old], set.Fds[old]

	children, fds := ourChildren(t), leakcheck.Fds()
	ignore := goleak.IgnoreCurrent()
	_, err = Build(context.Background(), Options{Set: set, Pages: pr, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if !errors.Is(err, ErrPIDTaken) {
		t.Fatalf("Build over zombie pid %d: %v, want ErrPIDTaken", zpid, err)
	}
	me := strconv.Itoa(os.Getpid())
	for _, want := range []string{"zombie", "parent pid " + me, "has not reaped"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "use --new-pid") {
		t.Errorf("error %q suggests --new-pid for a zombie", err)
	}
	requireNothingLeft(t, children, fds, ignore)
}

// waitZombie polls until pid is a zombie (it exits on its own at once).
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not become a zombie: %s", pid, s)
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}

// TestStartedStubRollsBack: a stub started ahead (StartStub) is taken by
// a Build that then fails (the pid is taken) and goes with its rollback;
// one that no Build took goes with Close. Neither leaves a child, the
// tracer thread or an fd behind.
func TestStartedStubRollsBack(t *testing.T) {
	dir, _ := dumpSleep(t)
	children, fds := ourChildren(t), leakcheck.Fds()
	ignore := goleak.IgnoreCurrent()
	log := zerolog.New(zerolog.NewTestWriter(t))
	st, err := StartStub("", log)
	if err != nil {
		t.Fatal(err)
	}
	if got := ourChildren(t); len(got) != len(children)+1 {
		t.Fatalf("children after StartStub: %v, before %v: want one more (the stub)", got, children)
	}
	if _, err := Build(context.Background(), Options{Dir: dir, Started: st, Log: log}); !errors.Is(err, ErrPIDTaken) {
		t.Fatalf("Build over the running pid: %v, want ErrPIDTaken", err)
	}
	st.Close() // taken: nothing left to do
	requireNothingLeft(t, children, fds, ignore)

	unused, err := StartStub("", log)
	if err != nil {
		t.Fatal(err)
	}
	unused.Close()
	requireNothingLeft(t, children, fds, ignore)
}
