package migrate

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/uffd"
)

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	runs := []uffd.Run{{Addr: 0x7f0000000000, Npages: 3}, {Addr: 0x7f0000010000, Npages: 1}}
	want := newState(42, 12345, 0xabcdef, []byte{1, 2, 3}, "127.0.0.1:27000", []uint32{42}, runs)
	if err := WriteState(dir, want); err != nil {
		t.Fatal(err)
	}
	for name, perm := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, StateFile): 0o600} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), perm)
		}
	}
	got, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %+v, wrote %+v", got, want)
	}
	if id, _ := got.SessionID(); id != 0xabcdef {
		t.Errorf("session %#x", id)
	}
	if r, _ := got.LazyRuns(); !reflect.DeepEqual(r, runs) {
		t.Errorf("runs %+v", r)
	}
}

func TestDecodeStateRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"not json":    "{",
		"no pid":      `{"session":"1","runs":[]}`,
		"session 0":   `{"pid":1,"session":"0"}`,
		"bad token":   `{"pid":1,"session":"1","token":"xyz"}`,
		"overlapping": `{"pid":1,"session":"1","runs":[{"addr":4096,"npages":2},{"addr":8192,"npages":1}]}`,
		"unaligned":   `{"pid":1,"session":"1","runs":[{"addr":1,"npages":1}]}`,
	} {
		if st, err := DecodeState([]byte(in)); err == nil {
			t.Errorf("%s: decoded %+v", name, st)
		}
	}
}

// FuzzDecodeState: an error or a state whose parts all decode.
func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"pid":7,"start_time":1,"session":"ab","token":"0102","listen":"127.0.0.1:1","runs":[{"addr":4096,"npages":2}]}`))
	f.Add([]byte(`{"pid":1,"session":"1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := DecodeState(b)
		if (err == nil) == (st == nil) {
			t.Fatalf("DecodeState: %v and %v", st, err)
		}
		if err != nil {
			return
		}
		if _, err := st.SessionID(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.TokenBytes(); err != nil {
			t.Fatal(err)
		}
		if _, err := st.LazyRuns(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSweepStates: the state of a process that is gone, or whose pid was
// reused (start time differs), is removed; a live original's (stopped or
// running), a foreign directory and a state dir with foreign files stay.
func TestSweepStates(t *testing.T) {
	root := t.TempDir()
	stopped := exec.Command("/bin/sleep", "1000")
	if err := stopped.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stopped.Process.Kill(); stopped.Wait() }()
	if err := stopped.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	gone := exec.Command("/bin/true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	self, err := proc.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	st, err := proc.ReadStat(stopped.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	goneStart := uint64(1)
	if s, err := proc.ReadStat(gone.Process.Pid); err == nil { // reused already
		goneStart = s.StartTime + 1
	}
	write := func(pid int, start uint64, name string) string {
		dir := filepath.Join(root, name)
		if err := WriteState(dir, newState(pid, start, 1, []byte{1}, "127.0.0.1:1", nil, nil)); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	keep := []string{
		write(os.Getpid(), self.StartTime, fmt.Sprintf("pid-%d-%d", os.Getpid(), self.StartTime)),
		write(stopped.Process.Pid, st.StartTime, fmt.Sprintf("pid-%d-%d", stopped.Process.Pid, st.StartTime)),
		write(os.Getpid(), self.StartTime, fmt.Sprintf("pid-%d", os.Getpid())),
		write(gone.Process.Pid, goneStart, "not-a-state"),
	}
	foreign := write(gone.Process.Pid, goneStart, fmt.Sprintf("pid-%d-%d", gone.Process.Pid, goneStart+7))
	if err := os.WriteFile(filepath.Join(foreign, "notes"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, foreign)
	remove := []string{
		write(gone.Process.Pid, goneStart, fmt.Sprintf("pid-%d-%d", gone.Process.Pid, goneStart)),
		write(os.Getpid(), self.StartTime+1, fmt.Sprintf("pid-%d-%d", os.Getpid(), self.StartTime+1)),
		write(gone.Process.Pid, goneStart, fmt.Sprintf("pid-%d", gone.Process.Pid)),
	}
	// A leftover temporary file of WriteState goes with its state.
	if err := os.WriteFile(filepath.Join(remove[0], StateFile+".123"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := SweepStates(root, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "notes") {
		t.Errorf("SweepStates: error %v, want one naming the foreign file", err)
	}
	slices.Sort(got)
	slices.Sort(remove)
	if !slices.Equal(got, remove) {
		t.Errorf("SweepStates removed %v, want %v", got, remove)
	}
	for _, d := range remove {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there (%v)", d, err)
		}
	}
	for _, d := range keep {
		if _, err := os.Stat(filepath.Join(d, StateFile)); err != nil {
			t.Errorf("%s: %v, want it kept", d, err)
		}
	}
	if got, err := SweepStates(filepath.Join(root, "missing"), zerolog.Nop()); err != nil || len(got) != 0 {
		t.Errorf("SweepStates of a missing root: %v, %v", got, err)
	}
}

// FuzzParseStateDirName: a name is taken only in its canonical form, so a
// sweep never mistakes another directory for a session state.
func FuzzParseStateDirName(f *testing.F) {
	for _, s := range []string{"pid-1-2", "pid-42", "pid-01-2", "pid--1-2", "pid-1-0", "pid-1-2-3", "x", "pid-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		pid, start, ok := parseStateDirName(name)
		if !ok {
			return
		}
		want := fmt.Sprintf("pid-%d-%d", pid, start)
		if start == 0 {
			want = fmt.Sprintf("pid-%d", pid)
		}
		if pid <= 0 || name != want {
			t.Fatalf("parseStateDirName(%q) = %d, %d: not canonical (%q)", name, pid, start, want)
		}
		if start != 0 && DefaultStateDir(pid, start) != filepath.Join(StateRoot, name) {
			t.Fatalf("DefaultStateDir(%d, %d) != %s/%s", pid, start, StateRoot, name)
		}
	})
}
