package vmattr

import (
	"fmt"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// NUMA memory policy of an address range (mbind(2); set_mempolicy(2) is
// the thread's, package procattr): which nodes the VMA's new pages come
// from. The kernel keeps it per VMA (vm_policy: mbind splits a mapping
// at the range's ends), and nothing in /proc shows it without walking
// the page tables (numa_maps prints it along with its page counts); the
// dump learns which VMAs have one from the BPF iterator (package
// vmaflags), or from numa_maps where the iterator is not available, and
// reads each one's with get_mempolicy(2) MPOL_F_ADDR ([DumpPolicy]).
// Restore binds the VMA right after mapping it ([Bind]), before its data
// is written, so that its pages are placed as the original's were.
//
// A node the restoring host does not have is refused there by mbind
// (EINVAL), naming the VMA; a policy of a shared memory object set
// through another mapping (shmem keeps it in the object) is not the VMA's
// and not recorded here.
type mempolicyAttr struct{}

// Memory policy modes and flags (include/uapi/linux/mempolicy.h).
const (
	mpolDefault       = 0
	mpolFAddr         = 1 << 1 // get_mempolicy: the policy of the VMA at addr
	mempolicyMaxNodes = 1024   // bits of node mask read and set
)

// Out marks the argument of [OutCaller.CallOut] that points to the
// result; the same marker as procattr.Out.
const Out = ^uintptr(0)

// OutCaller runs a system call that writes a result into the process's
// memory, as procattr.Caller does.
type OutCaller interface {
	// CallOut runs nr with args; the argument equal to [Out] is replaced
	// by the address of len(out) zeroed bytes in the process, copied
	// into out after the call.
	CallOut(out []byte, nr uintptr, args ...uintptr) error
}

// DumpPolicy reads the memory policy of v, a VMA of the frozen process
// the caller knows (or suspects) has one of its own, into v.Mempolicy and
// v.MempolicyNodes; they stay unset when get_mempolicy says MPOL_DEFAULT
// (no policy of its own).
func DumpPolicy(c OutCaller, v *pb.Vma) error {
	var mode [4]byte
	if err := c.CallOut(mode[:], unix.SYS_GET_MEMPOLICY, Out, 0, 0, uintptr(v.Start), mpolFAddr); err != nil {
		return fmt.Errorf("injected get_mempolicy(MPOL_F_ADDR, %#x): %w", v.Start, err)
	}
	m := uint32(mode[0]) | uint32(mode[1])<<8 | uint32(mode[2])<<16 | uint32(mode[3])<<24
	if m == mpolDefault {
		v.Mempolicy, v.MempolicyNodes = 0, nil
		return nil
	}
	nodes := make([]byte, mempolicyMaxNodes/8)
	if err := c.CallOut(nodes, unix.SYS_GET_MEMPOLICY, 0, Out, mempolicyMaxNodes, uintptr(v.Start), mpolFAddr); err != nil {
		return fmt.Errorf("injected get_mempolicy(MPOL_F_ADDR, %#x) node mask: %w", v.Start, err)
	}
	n := len(nodes)
	for n > 0 && nodes[n-1] == 0 {
		n--
	}
	v.Mempolicy, v.MempolicyNodes = m, nodes[:n]
	return nil
}

// Bind gives v, just mapped at its address, the memory policy the image
// has for it (nothing when it has none).
func Bind(c Caller, v *pb.Vma) error {
	if v.Mempolicy == mpolDefault {
		return nil
	}
	if len(v.MempolicyNodes) > mempolicyMaxNodes/8 {
		return fmt.Errorf("vma %#x-%#x: memory policy node mask of %d bytes in the image, at most %d", v.Start, v.End, len(v.MempolicyNodes), mempolicyMaxNodes/8)
	}
	what := fmt.Sprintf("mbind(%s)", policyString(v))
	var err error
	if len(v.MempolicyNodes) == 0 {
		_, err = call(c, what, unix.SYS_MBIND, uintptr(v.Start), uintptr(v.End-v.Start), uintptr(v.Mempolicy), 0, 0, 0)
	} else {
		// mbind reads maxnode-1 bits (mm/mempolicy.c get_nodes).
		_, err = c.CallIn(v.MempolicyNodes, unix.SYS_MBIND, uintptr(v.Start), uintptr(v.End-v.Start), uintptr(v.Mempolicy),
			In, uintptr(len(v.MempolicyNodes)*8+1), 0)
		if err != nil {
			err = fmt.Errorf("injected %s: %w", what, err)
		}
	}
	if err != nil {
		return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
	}
	return nil
}

func (mempolicyAttr) check(*pb.Vma) error { return nil }

// apply does nothing: [Bind] sets the policy when the VMA is mapped.
func (mempolicyAttr) apply(Caller, *pb.Vma) error { return nil }

func (mempolicyAttr) show(v *pb.Vma) string {
	if v.Mempolicy == mpolDefault {
		return ""
	}
	return "mempolicy=" + policyString(v)
}

// policyModes names the modes (MPOL_*), by number.
var policyModes = []string{"default", "preferred", "bind", "interleave", "local", "preferred-many", "weighted-interleave"}

// policyFlags name the mode flags (MPOL_F_*).
var policyFlags = []struct {
	bit  uint32
	name string
}{{1 << 15, "static"}, {1 << 14, "relative"}, {1 << 13, "balancing"}}

// policyString describes v's policy as numa_maps does ("bind=static:0-1").
func policyString(v *pb.Vma) string {
	mode := v.Mempolicy &^ (1<<15 | 1<<14 | 1<<13)
	s := fmt.Sprintf("mode-%d", mode)
	if int(mode) < len(policyModes) {
		s = policyModes[mode]
	}
	var fl []string
	for _, f := range policyFlags {
		if v.Mempolicy&f.bit != 0 {
			fl = append(fl, f.name)
		}
	}
	if len(fl) > 0 {
		s += "=" + strings.Join(fl, ",")
	}
	if len(v.MempolicyNodes) > 0 {
		s += ":" + nodeList(v.MempolicyNodes)
	}
	return s
}

// nodeList lists the set bits of a little-endian mask ("0-1,3").
func nodeList(b []byte) string {
	var out []string
	n := len(b) * 8
	set := func(i int) bool { return b[i/8]&(1<<(i%8)) != 0 }
	for i := 0; i < n; i++ {
		if !set(i) {
			continue
		}
		j := i
		for j+1 < n && set(j+1) {
			j++
		}
		if j == i {
			out = append(out, fmt.Sprint(i))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", i, j))
		}
		i = j
	}
	return strings.Join(out, ",")
}
