package procattr

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// personality(2): the execution domain and its flags (ADDR_NO_RANDOMIZE,
// READ_IMPLIES_EXEC, UNAME26, …). personality(0xffffffff) only queries.
type personalityAttr struct{}

const personalityQuery = 0xffffffff

func (personalityAttr) dump(c Caller, p *pb.Process) error {
	v, err := call(c, "personality(0xffffffff)", unix.SYS_PERSONALITY, personalityQuery)
	if err != nil {
		return err
	}
	p.Personality = uint32(v)
	return nil
}

func (personalityAttr) restore(c Caller, p *pb.Process) error {
	_, err := call(c, fmt.Sprintf("personality(%#x)", p.Personality), unix.SYS_PERSONALITY, uintptr(p.Personality))
	return err
}

func (personalityAttr) show(p *pb.Process) string {
	if p.Personality == 0 {
		return ""
	}
	return fmt.Sprintf("personality %#x", p.Personality)
}
