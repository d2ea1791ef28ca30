package restore

import "unsafe"

// unsafeAddr is where b, memory lazycr mapped or attached itself (never Go
// memory, which may move), starts: the name of its /proc/self/map_files entry.
func unsafeAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
