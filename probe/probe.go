package probe

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Result is the outcome of one probe. It marshals to stable JSON.
type Result struct {
	// Name identifies the probe ("uffd-features"); stable across versions.
	Name string `json:"name"`
	// Required is true when lazycr cannot work without the feature.
	Required bool `json:"required"`
	// OK is true when the feature works (for informational probes: when
	// the probe could determine its answer, which Detail gives; for a
	// capability: when this caller holds it).
	OK bool `json:"ok"`
	// Detail is a human-readable finding, or the error.
	Detail string `json:"detail"`
	// Value is the machine-readable finding where there is one (a raw
	// feature or ioctl mask, a size in bytes, a limit), else 0.
	Value uint64 `json:"value,omitempty"`
	// Denied is true when the feature could not be used for lack of
	// privilege (EPERM, EACCES, a missing capability): the kernel may well
	// have it, this caller may not use it. Root, or the capabilities and
	// sysctls named in Detail, would change the answer.
	Denied bool `json:"denied,omitempty"`
}

// String is one line of the `lazycr check` table: name, status, detail.
func (r Result) String() string {
	status := "ok"
	if !r.OK {
		status = "FAIL"
		if !r.Required {
			status = "missing"
		}
		if r.Denied {
			status = "denied"
		}
	}
	return fmt.Sprintf("%-24s %-7s %s", r.Name, status, r.Detail)
}

// fail is a probe that could not use its feature; EPERM and EACCES mark it
// Denied (userfaultfd(2): EPERM without CAP_SYS_PTRACE when
// vm.unprivileged_userfaultfd is 0; open(2) of /dev/userfaultfd: EACCES).
func fail(name string, required bool, err error) Result {
	return Result{Name: name, Required: required, Detail: err.Error(),
		Denied: errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)}
}

// All runs every probe, in a fixed order, and returns their results. It
// stops early (the remaining probes are not reported) when ctx is done.
func All(ctx context.Context) []Result {
	groups := []func() []Result{
		uffdProbes,
		ptraceProbes,
		func() []Result { return []Result{probeClone3SetTid()} },
		func() []Result { return []Result{probeMmMapSize()} },
		func() []Result { return []Result{probePagemapScan()} },
		func() []Result { _, r := GuardRegions(); return []Result{r} },
		func() []Result { return []Result{probeVMAFlags()} },
		func() []Result { return []Result{probeNetns()} },
		func() []Result { return []Result{probeSpecialLayout()} },
		func() []Result { return []Result{probeXSaveCPUID()} },
		fileProbes,
		infoProbes,
	}
	var out []Result
	for _, g := range groups {
		if ctx.Err() != nil {
			break
		}
		out = append(out, g()...)
	}
	return out
}
