package probe

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// probeNetns creates a network namespace on a thread held for it, then
// puts the thread back into lazycr's namespace (the new one goes with its
// last reference). Only if that fails does the goroutine end locked, which
// ends the thread — or parks it for good were it the main thread, whose
// namespace /proc/self/ns shows (proc.SelfNs).
func probeNetns() Result {
	const name = "netns"
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- os.NewSyscallError("open /proc/thread-self/ns/net", err)
			return
		}
		err = unix.Unshare(unix.CLONE_NEWNET)
		if err == nil && unix.Setns(back, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		// Closed before answering: the caller may count its fds at once
		// (TestAll saw this one still open now and then).
		unix.Close(back)
		done <- os.NewSyscallError("unshare", err)
	}()
	if err := <-done; err != nil {
		return fail(name, false, fmt.Errorf("create network namespace: %w", err))
	}
	return Result{Name: name, OK: true, Detail: "unshare(CLONE_NEWNET) works"}
}

// Special is a kernel special mapping ([vvar], [vvar_vclock], [vdso],
// [vsyscall]) of this process.
type Special struct {
	Name  string `json:"name"`
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
	Pages int    `json:"pages"`
}

// specialNames are the mappings SpecialLayout reports.
var specialNames = map[string]bool{"[vvar]": true, "[vvar_vclock]": true, "[vdso]": true, "[vsyscall]": true}

// SpecialLayout returns this kernel's special mappings in address order, as
// seen in /proc/self/maps. Their names and sizes differ between kernels;
// restore compares an image's against it.
func SpecialLayout() ([]Special, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, fmt.Errorf("read special mappings: %w", err)
	}
	defer f.Close()
	return parseSpecial(f)
}

func parseSpecial(f *os.File) ([]Special, error) {
	page := uint64(os.Getpagesize())
	var out []Special
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !specialNames[fields[5]] {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			return nil, fmt.Errorf("parse /proc/self/maps line %q: no range", sc.Text())
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("parse /proc/self/maps line %q: bad range", sc.Text())
		}
		out = append(out, Special{Name: fields[5], Start: start, End: end, Pages: int((end - start) / page)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/maps: %w", err)
	}
	return out, nil
}

// FormatSpecial is the layout as "[vvar] 4 pages, [vdso] 2 pages, ...".
func FormatSpecial(l []Special) string {
	parts := make([]string, len(l))
	for i, s := range l {
		unit := "pages"
		if s.Pages == 1 {
			unit = "page"
		}
		parts[i] = fmt.Sprintf("%s %d %s", s.Name, s.Pages, unit)
	}
	return strings.Join(parts, ", ")
}

func probeSpecialLayout() Result {
	const name = "special-mappings"
	l, err := SpecialLayout()
	if err != nil {
		return fail(name, true, err)
	}
	r := Result{Name: name, Required: true, Detail: FormatSpecial(l)}
	for _, s := range l {
		if s.Name == "[vdso]" {
			r.OK = true
		}
	}
	if !r.OK {
		r.Detail += "; no [vdso]"
	}
	return r
}

// XSaveSize returns the XSAVE area sizes from CPUID leaf 0xD sub-leaf 0:
// enabled is EBX (for the features enabled in XCR0, what the kernel saves
// per task) and max is ECX (for every feature the CPU supports).
func XSaveSize() (enabled, max uint32) {
	_, ebx, ecx, _ := cpuid(0xd, 0)
	return ebx, ecx
}

func probeXSaveCPUID() Result {
	en, mx := XSaveSize()
	return Result{Name: "xsave-cpuid", Required: true, OK: en != 0, Value: uint64(en),
		Detail: fmt.Sprintf("CPUID 0xD.0: %d bytes for enabled features (EBX), %d max (ECX)", en, mx)}
}

// infoProbes report facts that change how lazycr works but never stop it.
func infoProbes() []Result {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	capErr := unix.Capget(&hdr, &data[0])
	hasCap := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	capResult := func(name string, c uint, yes, no string) Result {
		if capErr != nil {
			return fail(name, false, os.NewSyscallError("capget", capErr))
		}
		if !hasCap(c) {
			return Result{Name: name, Denied: true, Detail: no}
		}
		return Result{Name: name, OK: true, Value: 1, Detail: yes}
	}
	out := []Result{
		capResult("cap-sys-resource", unix.CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE present",
			"no CAP_SYS_RESOURCE: pipes cannot grow past fs.pipe-max-size, hard rlimits cannot be raised"),
		capResult("cap-checkpoint-restore", unix.CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE present",
			"no CAP_CHECKPOINT_RESTORE: clone3 set_tid and PR_SET_MM need it (or CAP_SYS_ADMIN)"),
	}
	if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err != nil {
		out = append(out, fail("pipe-max-size", false, err))
	} else if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
		out = append(out, fail("pipe-max-size", false, fmt.Errorf("parse fs.pipe-max-size %q: %w", b, err)))
	} else {
		out = append(out, Result{Name: "pipe-max-size", OK: true, Value: v, Detail: fmt.Sprintf("fs.pipe-max-size = %d", v)})
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		out = append(out, fail("rlimit-nofile", false, os.NewSyscallError("getrlimit", err)))
	} else {
		out = append(out, Result{Name: "rlimit-nofile", OK: true, Value: rl.Cur,
			Detail: fmt.Sprintf("RLIMIT_NOFILE soft %d hard %d", rl.Cur, rl.Max)})
	}
	return out
}
