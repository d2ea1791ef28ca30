package dump

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/rs/zerolog"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/netlock"
)

// A listener refused for its accept queue stays locked over the pauses
// between Freeze's tries (retry.go, files.ListenerHold), and every way
// Freeze ends removes that lock: these tests freeze a process whose
// listener keeps one connection queued (it never accepts) and look at
// this process's nftables tables, which only this process's sockets
// keep: a lock Freeze forgot would stay until the test ends.

// queuedListener starts /bin/sleep holding a TCP listener on 127.0.0.1
// with one connection waiting in its accept queue, and returns the
// sleeper and the listener's port. Both go when t ends. With tree, the
// process returned is a shell whose child, the sleeper, alone holds the
// listener (a member of the dumped tree refuses).
func queuedListener(t *testing.T, tree bool) (*exec.Cmd, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sleep", "1000")
	if tree {
		cmd = exec.Command("/bin/sh", "-c", "/bin/sleep 1000 & exec 3<&-; wait")
	}
	cmd.ExtraFiles = []*os.File{f}
	err = cmd.Start()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if tree {
			for _, k := range children(cmd.Process.Pid) {
				syscall.Kill(k, syscall.SIGKILL)
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	port := ln.Addr().(*net.TCPAddr).Port
	if tree {
		// The shell holds fd 3 until its exec, the sleeper from its fork:
		// wait until the shell closed it and the sleeper has it.
		deadline := time.Now().Add(10 * time.Second)
		for len(children(cmd.Process.Pid)) != 1 || holdsFd3(cmd.Process.Pid) {
			if time.Now().After(deadline) {
				t.Fatalf("shell %d: children %v, holds fd 3 %v", cmd.Process.Pid, children(cmd.Process.Pid), holdsFd3(cmd.Process.Pid))
			}
			time.Sleep(time.Millisecond) // poll interval
		}
	}
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return cmd, port
}

// children lists the children of pid (/proc/PID/task/PID/children).
func children(pid int) []int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// holdsFd3 reports whether pid has an fd 3.
func holdsFd3(pid int) bool {
	_, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/3")
	return err == nil
}

// ownListenLocks names the lock tables of this process that hold off the
// listener 127.0.0.1:port (netlock: table lazycr_<pid>_…, set listen4).
//
// Equivalent to: nft list tables inet | grep lazycr_<pid>_, then
// nft list set inet TABLE listen4 | grep "127.0.0.1 . port"
func ownListenLocks(t *testing.T, port int) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	prefix := netlock.TablePrefix + strconv.Itoa(os.Getpid()) + "_"
	want := string([]byte{127, 0, 0, 1, byte(port >> 8), byte(port), 0, 0})
	var out []string
	for _, tb := range tables {
		if !strings.HasPrefix(tb.Name, prefix) {
			continue
		}
		set, err := c.GetSetByName(tb, "listen4")
		if err != nil {
			continue
		}
		elems, err := c.GetSetElements(set)
		if err != nil {
			continue
		}
		for _, e := range elems {
			if string(e.Key) == want {
				out = append(out, tb.Name)
			}
		}
	}
	return out
}

// refusalWatch is a log writer that runs onRefused (once per line) for
// every "passing state refused" line Freeze logs, while Freeze waits.
type refusalWatch struct {
	mu        sync.Mutex
	refused   int
	kept      int
	onRefused func(n int)
}

func (w *refusalWatch) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := string(b)
	if strings.Contains(s, "new connections stay held off until the next try") {
		w.kept++
	}
	if strings.Contains(s, "passing state refused") {
		w.refused++
		if w.onRefused != nil {
			w.onRefused(w.refused)
		}
	}
	return len(b), nil
}

func needRootForListenHold(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dumping a process needs root (ptrace), its lock CAP_NET_ADMIN")
	}
}

