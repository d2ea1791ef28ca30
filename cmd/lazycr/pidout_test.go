package main

import (
	"bytes"
	"testing"
)

// TestPidOut (QA F13): the restored pid goes to stdout, except when the
// process inherits lazycr's stdout (--inherit-fd 1): then a pid printed there
// would land in the middle of the process's own output stream.
func TestPidOut(t *testing.T) {
	var out, errOut bytes.Buffer
	g := &globals{stdout: &out, stderr: &errOut}
	for _, c := range []struct {
		fds  []int
		want *bytes.Buffer
	}{
		{nil, &out},
		{[]int{0, 2}, &out},
		{[]int{1}, &errOut},
		{[]int{2, 1}, &errOut},
	} {
		o := &restoreOptions{inheritFds: c.fds}
		if got := o.pidOut(g); got != c.want {
			t.Errorf("--inherit-fd %v: pid goes to the wrong stream", c.fds)
		}
	}
}
