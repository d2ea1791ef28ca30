package restore

import "unsafe"

// unsafeAddr is the address of b's first byte (a mapping lazycr made).
func unsafeAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
