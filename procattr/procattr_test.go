package procattr

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/vmattr"
	"golang.org/x/sys/unix"
)

// fakeProcess answers prctl/personality like a kernel holding the given
// state and records what is set.
type fakeProcess struct {
	personality, dumpable, pdeathsig, subreaper, nnp uintptr
	nice                                             int // of the calling thread
	cpus, policy, priority, ioprio, slack            uintptr
	threadNice                                       map[int]int
	mdwe                                             *uintptr          // nil: a kernel without PR_GET_MDWE
	keyrings                                         map[int32][]int32 // keyctl: KEY_SPEC_* -> serial, then key serials; nil: ENOSYS
	joined, linked                                   int               // KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_LINK calls
	sesName                                          string            // the session keyring's name (KEYCTL_DESCRIBE)
	mempolicy                                        uint32            // get_mempolicy mode; set_mempolicy sets it
	mce                                              *uintptr          // PR_MCE_KILL_GET; nil: EINVAL
	mempolicyNodes                                   []byte
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
	case nr == unix.SYS_GETPRIORITY && args[0] == unix.PRIO_PROCESS:
		n := f.nice
		if args[1] != 0 {
			n = f.threadNice[int(args[1])]
		}
		return uintptr(20 - n), nil // the raw syscall's 20 - nice
	case nr == unix.SYS_SETPRIORITY && args[0] == unix.PRIO_PROCESS && args[1] == 0:
		f.nice = int(int32(args[2]))
		return 0, nil
	case nr == unix.SYS_SCHED_GETSCHEDULER && args[0] == 0:
		return f.policy, nil
	case nr == unix.SYS_IOPRIO_GET && args[0] == ioprioWhoProcess && args[1] == 0:
		return f.ioprio, nil
	case nr == unix.SYS_PRCTL && args[0] == unix.PR_GET_TIMERSLACK:
		return f.slack, nil
	case nr == unix.SYS_KEYCTL && f.keyrings != nil:
		k, ok := f.keyrings[int32(uint32(args[1]))]
		switch args[0] {
		case unix.KEYCTL_JOIN_SESSION_KEYRING:
			f.joined++
			f.keyrings[unix.KEY_SPEC_SESSION_KEYRING] = []int32{777}
			f.sesName = ""
			return 777, nil
		case unix.KEYCTL_LINK:
			f.linked++
			return 0, nil
		case unix.KEYCTL_GET_KEYRING_ID:
			if !ok {
				return 0, unix.ENOKEY
			}
			return uintptr(k[0]), nil
		case unix.KEYCTL_READ:
			if !ok {
				return 0, unix.ENOKEY
			}
			return uintptr(4 * (len(k) - 1)), nil
		}
		return 0, unix.EINVAL
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
	case unix.PR_MCE_KILL_GET:
		if f.mce == nil {
			return 0, unix.EINVAL
		}
		return *f.mce, nil
	case unix.PR_MCE_KILL:
		if f.mce == nil || args[1] != unix.PR_MCE_KILL_SET {
			return 0, unix.EINVAL
		}
		*f.mce = args[2]
	case unix.PR_GET_MDWE:
		if f.mdwe == nil {
			return 0, unix.EINVAL
		}
		return *f.mdwe, nil
	case unix.PR_SET_MDWE:
		if f.mdwe == nil {
			return 0, unix.EINVAL
		}
		*f.mdwe = args[1]
	default:
		return 0, unix.EINVAL
	}
	return 0, nil
}

