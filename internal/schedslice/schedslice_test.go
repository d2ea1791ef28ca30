package schedslice

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRequest: the thread's sched_runtime reads back as asked (clamped to
// Min), its policy and nice value unchanged.
func TestRequest(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		before, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			t.Errorf("sched_getattr: %v", err)
			return
		}
		if before.Policy != unix.SCHED_NORMAL {
			t.Logf("test thread policy %d: left alone", before.Policy)
			return
		}
		for _, c := range []struct{ ask, want time.Duration }{{200 * time.Microsecond, 200 * time.Microsecond}, {time.Microsecond, Min}} {
			if err := Request(c.ask); err != nil {
				t.Error(err)
				return
			}
			after, err := unix.SchedGetAttr(0, 0)
			if err != nil {
				t.Errorf("sched_getattr: %v", err)
				return
			}
			if after.Runtime != uint64(c.want.Nanoseconds()) || after.Policy != before.Policy || after.Nice != before.Nice {
				t.Errorf("asked %v: attributes %+v, want runtime %v, policy %d and nice %d as before", c.ask, after, c.want, before.Policy, before.Nice)
			}
		}
	}()
	<-done
}
