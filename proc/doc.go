// Package proc parses the files of /proc that lazycr needs to checkpoint a
// process: maps, smaps, stat, status, fdinfo, fd links, pagemap, auxv,
// timers and the net socket tables.
//
// Every parser works on bytes or an io.Reader so it can be tested and fuzzed
// without a live process; the Read* functions are thin wrappers that open
// /proc/PID/... and call the parser. Parsers are bounded: inputs larger than
// the documented limits are refused with [ErrTooLarge], malformed input with a
// [*ParseError] that names the file and line and wraps [ErrMalformed]. No
// parser panics. See proc(5) and Documentation/filesystems/proc.rst for the
// formats.
package proc
