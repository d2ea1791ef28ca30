package image

import (
	"errors"
	"strings"
	"testing"

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
