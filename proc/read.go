package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Root is the mount point of procfs.
const Root = "/proc"

func pidPath(pid int, name string) string {
	return Root + "/" + strconv.Itoa(pid) + "/" + name
}

func taskPath(pid, tid int, name string) string {
	return Root + "/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/" + name
}

// ReadPidFile reads /proc/PID/name, a small file (at most 4096 bytes).
func ReadPidFile(pid int, name string) ([]byte, error) {
	return readFileLimit(pidPath(pid, name), 4096)
}

// WritePidFile writes data to /proc/PID/name with one write(2), as procfs
// files that parse what they are given expect.
func WritePidFile(pid int, name string, data []byte) error {
	path := pidPath(pid, name)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", data, path, err)
	}
	return nil
}

// readFileLimit reads a whole file, refusing files larger than limit bytes.
// /proc files report size 0, so the size is only known after reading.
func readFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s: %w: more than %d bytes", path, ErrTooLarge, limit)
	}
	return b, nil
}

// lineReader splits an io.Reader into lines, bounded in line length and line
// count, and tracks the line number for errors.
type lineReader struct {
	sc       *bufio.Scanner
	file     string
	line     int
	maxLines int
	err      error
}

func newLineReader(r io.Reader, file string, maxLine, maxLines int) *lineReader {
	sc := bufio.NewScanner(r)
	initial := 4096
	if maxLine < initial {
		initial = maxLine
	}
	sc.Buffer(make([]byte, 0, initial), maxLine)
	sc.Split(scanLF)
	return &lineReader{sc: sc, file: file, maxLines: maxLines}
}

// scanLF is bufio.ScanLines without dropping a '\r' before the newline:
// /proc writes none, but a path may end in one (a file name can hold any
// byte but '/' and NUL), and it is part of the name.
func scanLF(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// next returns the next line without its newline; the slice is valid until
// the following call.
func (l *lineReader) next() ([]byte, bool) {
	if l.err != nil {
		return nil, false
	}
	if !l.sc.Scan() {
		if err := l.sc.Err(); err != nil {
			if errors.Is(err, bufio.ErrTooLong) {
				l.err = tooLarge(l.file, l.line+1, "line longer than the limit")
			} else {
				l.err = &ParseError{File: l.file, Line: l.line + 1, Err: err}
			}
		}
		return nil, false
	}
	l.line++
	if l.line > l.maxLines {
		l.err = tooLarge(l.file, l.line, "more than %d lines", l.maxLines)
		return nil, false
	}
	return l.sc.Bytes(), true
}

func (l *lineReader) malformed(format string, args ...any) error {
	return malformed(l.file, l.line, format, args...)
}

// cutField splits off the first space-separated field of s, skipping leading
// spaces; rest starts right after the field.
func cutField(s []byte) (field, rest []byte) {
	s = bytes.TrimLeft(s, " \t")
	i := bytes.IndexAny(s, " \t")
	if i < 0 {
		return s, nil
	}
	return s[:i], s[i:]
}

func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b), 16, 64)
	return v, err == nil
}

func parseDec(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	return v, err == nil
}

func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	return v, err == nil
}

// openFile opens a /proc file read-only with O_CLOEXEC (os.Open sets it).
func openFile(path string) (*os.File, error) { return os.Open(path) }
