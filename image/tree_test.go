package image

import (
	"errors"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"google.golang.org/protobuf/proto"
)

// TestValidateTree checks that Validate refuses process trees restore
// could not rebuild, naming what is wrong, and accepts the sample tree.
func TestValidateTree(t *testing.T) {
	if err := sampleSet().Validate(); err != nil {
		t.Fatalf("sample set: %v", err)
	}
	for _, c := range []struct {
		name    string
		breakIt func(s *Set)
		want    string
	}{
		{"parent outside", func(s *Set) { s.Tree.Processes[1].Ppid = 77 }, "parent pid 77, which is not in the tree"},
		{"root with member parent", func(s *Set) { s.Tree.Processes[0].Ppid = childPid }, "has a member"},
		{"cycle", func(s *Set) {
			s.Tree.Processes[0].Ppid = 1
			s.Tree.Processes[1].Ppid = zombiePid
			s.Tree.Processes[2].Ppid = childPid
			s.Tree.Processes[2].Zombie = false
		}, "its own ancestor"},
		{"zombie parent", func(s *Set) { s.Tree.Processes[1].Ppid = zombiePid }, "zombie pid"},
		{"zombie root", func(s *Set) {
			s.Tree.Processes = s.Tree.Processes[2:]
			s.Tree.SharedFiles, s.Tree.Pipes = nil, nil
		}, "root pid 4251 is a zombie"},
		{"shared file without users", func(s *Set) { s.Tree.SharedFiles[0].Users = nil }, "no other user"},
		{"shared file names a missing fd", func(s *Set) { s.Tree.SharedFiles[0].Users[0].Fd = 99 }, "fd 99, which is not in the image"},
		{"shared file names a missing pid", func(s *Set) { s.Tree.SharedFiles[0].Owner.Pid = 1234 }, "pid 1234"},
		{"nil owner", func(s *Set) { s.Tree.SharedFiles[0].Owner = nil }, "not in the image"},
		{"fd in two shared files", func(s *Set) {
			s.Tree.SharedFiles = append(s.Tree.SharedFiles, proto.CloneOf(s.Tree.SharedFiles[0]))
		}, "in two shared files"},
		{"pipe twice", func(s *Set) { s.Tree.Pipes = append(s.Tree.Pipes, proto.CloneOf(s.Tree.Pipes[0])) }, "listed twice"},
		{"pipe without fd", func(s *Set) { s.Tree.Pipes[0].Inode = 999 }, "pipe:[999] between members has no fd"},
		{"pipe too full", func(s *Set) { s.Tree.Pipes[0].Data = make([]byte, MaxTreePipeData+1) }, "holds"},
		{"shm id zero", func(s *Set) { s.Tree.Shm[1].Id = 0 }, "shared memory object id 0 is zero or listed twice"},
		{"shm id twice", func(s *Set) { s.Tree.Shm[1].Id = 1 }, "id 1 is zero or listed twice"},
		{"shm unknown kind", func(s *Set) { s.Tree.Shm[0].Kind = 99 }, "unknown kind 99"},
		{"shm empty", func(s *Set) { s.Tree.Shm[0].Size = 0 }, "of 0 bytes"},
		{"shm relative path", func(s *Set) { s.Tree.Shm[2].Name = "sem.x" }, `path "sem.x" is not absolute`},
		{"vma names a missing object", func(s *Set) { shmVma(s).Shm = 9 }, "names shared memory object 9"},
		{"private vma names an object", func(s *Set) { shmVma(s).Shared = false }, "not mapped shared"},
		{"vma past the object", func(s *Set) { shmVma(s).Offset = PageSize }, "past its"},
		{"split pair names a missing fd", func(s *Set) { s.Tree.SplitPairs[0].Peer.Fd = 9 }, "names pid 4250 fd 9, which is not a unix socket"},
		{"split pair of one member", func(s *Set) { s.Tree.SplitPairs[0].Peer = &pb.FdRef{Pid: rootPid, Fd: 21} }, "both ends in pid"},
		{"split pair not connected", func(s *Set) { s.Tree.SplitPairs[0].Peer = &pb.FdRef{Pid: childPid, Fd: 1} }, "not a unix socket"},
		{"split pair twice", func(s *Set) { s.Tree.SplitPairs = append(s.Tree.SplitPairs, s.Tree.SplitPairs[0]) }, "in two split pairs"},
		{"split pair end a shared file's user", func(s *Set) { s.Tree.SplitPairs[0].Peer = &pb.FdRef{Pid: childPid, Fd: 0} }, "takes another member's description"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := sampleSet()
			c.breakIt(s)
			err := s.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate: %v, want ErrInvalid saying %q", err, c.want)
			}
		})
	}
}

// shmVma is the sample's VMA of shared memory object 1.
func shmVma(s *Set) *pb.Vma {
	for _, v := range s.Memory[rootPid].Vmas {
		if v.Shm == 1 {
			return v
		}
	}
	panic("the sample has no VMA of shared memory object 1")
}
