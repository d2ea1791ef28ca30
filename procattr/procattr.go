package procattr

import (
	"fmt"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
)

// Caller runs system calls inside the process being dumped or restored.
type Caller interface {
	// Call runs nr with args and returns its result.
	Call(nr uintptr, args ...uintptr) (uintptr, error)
	// CallOut runs nr with args; the argument equal to [Out] is replaced
	// by the address of len(out) zeroed bytes in the process, which are
	// copied into out after the call.
	CallOut(out []byte, nr uintptr, args ...uintptr) error
	// CallIn runs nr with args; the argument equal to [In] is replaced by
	// the address of a copy of in in the process.
	CallIn(in []byte, nr uintptr, args ...uintptr) (uintptr, error)
}

// Out marks the argument of [Caller.CallOut] that points to the result.
const Out = ^uintptr(0)

// In marks the argument of [Caller.CallIn] that points to the input; the
// same marker as vmattr.In, so one caller serves both packages.
const In = ^uintptr(0) - 1

// attr is one process-level attribute.
type attr interface {
	// dump reads the attribute from the frozen process into p.
	dump(c Caller, p *pb.Process) error
	// restore sets it in the process being built (on its leader, before
	// the other threads are created: what is per thread is inherited).
	restore(c Caller, p *pb.Process) error
	// show describes it for `lazycr show`, "" when it has its default.
	show(p *pb.Process) string
}

// attrs in restore order.
var attrs = []attr{personalityAttr{}, dumpableAttr{}, pdeathsigAttr{}, subreaperAttr{}, noNewPrivsAttr{}, niceAttr{}, schedAttr{}, mdweAttr{}, keyringAttr{}, mempolicyAttr{}, mceKillAttr{}}

// Dump reads every process-level attribute into p.
func Dump(c Caller, p *pb.Process) error {
	for _, a := range attrs {
		if err := a.dump(c, p); err != nil {
			return err
		}
	}
	return nil
}

// Restore sets every process-level attribute of p. Credentials are set
// after it; then [AfterCreds] puts back what changing them resets.
func Restore(c Caller, p *pb.Process) error {
	for _, a := range attrs {
		if err := a.restore(c, p); err != nil {
			return err
		}
	}
	return nil
}

// Show describes the attributes that differ from a new process's, "" when
// none do.
func Show(p *pb.Process) string {
	var out []string
	for _, a := range attrs {
		if s := a.show(p); s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, ", ")
}

// call runs a syscall and names it in the error.
func call(c Caller, what string, nr uintptr, args ...uintptr) (uintptr, error) {
	r, err := c.Call(nr, args...)
	if err != nil {
		return 0, fmt.Errorf("injected %s: %w", what, err)
	}
	return r, nil
}
