// Package failpoint makes a named step of dump or restore fail on demand,
// for fault-injection tests; in ordinary builds it does nothing.
//
// A step boundary is one line, `if err := failpoint.Check("restore.fds");
// err != nil { … }`. Without the build tag `failpoint` Check is an empty
// function the compiler inlines away. Built with `-tags failpoint` (as the
// integration tests build lazycr), Check reads two environment variables
// once:
//
//	LAZYCR_FAILPOINT=NAME      Check(NAME) returns an error wrapping ErrInjected
//	LAZYCR_FAILPOINT_LOG=PATH  every name Check sees is appended to PATH, one a line
//
// so a test first runs an operation with the log to learn the steps it
// passes, then fails each of them in turn.
package failpoint

import "errors"

// ErrInjected is the error a failpoint returns.
var ErrInjected = errors.New("injected failure")
