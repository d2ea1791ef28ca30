package procattr

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// The NUMA memory policy of a thread (set_mempolicy(2), get_mempolicy(2);
// `numactl --membind/--interleave/--preferred` sets it before exec): where
// its new pages come from. The leader's is recorded and set on the
// restored leader before the other threads are made, which inherit it.
// Policies of address ranges (mbind(2)) are not recorded here.
type mempolicyAttr struct{}

// Memory policy modes and flags (include/uapi/linux/mempolicy.h).
const (
	mpolDefault      = 0
	mpolModeFlags    = 1<<15 | 1<<14 | 1<<13 // MPOL_F_STATIC_NODES, MPOL_F_RELATIVE_NODES, MPOL_F_NUMA_BALANCING
	mempolicyMaxNode = 1024                  // bits of node mask read and set
)

func (mempolicyAttr) dump(c Caller, p *pb.Process) error {
	m, nodes, err := getMempolicy(c)
	if err != nil {
		return err
	}
	p.Mempolicy, p.MempolicyNodes = m, nodes
	return nil
}

// getMempolicy reads the calling thread's policy: its mode with flags and,
// unless it is MPOL_DEFAULT, its node mask (nil for MPOL_DEFAULT or a
// kernel without NUMA).
func getMempolicy(c Caller) (uint32, []byte, error) {
	var mode [4]byte
	err := c.CallOut(mode[:], unix.SYS_GET_MEMPOLICY, Out, 0, 0, 0, 0)
	if errors.Is(err, unix.ENOSYS) {
		return 0, nil, nil // a kernel without NUMA
	}
	if err != nil {
		return 0, nil, fmt.Errorf("injected get_mempolicy: %w", err)
	}
	m := uint32(mode[0]) | uint32(mode[1])<<8 | uint32(mode[2])<<16 | uint32(mode[3])<<24
	if m == mpolDefault {
		return 0, nil, nil
	}
	nodes := make([]byte, mempolicyMaxNode/8)
	if err := c.CallOut(nodes, unix.SYS_GET_MEMPOLICY, 0, Out, mempolicyMaxNode, 0, 0); err != nil {
		return 0, nil, fmt.Errorf("injected get_mempolicy (node mask): %w", err)
	}
	return m, nodes, nil
}

// ThreadMempolicy checks that the thread c runs on has the leader's
// memory policy p recorded: the restored threads inherit the leader's, so
// one that set its own (a database binding each worker to a node) is
// refused rather than restored with the leader's.
func ThreadMempolicy(c Caller, p *pb.Process, tid int) error {
	m, nodes, err := getMempolicy(c)
	if err != nil {
		return err
	}
	if m != p.Mempolicy || !bytes.Equal(nodes, p.MempolicyNodes) {
		return fmt.Errorf("thread %d has memory policy %#x nodes %s, the main thread %#x nodes %s: per-thread memory policies are not restored",
			tid, m, cpuListBytes(nodes), p.Mempolicy, cpuListBytes(p.MempolicyNodes))
	}
	return nil
}

func (mempolicyAttr) restore(c Caller, p *pb.Process) error {
	if p.Mempolicy == 0 {
		return nil // MPOL_DEFAULT, the stub's
	}
	if len(p.MempolicyNodes) > mempolicyMaxNode/8 {
		return fmt.Errorf("memory policy node mask of %d bytes in the image, at most %d", len(p.MempolicyNodes), mempolicyMaxNode/8)
	}
	// set_mempolicy reads maxnode-1 bits (mm/mempolicy.c get_nodes).
	if _, err := c.CallIn(p.MempolicyNodes, unix.SYS_SET_MEMPOLICY, uintptr(p.Mempolicy), In, uintptr(len(p.MempolicyNodes)*8+1)); err != nil {
		return fmt.Errorf("injected set_mempolicy(%#x, nodes %x): %w", p.Mempolicy, p.MempolicyNodes, err)
	}
	return nil
}

func (mempolicyAttr) show(p *pb.Process) string {
	if p.Mempolicy == 0 {
		return ""
	}
	return fmt.Sprintf("memory policy %#x nodes %s", p.Mempolicy, cpuListBytes(p.MempolicyNodes))
}

// cpuListBytes lists the set bits of a little-endian bit mask as cpuList
// does ("0-1,3").
func cpuListBytes(b []byte) string {
	words := make([]uint64, (len(b)+7)/8)
	for i, v := range b {
		words[i/8] |= uint64(v) << (8 * (i % 8))
	}
	return cpuList(words)
}
