package dump

import (
	"encoding/binary"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
)

// TestCountSent: only signals a process sent (SI_USER, SI_QUEUE,
// SI_TKILL) are counted, not timer expiries or kernel-raised ones.
func TestCountSent(t *testing.T) {
	raw := func(signo, code int32) []byte {
		b := make([]byte, 128)
		binary.LittleEndian.PutUint32(b[0:], uint32(signo))
		binary.LittleEndian.PutUint32(b[8:], uint32(code))
		return b
	}
	const siKernel, siTimer = 0x80, -2
	infos := [][]byte{raw(10, 0), raw(34, -1), raw(15, -6), raw(14, siKernel), raw(34, siTimer), raw(29, 1 /* POLL_IN */), {1, 2}}
	if n := countSentRaw(infos); n != 3 {
		t.Errorf("countSentRaw = %d, want 3", n)
	}
	pbs := []*pb.Siginfo{{Signo: 10, Code: 0}, {Signo: 14, Code: siKernel}, {Signo: 34, Code: siTimer}}
	if n := countSent(pbs); n != 1 {
		t.Errorf("countSent = %d, want 1", n)
	}
}
