package proc

import (
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every error reporting input that does not follow
// the documented /proc format.
var ErrMalformed = errors.New("malformed input")

// ErrTooLarge is wrapped by every error reporting input that exceeds a
// parser's size limit (total size, line length or number of records).
var ErrTooLarge = errors.New("input too large")

// ParseError reports a problem in one /proc file. File is the file's name
// relative to /proc/PID (for example "smaps" or "net/udp6"); Line is 1-based,
// or 0 for binary files and whole-file problems.
type ParseError struct {
	File string
	Line int
	Err  error
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("parse %s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("parse %s line %d: %v", e.File, e.Line, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// malformed returns a ParseError wrapping ErrMalformed.
func malformed(file string, line int, format string, args ...any) error {
	return &ParseError{File: file, Line: line, Err: fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)}
}

// tooLarge returns a ParseError wrapping ErrTooLarge.
func tooLarge(file string, line int, format string, args ...any) error {
	return &ParseError{File: file, Line: line, Err: fmt.Errorf("%w: "+format, append([]any{ErrTooLarge}, args...)...)}
}
