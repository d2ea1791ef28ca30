package kabi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"UFFDIO_API", UFFDIO_API, 0xc018aa3f},
		{"UFFDIO_REGISTER", UFFDIO_REGISTER, 0xc020aa00},
		{"UFFDIO_UNREGISTER", UFFDIO_UNREGISTER, 0x8010aa01},
		{"UFFDIO_WAKE", UFFDIO_WAKE, 0x8010aa02},
		{"UFFDIO_COPY", UFFDIO_COPY, 0xc028aa03},
		{"UFFDIO_ZEROPAGE", UFFDIO_ZEROPAGE, 0xc020aa04},
		{"UFFDIO_MOVE", UFFDIO_MOVE, 0xc028aa05},
		{"UFFDIO_WRITEPROTECT", UFFDIO_WRITEPROTECT, 0xc018aa06},
		{"UFFDIO_CONTINUE", UFFDIO_CONTINUE, 0xc020aa07},
		{"UFFDIO_POISON", UFFDIO_POISON, 0xc020aa08},
		{"USERFAULTFD_IOC_NEW", USERFAULTFD_IOC_NEW, 0xaa00},
		{"PAGEMAP_SCAN", PAGEMAP_SCAN, 0xc0606610},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
		if n := IoctlName(c.got); n != c.name {
			t.Errorf("IoctlName(%#x) = %q, want %q", c.got, n, c.name)
		}
	}
}

func TestSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"uffdio_api", unsafe.Sizeof(UffdioAPI{}), 24},
		{"uffdio_range", unsafe.Sizeof(UffdioRange{}), 16},
		{"uffdio_register", unsafe.Sizeof(UffdioRegister{}), 32},
		{"kcmp_epoll_slot", unsafe.Sizeof(KcmpEpollSlot{}), 12},
		{"f_owner_ex", unsafe.Sizeof(FOwnerEx{}), 8},
		{"semid64_ds", unsafe.Sizeof(SemidDs{}), 104},
		{"seminfo", unsafe.Sizeof(semInfo{}), 40},
		{"tcp_repair_window", unsafe.Sizeof(TCPRepairWindow{}), TCPRepairWindowLen},
		{"tcp_repair_opt", unsafe.Sizeof(TCPRepairOpt{}), TCPRepairOptLen},
		{"uffdio_copy", unsafe.Sizeof(UffdioCopy{}), 40},
		{"uffdio_zeropage", unsafe.Sizeof(UffdioZeropage{}), 32},
		{"uffdio_writeprotect", unsafe.Sizeof(UffdioWriteprotect{}), 24},
		{"uffdio_continue", unsafe.Sizeof(UffdioContinue{}), 32},
		{"uffdio_poison", unsafe.Sizeof(UffdioPoison{}), 32},
		{"uffdio_move", unsafe.Sizeof(UffdioMove{}), 40},
		{"bpf_attr link_create (iterator)", unsafe.Sizeof(BpfLinkCreateIter{}), 32},
		{"bpf_iter_link_info", unsafe.Sizeof(BpfIterLinkInfoTask{}), 16},
		{"bpf_attr iter_create", unsafe.Sizeof(BpfIterCreate{}), 8},
		{"termios2", unsafe.Sizeof(Termios2{}), 44},
		{"winsize", unsafe.Sizeof(unix.Winsize{}), 8},
		{"uffd_msg", unsafe.Sizeof(UffdMsg{}), 32},
		{"page_region", unsafe.Sizeof(PageRegion{}), 24},
		{"pm_scan_arg", unsafe.Sizeof(PmScanArg{}), 96},
		{"ptrace_rseq_configuration", unsafe.Sizeof(PtraceRseqConfiguration{}), 24},
		{"ptrace_sud_config", unsafe.Sizeof(PtraceSudConfig{}), 32},
		{"prctl_mm_map", unsafe.Sizeof(PrctlMmMap{}), 104},
		{"clone_args", unsafe.Sizeof(CloneArgs{}), unix.CLONE_ARGS_SIZE_VER2},
		{"clone_args (remote)", unsafe.Sizeof(RemoteCloneArgs{}), unix.CLONE_ARGS_SIZE_VER2},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(struct %s) = %d, want %d", c.name, c.got, c.want)
		}
	}
	if a, b := unsafe.Offsetof(CloneArgs{}.SetTid), unsafe.Offsetof(RemoteCloneArgs{}.SetTid); a != 64 || b != 64 {
		t.Errorf("clone_args.set_tid at %d (remote %d), want 64", a, b)
	}
	if off := unsafe.Offsetof(PmScanArg{}.Vec); off != 40 {
		t.Errorf("pm_scan_arg.vec at %d, want 40", off)
	}
	if off := unsafe.Offsetof(UffdMsg{}.Arg); off != 8 {
		t.Errorf("uffd_msg.arg at %d, want 8", off)
	}
}

