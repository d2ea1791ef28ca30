package restore

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/lazycr/lazycr/inject"
	"golang.org/x/sys/unix"
)

// builder runs injected syscalls in the process being built. All arguments
// that need memory go through the engine's scratch page.
type builder struct {
	p       *inject.Process
	pid     int // the pid of the process being built
	scratch uintptr
}

// scratchSize is how much of the scratch page one call may use.
const scratchSize = 4096

// call runs syscall nr on the main thread.
func (b *builder) call(nr uintptr, args ...uintptr) (uintptr, error) {
	return b.p.Syscall(b.pid, nr, args...)
}

// callOn runs syscall nr on thread tid.
func (b *builder) callOn(tid int, nr uintptr, args ...uintptr) (uintptr, error) {
	return b.p.Syscall(tid, nr, args...)
}

// put writes data at offset off of the scratch page and returns its address
// in the process.
func (b *builder) put(off int, data []byte) (uintptr, error) {
	if off < 0 || off+len(data) > scratchSize {
		return 0, fmt.Errorf("scratch: %d bytes at offset %d do not fit", len(data), off)
	}
	addr := b.scratch + uintptr(off)
	if err := b.p.WriteMem(addr, data); err != nil {
		return 0, err
	}
	return addr, nil
}

// putString writes a NUL-terminated string at offset off of the scratch page.
func (b *builder) putString(off int, s string) (uintptr, error) {
	return b.put(off, append([]byte(s), 0))
}

// get reads n bytes at offset off of the scratch page.
func (b *builder) get(off, n int) ([]byte, error) {
	if off < 0 || off+n > scratchSize {
		return nil, fmt.Errorf("scratch: %d bytes at offset %d do not fit", n, off)
	}
	buf := make([]byte, n)
	return buf, b.p.ReadMem(b.scratch+uintptr(off), buf)
}

// le encodes fixed-size values little-endian (kernel structs on x86-64).
func le(vals ...any) []byte {
	var buf bytes.Buffer
	for _, v := range vals {
		if err := binary.Write(&buf, binary.LittleEndian, v); err != nil {
			panic(fmt.Sprintf("restore: encode %T: %v", v, err)) // a programming error: only fixed-size values are passed
		}
	}
	return buf.Bytes()
}

// atFdcwd is AT_FDCWD (-100) as a syscall argument.
const atFdcwd = ^uintptr(99)

// mkdir makes dir (mode 0700) in the process's mount namespace; it uses
// the scratch page's offset 0.
func (b *builder) mkdir(dir string) error {
	path, err := b.putString(0, dir)
	if err != nil {
		return err
	}
	_, err = b.call(unix.SYS_MKDIRAT, atFdcwd, path, 0o700)
	return err
}

// rmdir removes the empty directory dir in the process's mount namespace;
// it uses the scratch page's offset 0.
func (b *builder) rmdir(dir string) error {
	path, err := b.putString(0, dir)
	if err != nil {
		return err
	}
	_, err = b.call(unix.SYS_UNLINKAT, atFdcwd, path, unix.AT_REMOVEDIR)
	return err
}