func (f *fakeProcess) CallOut(out []byte, nr uintptr, args ...uintptr) error {
	switch {
	case nr == unix.SYS_SCHED_GETAFFINITY && args[0] == 0 && args[2] == Out:
		binary.LittleEndian.PutUint64(out, uint64(f.cpus))
		return nil
	case nr == unix.SYS_SCHED_GETPARAM && args[0] == 0 && args[1] == Out:
		binary.LittleEndian.PutUint32(out, uint32(f.priority))
		return nil
	}
	if nr == unix.SYS_GET_MEMPOLICY {
		switch {
		case args[0] == Out:
			binary.LittleEndian.PutUint32(out, f.mempolicy)
		case args[1] == Out:
			copy(out, f.mempolicyNodes)
		default:
			return unix.EINVAL
		}
		return nil
	}
	if nr == unix.SYS_KEYCTL && args[0] == unix.KEYCTL_DESCRIBE && f.keyrings != nil {
		copy(out, "keyring;0;0;3f030000;"+f.sesName+"\x00")
		return nil
	}
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
	src := &fakeProcess{personality: 0x0040000, dumpable: 0, pdeathsig: uintptr(unix.SIGTERM), subreaper: 1, nnp: 1, nice: -3,
		cpus: 0b11 << 62, policy: unix.SCHED_FIFO | schedResetOnFork, priority: 10, ioprio: 3 << ioprioClassShift, slack: 123456}
	p := &pb.Process{}
	if err := Dump(src, p); err != nil {
		t.Fatal(err)
	}
	if got, want := Show(p), "personality 0x40000, dumpable 0, parent-death signal SIGTERM, child subreaper, no_new_privs, nice -3, scheduling policy 1073741825 priority 10, I/O priority class 3 level 0, CPUs 62-63"; got != want {
		t.Errorf("Show = %q, want %q", got, want)
	}
	dst := &fakeProcess{dumpable: 1, nice: 5}
	if err := Restore(dst, p); err != nil {
		t.Fatal(err)
	}
	state := func(f *fakeProcess) [6]uintptr {
		return [6]uintptr{f.personality, f.dumpable, f.pdeathsig, f.subreaper, f.nnp, uintptr(f.nice)}
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

// TestNice (F3): the nice value is read as 20 - the raw getpriority
// result, set back even when 0 (the stub has lazycr's), left alone for an
// image without it, and a thread with another value is refused.
func TestNice(t *testing.T) {
	for _, n := range []int{-20, 0, 7, 19} {
		src := &fakeProcess{nice: n, threadNice: map[int]int{101: n, 102: 5}}
		p := &pb.Process{}
		if err := Dump(src, p); err != nil {
			t.Fatal(err)
		}
		if p.Nice == nil || int(*p.Nice) != n {
			t.Fatalf("dumped nice %v, want %d", p.Nice, n)
		}
		dst := &fakeProcess{nice: 4}
		if err := Restore(dst, p); err != nil || dst.nice != n {
			t.Errorf("restored nice %d (%v), want %d", dst.nice, err, n)
		}
		if err := ThreadNice(src, p, 101); err != nil {
			t.Errorf("thread with the leader's nice: %v", err)
		}
		if err := ThreadNice(src, p, 102); err == nil || !strings.Contains(err.Error(), "thread 102 has nice value") {
			t.Errorf("thread with another nice: %v, want a refusal", err)
		}
	}
	old := &fakeProcess{nice: 4}
	if err := Restore(old, &pb.Process{Dumpable: 1}); err != nil || old.nice != 4 {
		t.Errorf("image without a nice value: nice %d, %v; want 4 left alone", old.nice, err)
	}
	bad := int32(40)
	if err := Restore(&fakeProcess{}, &pb.Process{Dumpable: 1, Nice: &bad}); err == nil {
		t.Error("nice 40 in the image restored without an error")
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

// TestSchedDump: the leader's affinity, policy (with reset-on-fork),
// priority, I/O priority and timer slack are recorded; SCHED_DEADLINE is
// refused, naming it.
func TestSchedDump(t *testing.T) {
	src := &fakeProcess{dumpable: 1, cpus: 0b1010, policy: unix.SCHED_BATCH, ioprio: 2<<ioprioClassShift | 7, slack: 50000}
	p := &pb.Process{}
	if err := Dump(src, p); err != nil {
		t.Fatal(err)
	}
	s := p.Sched
	if s == nil || len(s.Cpus) != 1 || s.Cpus[0] != 0b1010 || s.Policy != unix.SCHED_BATCH || s.Ioprio != 2<<ioprioClassShift|7 || s.TimerSlackNs != 50000 {
		t.Errorf("dumped %v", s)
	}
	if got := cpuList([]uint64{0b1011, 1 << 2}); got != "0-1,3,66" {
		t.Errorf("cpuList = %q, want 0-1,3,66", got)
	}
	src.policy = schedDeadline
	if err := Dump(src, &pb.Process{}); err == nil || !strings.Contains(err.Error(), "SCHED_DEADLINE") {
		t.Errorf("dump of a SCHED_DEADLINE process: %v, want a refusal naming it", err)
	}
}

// TestMdwe (qa5): memory-deny-write-execute is recorded, shown, left alone
// by Restore (it would refuse restore's own mappings) and set by
// RestoreLast; a kernel without it (EINVAL) records 0 and RestoreLast of 0
// injects nothing.
func TestMdwe(t *testing.T) {
	on := uintptr(unix.PR_MDWE_REFUSE_EXEC_GAIN)
	p := &pb.Process{}
	if err := Dump(&fakeProcess{dumpable: 1, mdwe: &on}, p); err != nil {
		t.Fatal(err)
	}
	if p.Mdwe != unix.PR_MDWE_REFUSE_EXEC_GAIN || !strings.Contains(Show(p), "memory-deny-write-execute") {
		t.Fatalf("dumped mdwe %#x, show %q", p.Mdwe, Show(p))
	}
	var off uintptr
	dst := &fakeProcess{dumpable: 1, mdwe: &off}
	if err := Restore(dst, p); err != nil || off != 0 {
		t.Fatalf("Restore: %v, mdwe %#x: want it left for RestoreLast", err, off)
	}
	if err := RestoreLast(dst, p); err != nil || off != unix.PR_MDWE_REFUSE_EXEC_GAIN {
		t.Errorf("RestoreLast: %v, mdwe %#x, want %#x", err, off, unix.PR_MDWE_REFUSE_EXEC_GAIN)
	}
	old := &pb.Process{}
	if err := Dump(&fakeProcess{dumpable: 1}, old); err != nil || old.Mdwe != 0 {
		t.Errorf("dump on a kernel without MDWE: %v, mdwe %#x", err, old.Mdwe)
	}
	none := &fakeProcess{}
	if err := RestoreLast(none, old); err != nil || len(none.calls) != 0 {
		t.Errorf("RestoreLast without MDWE: %v, calls %v", err, none.calls)
	}
}

// TestKeyrings (qa5): the session keyring's serial and key count are
// recorded; a process or thread keyring with keys is refused; restore
// keeps the session keyring when the stub has the very same one, joins a
// new empty one otherwise (never lazycr's), and refuses one that held
// keys. A process that had none (its uid's user-session keyring) is left
// to fall back to it, or, when the stub has one of its own, gets a new one
// linked to its user keyring.
func TestKeyrings(t *testing.T) {
	src := &fakeProcess{dumpable: 1, sesName: "myses", keyrings: map[int32][]int32{unix.KEY_SPEC_SESSION_KEYRING: {41, 1, 2}}}
	p := &pb.Process{}
	if err := Dump(src, p); err != nil {
		t.Fatal(err)
	}
	if p.SessionKeyring != 41 || p.SessionKeyringKeys != 2 || !p.SessionKeyringOwn {
		t.Fatalf("dumped session keyring %d with %d keys (own %v), want 41 with 2 (own)", p.SessionKeyring, p.SessionKeyringKeys, p.SessionKeyringOwn)
	}
	same := &fakeProcess{dumpable: 1, sesName: "myses", keyrings: map[int32][]int32{unix.KEY_SPEC_SESSION_KEYRING: {41}}}
	if err := Restore(same, p); err != nil || same.joined != 0 {
		t.Errorf("restore with the same session keyring: %v, joined %d, want kept", err, same.joined)
	}
	other := &fakeProcess{dumpable: 1, sesName: "admin", keyrings: map[int32][]int32{unix.KEY_SPEC_SESSION_KEYRING: {99, 5}}}
	if err := Restore(other, p); err == nil || !strings.Contains(err.Error(), "session keyring 41 held 2 keys") {
		t.Errorf("restore of a keyring with keys elsewhere: %v, want a refusal naming it", err)
	}
	p.SessionKeyringKeys = 0
	if err := Restore(other, p); err != nil || other.joined != 1 {
		t.Errorf("restore of an empty keyring elsewhere: %v, joined %d, want a new one", err, other.joined)
	}
	if err := RestoreLast(other, p); err != nil || other.linked != 0 {
		t.Errorf("RestoreLast of an own keyring: %v, linked %d, want nothing", err, other.linked)
	}
	own := &fakeProcess{dumpable: 1, sesName: "s", keyrings: map[int32][]int32{unix.KEY_SPEC_SESSION_KEYRING: {41}, unix.KEY_SPEC_PROCESS_KEYRING: {50, 7}}}
	if err := Dump(own, &pb.Process{}); err == nil || !strings.Contains(err.Error(), "process keyring 50 holds 1 keys") {
		t.Errorf("dump with a process keyring holding a key: %v, want a refusal naming it", err)
	}

	none := &pb.Process{}
	if err := Dump(&fakeProcess{dumpable: 1, sesName: "_uid_ses.65534", keyrings: map[int32][]int32{unix.KEY_SPEC_SESSION_KEYRING: {60, 61}}}, none); err != nil {
		t.Fatal(err)
	}
	if none.SessionKeyring != 60 || none.SessionKeyringKeys != 0 || none.SessionKeyringOwn {
		t.Fatalf("dumped user-session keyring %d with %d keys (own %v), want 60, 0 keys, not own", none.SessionKeyring, none.SessionKeyringKeys, none.SessionKeyringOwn)
	}
	fallback := &fakeProcess{dumpable: 1, sesName: "_uid_ses.0", keyrings: map[int32][]int32{unix.KEY_SPEC_SESSION_KEYRING: {70}}}
	if err := Restore(fallback, none); err != nil || fallback.joined != 0 {
		t.Errorf("restore without keyrings on either side: %v, joined %d, want nothing", err, fallback.joined)
	}
	if err := RestoreLast(fallback, none); err != nil || fallback.linked != 0 {
		t.Errorf("RestoreLast without keyrings on either side: %v, linked %d, want nothing", err, fallback.linked)
	}
	login := &fakeProcess{dumpable: 1, sesName: "admin", keyrings: map[int32][]int32{unix.KEY_SPEC_SESSION_KEYRING: {80, 1}}}
	if err := Restore(login, none); err != nil || login.joined != 1 {
		t.Errorf("restore from a stub with a keyring of its own: %v, joined %d, want a new one", err, login.joined)
	}
	if err := RestoreLast(login, none); err != nil || login.linked != 1 {
		t.Errorf("RestoreLast: %v, linked %d, want the user keyring linked", err, login.linked)
	}
}

func (f *fakeProcess) CallIn(in []byte, nr uintptr, args ...uintptr) (uintptr, error) {
	f.calls = append(f.calls, fmt.Sprint(nr, args))
	if nr == unix.SYS_SET_MEMPOLICY && args[1] == In && args[2] == uintptr(len(in)*8+1) {
		f.mempolicy, f.mempolicyNodes = uint32(args[0]), append([]byte(nil), in...)
		return 0, nil
	}
	return 0, unix.EINVAL
}

// TestMempolicy (qa5): the leader's NUMA memory policy (numactl
// --membind) is recorded with its node mask and set again; the default
// costs nothing; procattr.In is vmattr.In, so one caller serves both.
func TestMempolicy(t *testing.T) {
	if In != vmattr.In {
		t.Fatalf("procattr.In %#x, vmattr.In %#x", In, vmattr.In)
	}
	nodes := make([]byte, 128)
	nodes[0] = 0b101
	src := &fakeProcess{dumpable: 1, mempolicy: 2 | 1<<15, mempolicyNodes: nodes} // MPOL_BIND|MPOL_F_STATIC_NODES
	p := &pb.Process{}
	if err := Dump(src, p); err != nil {
		t.Fatal(err)
	}
	if p.Mempolicy != 2|1<<15 || len(p.MempolicyNodes) != 128 || p.MempolicyNodes[0] != 0b101 {
		t.Fatalf("dumped policy %#x nodes %x", p.Mempolicy, p.MempolicyNodes)
	}
	if s := Show(p); !strings.Contains(s, "memory policy 0x8002 nodes 0,2") {
		t.Errorf("Show = %q", s)
	}
	dst := &fakeProcess{dumpable: 1}
	if err := Restore(dst, p); err != nil || dst.mempolicy != p.Mempolicy || dst.mempolicyNodes[0] != 0b101 {
		t.Errorf("restored policy %#x nodes %x (%v)", dst.mempolicy, dst.mempolicyNodes, err)
	}
	def := &pb.Process{}
	if err := Dump(&fakeProcess{dumpable: 1}, def); err != nil || def.Mempolicy != 0 || def.MempolicyNodes != nil {
		t.Errorf("default policy dumped as %#x %x (%v)", def.Mempolicy, def.MempolicyNodes, err)
	}
}

// TestMceKill (qa5): an early or late memory-error kill policy is recorded
// and set again; the default costs nothing.
func TestMceKill(t *testing.T) {
	for _, v := range []uintptr{unix.PR_MCE_KILL_EARLY, unix.PR_MCE_KILL_LATE} {
		src := v
		p := &pb.Process{}
		if err := Dump(&fakeProcess{dumpable: 1, mce: &src}, p); err != nil {
			t.Fatal(err)
		}
		got := uintptr(unix.PR_MCE_KILL_DEFAULT)
		dst := &fakeProcess{dumpable: 1, mce: &got}
		if err := Restore(dst, p); err != nil || got != v {
			t.Errorf("policy %d restored as %d (%v)", v, got, err)
		}
	}
	def := uintptr(unix.PR_MCE_KILL_DEFAULT)
	p := &pb.Process{}
	if err := Dump(&fakeProcess{dumpable: 1, mce: &def}, p); err != nil || p.MceKill != 0 || strings.Contains(Show(p), "memory-error") {
		t.Errorf("default policy dumped as %d, show %q (%v)", p.MceKill, Show(p), err)
	}
}

// TestThreadMempolicy (qa5): a thread with the leader's memory policy
// passes; one with a policy of its own is refused, naming both.
func TestThreadMempolicy(t *testing.T) {
	nodes := make([]byte, 128)
	nodes[0] = 1
	p := &pb.Process{Mempolicy: 2, MempolicyNodes: nodes}
	if err := ThreadMempolicy(&fakeProcess{mempolicy: 2, mempolicyNodes: nodes}, p, 101); err != nil {
		t.Errorf("thread with the leader's policy: %v", err)
	}
	err := ThreadMempolicy(&fakeProcess{mempolicy: 1, mempolicyNodes: nodes}, p, 102)
	if err == nil || !strings.Contains(err.Error(), "thread 102 has memory policy 0x1 nodes 0, the main thread 0x2 nodes 0") {
		t.Errorf("thread with its own policy: %v, want a refusal naming both", err)
	}
	if err := ThreadMempolicy(&fakeProcess{}, &pb.Process{}, 103); err != nil {
		t.Errorf("default policy everywhere: %v", err)
	}
}