// TestUffdMsgAccessors checks the struct view of uffd_msg against an
// encoding/binary reference on random bytes (STYLE rule 13).
func TestUffdMsgAccessors(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		var raw [32]byte
		for i := range raw {
			raw[i] = byte(r.UintN(256))
		}
		m := (*UffdMsg)(unsafe.Pointer(&raw[0]))
		le := binary.LittleEndian
		var ref UffdMsg
		if err := binary.Read(bytes.NewReader(raw[:]), le, &ref); err != nil {
			t.Fatal(err)
		}
		if *m != ref {
			t.Fatalf("cast %+v != binary.Read %+v", *m, ref)
		}
		checks := []struct {
			name      string
			got, want uint64
		}{
			{"event", uint64(m.Event), uint64(raw[0])},
			{"pagefault.flags", m.PagefaultFlags(), le.Uint64(raw[8:])},
			{"pagefault.address", m.PagefaultAddress(), le.Uint64(raw[16:])},
			{"pagefault.feat.ptid", uint64(m.PagefaultPtid()), uint64(le.Uint32(raw[24:]))},
			{"fork.ufd", uint64(m.ForkUfd()), uint64(le.Uint32(raw[8:]))},
			{"remap.from", m.RemapFrom(), le.Uint64(raw[8:])},
			{"remap.to", m.RemapTo(), le.Uint64(raw[16:])},
			{"remap.len", m.RemapLen(), le.Uint64(raw[24:])},
			{"remove.start", m.RemoveStart(), le.Uint64(raw[8:])},
			{"remove.end", m.RemoveEnd(), le.Uint64(raw[16:])},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Fatalf("%s = %#x, want %#x", c.name, c.got, c.want)
			}
		}
	}
}

func TestFeatureNames(t *testing.T) {
	var all uint64
	for i, f := range FeatureNames {
		if f.Bit != 1<<i {
			t.Errorf("FeatureNames[%d] = %s bit %#x, want %#x", i, f.Name, f.Bit, 1<<i)
		}
		all |= f.Bit
		if b, ok := FeatureByName("UFFD_FEATURE_" + f.Name); !ok || b != f.Bit {
			t.Errorf("FeatureByName(%s) = %#x, %v", f.Name, b, ok)
		}
	}
	if all != UFFD_FEATURE_ALL_KNOWN || UFFD_FEATURE_ALL_KNOWN != 0x1ffff {
		t.Errorf("all features = %#x, UFFD_FEATURE_ALL_KNOWN = %#x", all, UFFD_FEATURE_ALL_KNOWN)
	}
	got := FeatureMaskNames(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_THREAD_ID | 1<<40)
	want := []string{"EVENT_FORK", "THREAD_ID", "bit40"}
	if len(got) != len(want) {
		t.Fatalf("FeatureMaskNames = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("FeatureMaskNames = %v, want %v", got, want)
		}
	}
	if got := IoctlMaskNames(1<<UFFDIO_NR_COPY | 1<<UFFDIO_NR_API | 1<<20); len(got) != 3 || got[0] != "COPY" || got[1] != "bit20" || got[2] != "API" {
		t.Errorf("IoctlMaskNames = %v", got)
	}
}

func TestIoctlError(t *testing.T) {
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var c UffdioCopy
	err = Ioctl(int(f.Fd()), UFFDIO_COPY, unsafe.Pointer(&c))
	if !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("UFFDIO_COPY on /dev/null: %v, want ENOTTY", err)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || se.Syscall != "ioctl UFFDIO_COPY" {
		t.Fatalf("error %q does not name the ioctl", err)
	}
}

