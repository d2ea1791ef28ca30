package probe

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: ptrace, clone3 set_tid, unshare and uffd events need capabilities")
	}
}

// fdList is the set of open fds and their targets.
func fdList(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	self := "/proc/" + strconv.Itoa(os.Getpid()) + "/fd" // ReadDir's own fd
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l != self {
			out = append(out, e.Name()+"->"+l)
		}
	}
	return out
}

// children lists the children of every thread of this process.
func children(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("/proc/self/task/*/children")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			out = append(out, strings.Fields(string(b))...)
		}
	}
	return out
}

func TestAll(t *testing.T) {
	needRoot(t)
	// Start the netpoller (its epoll fd and eventfd) before the reference.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	fdsBefore, kidsBefore := fdList(t), children(t)

	res := All(context.Background())

	if got := fdList(t); !slices.Equal(fdsBefore, got) {
		t.Errorf("fds changed: before %v after %v", fdsBefore, got)
	}
	if got := children(t); !slices.Equal(kidsBefore, got) {
		t.Errorf("children changed: before %v after %v", kidsBefore, got)
	}
	names := map[string]Result{}
	for _, r := range res {
		t.Logf("%v (value %#x)", r, r.Value)
		if _, dup := names[r.Name]; dup {
			t.Errorf("probe %s reported twice", r.Name)
		}
		names[r.Name] = r
		if !r.OK && !strings.HasPrefix(r.Name, "cap-") { // checked below
			t.Errorf("probe %s not OK on this machine: %s", r.Name, r.Detail)
		}
	}
	// A capability is OK exactly when held, and Denied when not (a
	// container's root may lack CAP_SYS_RESOURCE).
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]uint{"cap-sys-resource": unix.CAP_SYS_RESOURCE, "cap-checkpoint-restore": unix.CAP_CHECKPOINT_RESTORE} {
		held := caps[c/32].Effective&(1<<(c%32)) != 0
		if r := names[name]; r.OK != held || r.Denied == held {
			t.Errorf("probe %s: ok %v denied %v, but the capability is held: %v", name, r.OK, r.Denied, held)
		}
	}
	for _, want := range []string{"userfaultfd", "dev-userfaultfd", "uffd-features", "uffd-ioctls",
		"ptrace-seize", "ptrace-rseq", "ptrace-xstate", "process-vm", "pidfd-getfd", "ptrace-suspend-seccomp", "clone3-set-tid",
		"prctl-mm-map", "pagemap-scan", "guard-regions", "bpf-vma-flags", "netns", "special-mappings", "xsave-cpuid",
		"cap-sys-resource", "cap-checkpoint-restore", "pipe-max-size", "rlimit-nofile"} {
		if _, ok := names[want]; !ok {
			t.Errorf("probe %s missing", want)
		}
	}

	// The uffd features reported are what UFFDIO_API returns directly.
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	defer unix.Close(int(r))
	api := kabi.UffdioAPI{API: kabi.UFFD_API}
	if err := kabi.Ioctl(int(r), kabi.UFFDIO_API, unsafe.Pointer(&api)); err != nil {
		t.Fatal(err)
	}
	if f := names["uffd-features"]; f.Value != api.Features {
		t.Errorf("uffd-features value %#x, direct UFFDIO_API %#x", f.Value, api.Features)
	}
	for _, n := range kabi.FeatureMaskNames(api.Features) {
		if !strings.Contains(names["uffd-features"].Detail, n) {
			t.Errorf("uffd-features detail %q lacks %s", names["uffd-features"].Detail, n)
		}
	}

	// The ptrace xstate size is the CPUID size for enabled features.
	en, _ := XSaveSize()
	if x := names["ptrace-xstate"].Value; x != uint64(en) {
		t.Errorf("NT_X86_XSTATE %d bytes, CPUID 0xD.0 EBX %d", x, en)
	}
	if v := names["prctl-mm-map"].Value; v != 104 {
		t.Errorf("PR_SET_MM_MAP_SIZE = %d, want 104", v)
	}
}

func TestResultJSON(t *testing.T) {
	b, err := json.Marshal(Result{Name: "x", Required: true, OK: false, Detail: "d", Value: 3})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"x","required":true,"ok":false,"detail":"d","value":3}`; string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
}

func TestSpecialLayout(t *testing.T) {
	l, err := SpecialLayout()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(FormatSpecial(l))
	var vdso bool
	for i, s := range l {
		if s.Pages < 1 || s.End-s.Start != uint64(s.Pages*os.Getpagesize()) {
			t.Errorf("bad mapping %+v", s)
		}
		if i > 0 && s.Start < l[i-1].End {
			t.Errorf("mappings out of order: %+v after %+v", s, l[i-1])
		}
		vdso = vdso || s.Name == "[vdso]"
	}
	if !vdso {
		t.Errorf("no [vdso] in %v", l)
	}
	if got := FormatSpecial([]Special{{Name: "[vvar]", Pages: 4}, {Name: "[vsyscall]", Pages: 1}}); got != "[vvar] 4 pages, [vsyscall] 1 page" {
		t.Errorf("FormatSpecial = %q", got)
	}
}

func TestContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := All(ctx); len(r) != 0 {
		t.Errorf("All on a cancelled context ran %d probes", len(r))
	}
}
