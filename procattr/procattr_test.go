package procattr

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// fakeProcess answers prctl/personality like a kernel holding the given
// state and records what is set.
type fakeProcess struct {
	personality, dumpable, pdeathsig, subreaper, nnp uintptr
	calls                                            []string
}

func (f *fakeProcess) Call(nr uintptr, args ...uintptr) (uintptr, error) {
	f.calls = append(f.calls, fmt.Sprint(nr, args))
	switch {
	case nr == unix.SYS_PERSONALITY && args[0] == personalityQuery:
		return f.personality, nil
	case nr == unix.SYS_PERSONALITY:
		f.personality = args[0]
		return 0, nil
	case nr != unix.SYS_PRCTL:
		return 0, unix.ENOSYS
	}
	switch args[0] {
	case unix.PR_GET_DUMPABLE:
		return f.dumpable, nil
	case unix.PR_SET_DUMPABLE:
		if args[1] > 1 {
			return 0, unix.EINVAL
		}
		f.dumpable = args[1]
	case unix.PR_SET_PDEATHSIG:
		f.pdeathsig = args[1]
	case unix.PR_SET_CHILD_SUBREAPER:
		f.subreaper = args[1]
	case unix.PR_GET_NO_NEW_PRIVS:
		return f.nnp, nil
	case unix.PR_SET_NO_NEW_PRIVS:
		f.nnp = args[1]
	default:
		return 0, unix.EINVAL
	}
	return 0, nil
}

func (f *fakeProcess) CallOut(out []byte, nr uintptr, args ...uintptr) error {
	if nr != unix.SYS_PRCTL || args[1] != Out {
		return unix.EINVAL
	}
	switch args[0] {
	case unix.PR_GET_PDEATHSIG:
		binary.LittleEndian.PutUint32(out, uint32(f.pdeathsig))
	case unix.PR_GET_CHILD_SUBREAPER:
		binary.LittleEndian.PutUint32(out, uint32(f.subreaper))
	default:
		return unix.EINVAL
	}
	return nil
}

func TestRoundTrip(t *testing.T) {
	src := &fakeProcess{personality: 0x0040000, dumpable: 0, pdeathsig: uintptr(unix.SIGTERM), subreaper: 1, nnp: 1}
	p := &pb.Process{}
	if err := Dump(src, p); err != nil {
		t.Fatal(err)
	}
	if got, want := Show(p), "personality 0x40000, dumpable 0, parent-death signal SIGTERM, child subreaper, no_new_privs"; got != want {
		t.Errorf("Show = %q, want %q", got, want)
	}
	dst := &fakeProcess{dumpable: 1}
	if err := Restore(dst, p); err != nil {
		t.Fatal(err)
	}
	state := func(f *fakeProcess) [5]uintptr {
		return [5]uintptr{f.personality, f.dumpable, f.pdeathsig, f.subreaper, f.nnp}
	}
	if state(dst) != state(src) {
		t.Errorf("restored %v, dumped %v", state(dst), state(src))
	}
	// A credential change set dumpable to fs.suid_dumpable: AfterCreds
	// puts the dumped 0 back.
	dst.dumpable = 2
	if err := AfterCreds(dst, p); err != nil || dst.dumpable != 0 {
		t.Errorf("AfterCreds: %v, dumpable %d, want 0", err, dst.dumpable)
	}
}

func TestDefaultsCostNothing(t *testing.T) {
	// A process with every default: restore only sets the personality
	// and the dumpable mode.
	p := &pb.Process{Dumpable: 1}
	f := &fakeProcess{dumpable: 1}
	if err := Restore(f, p); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 2 {
		t.Errorf("restore of defaults injected %d syscalls: %s", len(f.calls), strings.Join(f.calls, "; "))
	}
	if s := Show(p); s != "" {
		t.Errorf("Show of defaults = %q", s)
	}
}

func TestDumpableTwoRefusedUnlessCredsBroughtIt(t *testing.T) {
	p := &pb.Process{Dumpable: 2}
	f := &fakeProcess{dumpable: 1}
	if err := Restore(f, p); err != nil {
		t.Fatal(err)
	}
	if err := AfterCreds(f, p); err == nil || !strings.Contains(err.Error(), "dumpable mode 2") {
		t.Errorf("AfterCreds with dumpable 1 for an image's 2: %v, want a refusal", err)
	}
	f.dumpable = 2 // the credential change did it
	if err := AfterCreds(f, p); err != nil {
		t.Errorf("AfterCreds with the mode in place: %v", err)
	}
}
