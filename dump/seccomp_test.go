package dump

import (
	"encoding/binary"
	"errors"
	"testing"
)

func insn(code uint16, k uint32) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint16(b, code)
	binary.LittleEndian.PutUint32(b[4:], k)
	return b
}

func TestSeccompActions(t *testing.T) {
	ld := insn(0x20, 0)                 // BPF_LD|BPF_W|BPF_ABS
	allow := insn(0x06, 0x7fff0000)     // BPF_RET|BPF_K ALLOW
	notif := insn(0x06, 0x7fc00000|0x5) // BPF_RET|BPF_K USER_NOTIF
	retA := insn(0x16, 0)               // BPF_RET|BPF_A
	prog := func(is ...[]byte) []byte {
		var out []byte
		for _, i := range is {
			out = append(out, i...)
		}
		return out
	}
	acts, err := seccompActions(prog(ld, notif, allow))
	if err != nil || len(acts) != 2 || acts[0] != seccompRetUserNotif || acts[1] != 0x7fff0000 {
		t.Errorf("seccompActions = %#x, %v; want [USER_NOTIF ALLOW]", acts, err)
	}
	if _, err := seccompActions(prog(ld, retA)); !errors.Is(err, errSeccompDynamicRet) {
		t.Errorf("BPF_RET|BPF_A: err %v, want errSeccompDynamicRet", err)
	}
	for _, bad := range [][]byte{nil, allow[:7], insn(0x0e, 0)} {
		if acts, err := seccompActions(bad); err == nil {
			t.Errorf("seccompActions(%x) = %#x, want an error", bad, acts)
		}
	}
}

// FuzzSeccompActions: any byte string gives a result or an error, never
// both nor a panic; every action listed is a RET K value.
func FuzzSeccompActions(f *testing.F) {
	f.Add(append(insn(0x20, 4), insn(0x06, 0x7fff0000)...))
	f.Add(insn(0x16, 0))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, prog []byte) {
		acts, err := seccompActions(prog)
		if err != nil && acts != nil {
			t.Fatalf("error %v with actions %#x", err, acts)
		}
		for _, a := range acts {
			if a&^seccompRetActionFull != 0 {
				t.Fatalf("action %#x has data bits", a)
			}
		}
	})
}
