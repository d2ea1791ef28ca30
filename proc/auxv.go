package proc

import (
	"encoding/binary"
	"fmt"
)

// maxAuxv bounds /proc/PID/auxv (the kernel keeps at most AT_VECTOR_SIZE,
// a few dozen, entries).
const maxAuxv = 4096

// AuxvEntry is one (type, value) pair of the ELF auxiliary vector, see
// getauxval(3). Type is an AT_* constant.
type AuxvEntry struct {
	Type, Val uint64
}

// ParseAuxv parses /proc/PID/auxv: native-endian (little-endian on amd64)
// pairs of uint64 ending with AT_NULL. The AT_NULL entry and anything after
// it are not returned.
func ParseAuxv(b []byte) ([]AuxvEntry, error) {
	if len(b) > maxAuxv {
		return nil, tooLarge("auxv", 0, "%d bytes", len(b))
	}
	if len(b)%16 != 0 {
		return nil, malformed("auxv", 0, "length %d not a multiple of 16", len(b))
	}
	out := []AuxvEntry{}
	for i := 0; i < len(b); i += 16 {
		e := AuxvEntry{binary.LittleEndian.Uint64(b[i:]), binary.LittleEndian.Uint64(b[i+8:])}
		if e.Type == 0 { // AT_NULL
			return out, nil
		}
		out = append(out, e)
	}
	return nil, malformed("auxv", 0, "no AT_NULL")
}

// FormatAuxv encodes entries as the kernel lays out auxv, with a final AT_NULL.
func FormatAuxv(entries []AuxvEntry) []byte {
	b := make([]byte, 0, (len(entries)+1)*16)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint64(b, e.Type)
		b = binary.LittleEndian.AppendUint64(b, e.Val)
	}
	return append(b, make([]byte, 16)...)
}

// AuxvValue returns the value of the first entry of type typ.
func AuxvValue(entries []AuxvEntry, typ uint64) (uint64, bool) {
	for _, e := range entries {
		if e.Type == typ {
			return e.Val, true
		}
	}
	return 0, false
}

// ReadAuxv reads and parses /proc/PID/auxv.
func ReadAuxv(pid int) ([]AuxvEntry, error) {
	path := pidPath(pid, "auxv")
	b, err := readFileLimit(path, maxAuxv)
	if err != nil {
		return nil, err
	}
	a, err := ParseAuxv(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return a, nil
}
