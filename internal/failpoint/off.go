//go:build !failpoint

package failpoint

// Enabled reports whether failpoints are compiled in (the `failpoint` tag).
const Enabled = false

// Check returns nil: failpoints are compiled out.
func Check(name string) error { return nil }

// Set does nothing: failpoints are compiled out.
func Set(name string) (previous string) { return "" }
