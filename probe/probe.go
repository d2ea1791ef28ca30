package probe

import (
	"context"
	"fmt"
)

// Result is the outcome of one probe. It marshals to stable JSON.
type Result struct {
	// Name identifies the probe ("uffd-features"); stable across versions.
	Name string `json:"name"`
	// Required is true when lazycr cannot work without the feature.
	Required bool `json:"required"`
	// OK is true when the feature works (for informational probes: when
	// the probe could determine its answer, which Detail gives).
	OK bool `json:"ok"`
	// Detail is a human-readable finding, or the error.
	Detail string `json:"detail"`
	// Value is the machine-readable finding where there is one (a raw
	// feature or ioctl mask, a size in bytes, a limit), else 0.
	Value uint64 `json:"value,omitempty"`
}

// String is one line of the `lazycr check` table: name, status, detail.
func (r Result) String() string {
	status := "ok"
	if !r.OK {
		status = "FAIL"
		if !r.Required {
			status = "missing"
		}
	}
	return fmt.Sprintf("%-24s %-7s %s", r.Name, status, r.Detail)
}

func fail(name string, required bool, err error) Result {
	return Result{Name: name, Required: required, Detail: err.Error()}
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
