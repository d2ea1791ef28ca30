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
	mu     sync.Mutex // guards target and writes to log
	target string     // LAZYCR_FAILPOINT, or Set
	log    *os.File   // LAZYCR_FAILPOINT_LOG, or nil
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
	mu.Lock()
	if log != nil {
		fmt.Fprintln(log, name)
	}
	hit := name != "" && name == target
	mu.Unlock()
	if hit {
		return fmt.Errorf("failpoint %s: %w", name, ErrInjected)
	}
	return nil
}

// Set makes Check(name) fail from now on, in this process (in-process
// tests; "" fails nothing), overriding LAZYCR_FAILPOINT. It returns the
// previous setting.
func Set(name string) (previous string) {
	once.Do(setup)
	mu.Lock()
	defer mu.Unlock()
	previous, target = target, name
	return previous
}
