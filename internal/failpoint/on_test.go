//go:build failpoint

package failpoint

import (
	"errors"
	"testing"
)

func TestSet(t *testing.T) {
	defer Set(Set("dump.fds"))
	if err := Check("dump.memory"); err != nil {
		t.Fatalf("Check of another step: %v", err)
	}
	if err := Check("dump.fds"); !errors.Is(err, ErrInjected) {
		t.Fatalf("Check(dump.fds) = %v, want ErrInjected", err)
	}
}