func TestClone3Invalid(t *testing.T) {
	// An unknown flag bit is refused before anything happens.
	args := CloneArgs{Flags: 1 << 62}
	_, err := Clone3(&args, unix.CLONE_ARGS_SIZE_VER2)
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("clone3 with bogus flag: %v, want EINVAL", err)
	}
}

// TestTCPRepairEncoding: the hand encodings match the struct layouts, and a
// window survives a round trip.
func TestTCPRepairEncoding(t *testing.T) {
	w := TCPRepairWindow{1, 2, 3, 4, 5}
	b := w.Encode()
	if got := *(*TCPRepairWindow)(unsafe.Pointer(&b[0])); got != w {
		t.Errorf("window encoded as %+v, want %+v", got, w)
	}
	if got, ok := DecodeTCPRepairWindow(b); !ok || got != w {
		t.Errorf("window decoded as %+v, %v", got, ok)
	}
	if _, ok := DecodeTCPRepairWindow(b[:19]); ok {
		t.Error("a short window decoded")
	}
	o := []TCPRepairOpt{{2, 1460}, {3, 7 | 7<<16}}
	ob := EncodeTCPRepairOpts(o)
	if got := unsafe.Slice((*TCPRepairOpt)(unsafe.Pointer(&ob[0])), 2); got[0] != o[0] || got[1] != o[1] {
		t.Errorf("options encoded as %+v, want %+v", got, o)
	}
}

// FuzzDecodeTCPRepairWindow: a decode succeeds exactly for 20 bytes or
// more, agrees with the struct layout read in place, and re-encodes to the
// same 20 bytes.
func FuzzDecodeTCPRepairWindow(f *testing.F) {
	f.Add(TCPRepairWindow{1, 2, 3, 4, 5}.Encode())
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		w, ok := DecodeTCPRepairWindow(b)
		if ok != (len(b) >= TCPRepairWindowLen) {
			t.Fatalf("decode of %d bytes: ok %v", len(b), ok)
		}
		if !ok {
			return
		}
		if !bytes.Equal(w.Encode(), b[:TCPRepairWindowLen]) {
			t.Fatalf("round trip of %x gives %x", b[:TCPRepairWindowLen], w.Encode())
		}
		if in := *(*TCPRepairWindow)(unsafe.Pointer(&b[0])); in != w {
			t.Fatalf("decoded %+v, in place %+v", w, in)
		}
	})
}

// TestSemStatAny makes a semaphore set, operates on it and finds it by
// index with its nsems, otime and the caller as GETPID.
func TestSemStatAny(t *testing.T) {
	id, _, errno := unix.Syscall(unix.SYS_SEMGET, 0 /* IPC_PRIVATE */, 2, 0o600)
	if errno != 0 {
		t.Skipf("semget: %v", errno)
	}
	defer unix.Syscall6(unix.SYS_SEMCTL, id, 0, unix.IPC_RMID, 0, 0, 0)
	op := [3]uint16{1, 1, 0} // sem_num 1, sem_op +1, sem_flg 0
	if _, _, errno := unix.Syscall(unix.SYS_SEMOP, id, uintptr(unsafe.Pointer(&op)), 1); errno != 0 {
		t.Fatalf("semop: %v", errno)
	}
	maxIdx, err := SemMaxIndex()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := 0; i <= maxIdx; i++ {
		var ds SemidDs
		got, err := SemStatAny(i, &ds)
		if errors.Is(err, unix.EINVAL) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got != int(id) {
			continue
		}
		found = true
		if ds.Nsems != 2 || ds.Otime == 0 {
			t.Errorf("set %d: nsems %d otime %d, want 2 and non-zero", id, ds.Nsems, ds.Otime)
		}
	}
	if !found {
		t.Fatalf("set %d not found among indexes 0..%d", id, maxIdx)
	}
	for num, want := range []int{0, os.Getpid()} {
		if pid, err := SemGetPid(int(id), num); err != nil || pid != want {
			t.Errorf("GETPID of semaphore %d: %d, %v; want %d", num, pid, err, want)
		}
	}
}