// TestFreezeInterruptedBetweenTriesUnlocks: Freeze is cancelled (the
// SIGINT or SIGTERM of `lazycr dump`) in the pause after its first refused
// try: while it paused, the listener was locked by this process; once
// Freeze returned, no lock of this process holds it and the process runs
// untraced.
func TestFreezeInterruptedBetweenTriesUnlocks(t *testing.T) {
	needRootForListenHold(t)
	cmd, port := queuedListener(t, false)
	for _, mode := range []Mode{ModeLeaveRunning, ModeLazy} {
		t.Run(mode.String(), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var during []string
			w := &refusalWatch{onRefused: func(int) {
				during = ownListenLocks(t, port)
				cancel()
			}}
			cp, err := Freeze(ctx, Options{PID: cmd.Process.Pid, Mode: mode, Log: zerolog.New(w)})
			if err == nil {
				cp.Release()
				t.Fatal("Freeze of a listener with a queued connection succeeded; want interrupted")
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Freeze: %v; want interrupted (context canceled)", err)
			}
			if len(during) != 1 {
				t.Errorf("locks of this process on 127.0.0.1:%d in the pause: %v, want one (kept over the pause)", port, during)
			}
			if left := ownListenLocks(t, port); len(left) > 0 {
				t.Errorf("locks %v left on 127.0.0.1:%d after the interrupted Freeze", left, port)
			}
			untracedRunning(t, cmd.Process.Pid)
		})
	}
}

// TestFreezeRefusedUnlocks: the listener's queue stays over every try:
// Freeze refuses after its last (a plain dump), each refused try but the
// last keeps the listener locked into the next pause, and once Freeze
// returned no lock of this process holds it. A lazy dump's last try keeps
// the queue instead (files.DumpOptions.LazyListeners) and succeeds; once
// it is released nothing holds the listener either (the held lock of the
// image goes too).
func TestFreezeRefusedUnlocks(t *testing.T) {
	needRootForListenHold(t)
	for _, c := range []struct {
		name string
		mode Mode
		tree bool
	}{
		{"leave-running", ModeLeaveRunning, false},
		{"kill", ModeKill, false},
		{"lazy", ModeLazy, false},
		{"tree", ModeKill, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			mode := c.mode
			cmd, port := queuedListener(t, c.tree)
			var locked []int
			w := &refusalWatch{}
			w.onRefused = func(int) { locked = append(locked, len(ownListenLocks(t, port))) }
			cp, err := Freeze(context.Background(), Options{PID: cmd.Process.Pid, Mode: mode, Log: zerolog.New(w)})
			if mode == ModeLazy {
				if err != nil {
					t.Fatalf("lazy Freeze: %v; want the queue kept on the last try", err)
				}
				if err := cp.Release(); err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, files.ErrTransient) || !strings.Contains(err.Error(), "after 5 tries") {
				if err == nil {
					cp.Release()
				}
				t.Fatalf("Freeze: %v; want the queue refused after 5 tries", err)
			}
			if kids := children(cmd.Process.Pid); c.tree && (len(kids) != 1 || !strings.Contains(err.Error(), "dump pid "+strconv.Itoa(kids[0])+" fd 3")) {
				t.Errorf("Freeze of the tree: %v; want the refusal of the sleeper %v's fd 3", err, kids)
			}
			if len(locked) != freezeAttempts-1 || w.kept != freezeAttempts-1 {
				t.Errorf("%d refusals (%d listener locks kept), want %d", len(locked), w.kept, freezeAttempts-1)
			}
			for i, n := range locked {
				if n != 1 {
					t.Errorf("pause %d: %d locks of this process on the listener, want 1", i+1, n)
				}
			}
			if left := ownListenLocks(t, port); len(left) > 0 {
				t.Errorf("locks %v left on 127.0.0.1:%d after Freeze", left, port)
			}
			if held := heldOf(t, cmd.Process.Pid); len(held) > 0 {
				t.Errorf("held locks %v of pid %d left", held, cmd.Process.Pid)
			}
			untracedRunning(t, cmd.Process.Pid)
			for _, k := range children(cmd.Process.Pid) {
				untracedRunning(t, k)
			}
		})
	}
}

// heldOf names the held lock tables of pid in this network namespace.
func heldOf(t *testing.T, pid int) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseLasting()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, netlock.TablePrefix+"hold_"+strconv.Itoa(pid)+"_") {
			out = append(out, tb.Name)
		}
	}
	return out
}

// untracedRunning fails t unless pid is neither traced nor stopped.
func untracedRunning(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok && strings.TrimSpace(v) != "0" {
			t.Errorf("pid %d still traced by %s", pid, strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(l, "State:"); ok && strings.ContainsAny(strings.TrimSpace(v)[:1], "tTZX") {
			t.Errorf("pid %d in state %s, want running or sleeping", pid, strings.TrimSpace(v))
		}
	}
}
