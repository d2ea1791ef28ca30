package udpp

import _ "embed"

// CSource is udpp.c, the same program in C (single-threaded, like the
// classic demo): `gcc -O2 -o udpp udpp.c`. lazycr demo --udpp c builds it.
//
//go:embed udpp.c
var CSource []byte
