package vmattr

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"

	"github.com/lazycr/lazycr/image/pb"
)

// The core dump filter: which kinds of mapping a core dump of the process
// writes (core(5), "Controlling which mappings are written to the core
// dump"). It belongs to the address space (bits of mm->flags, inherited at
// fork, kept across execve) and no syscall reads or sets it: only
// /proc/PID/coredump_filter, which lazycr reads and writes itself
// ([Caller.ReadProc]). It reads as "%08x\n"; a write is parsed by
// kstrtouint with base 0 (fs/proc/base.c, proc_coredump_filter_write), so
// it is written as "0x7b": "0000007b" would be octal and refused. The
// write sets or clears every filter bit, so the value comes back exactly.
type coredumpFilterAttr struct{}

// coredumpFilterDefault is MMF_DUMP_FILTER_DEFAULT (include/linux/mm_types.h)
// for kernels without CONFIG_CORE_DUMP_DEFAULT_ELF_HEADERS, and the
// default of the coredump_filter= boot parameter's absence.
const coredumpFilterDefault = 0x33

func (coredumpFilterAttr) dump(c Caller, _ []string, a *pb.MmAttrs) error {
	b, err := c.ReadProc("coredump_filter")
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no CONFIG_ELF_CORE: no core dumps, nothing to keep
	}
	if err != nil {
		return err
	}
	v, err := parseCoredumpFilter(b)
	if err != nil {
		return err
	}
	a.CoredumpFilter = &v
	return nil
}

// parseCoredumpFilter parses the contents of /proc/PID/coredump_filter.
func parseCoredumpFilter(b []byte) (uint32, error) {
	v, err := strconv.ParseUint(string(bytes.TrimSuffix(b, []byte("\n"))), 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse coredump_filter %q: %w", b, err)
	}
	return uint32(v), nil
}

func (coredumpFilterAttr) apply(c Caller, a *pb.MmAttrs) error {
	if a.CoredumpFilter == nil {
		return nil // an image from before it was recorded
	}
	return c.WriteProc("coredump_filter", fmt.Appendf(nil, "%#x", *a.CoredumpFilter))
}

func (coredumpFilterAttr) show(a *pb.MmAttrs) string {
	if a.CoredumpFilter == nil || *a.CoredumpFilter == coredumpFilterDefault {
		return ""
	}
	return fmt.Sprintf("coredump_filter %#x", *a.CoredumpFilter)
}
