package files

import (
	"fmt"
	"os"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// TestRestoreLivePipe: a lone pipe end is reconnected to the holder the
// dump recorded only on the same boot and if the holder is still the same
// process with the same owner; otherwise it gets a fresh pipe.
func TestRestoreLivePipe(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	var st unix.Stat_t
	if err := unix.Fstat(p[0], &st); err != nil {
		t.Fatal(err)
	}
	ino := st.Ino
	boot, err := BootID()
	if err != nil {
		t.Fatal(err)
	}
	start, err := proc.ProcessIdentity(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := pidNS()
	if err != nil {
		t.Fatal(err)
	}
	self := func() *pb.PipeHolder {
		return &pb.PipeHolder{Pid: uint32(os.Getpid()), StartTime: start, Uid: uint32(os.Getuid()), PidNs: ns}
	}
	for _, c := range []struct {
		name      string
		boot      string
		holder    func(h *pb.PipeHolder)
		reconnect bool
	}{
		{"same process", boot, func(*pb.PipeHolder) {}, true},
		{"foreign boot", "00000000-0000-4000-8000-000000000000", func(*pb.PipeHolder) {}, false},
		{"no boot id", "", func(*pb.PipeHolder) {}, false},
		{"pid reused", boot, func(h *pb.PipeHolder) { h.StartTime++ }, false},
		{"other owner", boot, func(h *pb.PipeHolder) { h.Uid++ }, false},
		{"other pid namespace", boot, func(h *pb.PipeHolder) { h.PidNs++ }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := fdsStub(t, nil)
			h := self()
			c.holder(h)
			r.fds = &pb.FdTable{BootId: c.boot, Fds: []*pb.Fd{
				{Fd: 5, Flags: unix.O_WRONLY, Kind: &pb.Fd_Pipe{Pipe: &pb.Pipe{Inode: ino, WriteEnd: true, Holders: []*pb.PipeHolder{h}}}},
			}}
			if err := r.restore(); err != nil {
				t.Fatal(err)
			}
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/5", r.pid))
			if err != nil {
				t.Fatal(err)
			}
			same := link == fmt.Sprintf("pipe:[%d]", ino)
			if same != c.reconnect {
				t.Errorf("restored fd 5 is %s (our pipe is pipe:[%d]); reconnected %v, want %v", link, ino, same, c.reconnect)
			}
		})
	}
}
