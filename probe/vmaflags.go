package probe

import (
	"fmt"
	"os"
	"runtime"

	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/vmaflags"
	"golang.org/x/sys/unix"
)

// probeVMAFlags checks that a dump can read VMA flags in the freeze
// without smaps (package vmaflags): the BPF task_vma iterator loads and
// runs on this thread, and its flags named by the bit table match this
// kernel's smaps for every VMA of this process that did not change
// meanwhile. Value is the vm_flags bits verified here.
func probeVMAFlags() Result {
	const name = "bpf-vma-flags"
	const without = "dump reads /proc/PID/smaps in the freeze, which walks every page table (freeze grows with memory)"
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prog, err := vmaflags.Load()
	if err != nil {
		r := fail(name, false, err)
		r.Detail = without + ": " + r.Detail
		return r
	}
	defer prog.Close()
	it, err := prog.Open(unix.Gettid())
	if err != nil {
		r := fail(name, false, err)
		r.Detail = without + ": " + r.Detail
		return r
	}
	defer it.Close()
	before, err := it.Read()
	if err != nil {
		return fail(name, false, err)
	}
	sm, err := proc.ReadSmaps(os.Getpid())
	if err != nil {
		return fail(name, false, err)
	}
	after, err := it.Read()
	if err != nil {
		return fail(name, false, err)
	}
	v, bad := vmaflags.Verify(before, after, sm)
	if len(bad) > 0 {
		return Result{Name: name, Detail: fmt.Sprintf("%s: the bit table does not match this kernel's smaps: %s", without, bad[0])}
	}
	if len(before) == 0 {
		return Result{Name: name, Detail: without + ": the iterator saw no VMA of this process"}
	}
	return Result{Name: name, OK: true, Value: uint64(v),
		Detail: fmt.Sprintf("BPF task_vma iterator reads VMA flags without a page-table walk (%d VMAs here match smaps; each dump verifies again)", len(before))}
}
