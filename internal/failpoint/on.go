//go:build failpoint

package failpoint

import (
	"fmt"
	"os"
	"sync"
)

// Enabled reports whether failpoints are compiled in (the `failpoint` tag).
const Enabled = true

var (
	once   sync.Once
	target string   // LAZYCR_FAILPOINT
	log    *os.File // LAZYCR_FAILPOINT_LOG, or nil
	mu     sync.Mutex
)

func setup() {
	target = os.Getenv("LAZYCR_FAILPOINT")
	if p := os.Getenv("LAZYCR_FAILPOINT_LOG"); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			log = f // os.OpenFile sets O_CLOEXEC; lives as long as the process
		}
	}
}

// Check records name in the log and returns an error wrapping ErrInjected
// if name is the failpoint chosen by LAZYCR_FAILPOINT.
func Check(name string) error {
	once.Do(setup)
	if log != nil {
		mu.Lock()
		fmt.Fprintln(log, name)
		mu.Unlock()
	}
	if name != "" && name == target {
		return fmt.Errorf("failpoint %s: %w", name, ErrInjected)
	}
	return nil
}
