package files

import (
	"os"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// TestMakePty: MakePty makes a pty with the recorded number (taking the
// free lower ones meanwhile and giving them back), settings, window size
// and packet mode, unlocked; a number in use is refused, naming it.
func TestMakePty(t *testing.T) {
	busy, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	defer unix.Close(busy)
	n, err := unix.IoctlGetUint32(busy, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tios, err := kabi.TtyGetTermios(busy)
	if err != nil {
		t.Fatal(err)
	}
	tios.Lflag &^= unix.ECHO
	rec := &pb.PtyMaster{File: &pb.FileID{Path: "/dev/ptmx"}, Index: n, Termios: termiosToPB(&tios),
		Winsize: &pb.Winsize{Rows: 50, Cols: 132}, Packet: true}
	if _, err := MakePty("", rec); err == nil || !strings.Contains(err.Error(), "is in use here") {
		t.Fatalf("MakePty of /dev/pts/%d, which this test holds: %v, want it refused as in use", n, err)
	}
	// A free number with a free one below it (gap), which MakePty takes
	// meanwhile and gives back (counted in this process's fds). Other
	// tests make ptys meanwhile: a number taken by them is tried again.
	var m int
	var want uint32
	for try := 0; ; try++ {
		var hold [3]int
		for i := range hold {
			if hold[i], err = unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err != nil {
				t.Fatal(err)
			}
		}
		if want, err = unix.IoctlGetUint32(hold[2], unix.TIOCGPTN); err != nil {
			t.Fatal(err)
		}
		unix.Close(hold[2])
		unix.Close(hold[0])
		before := countFds(t)
		rec.Index = want
		m, err = MakePty("", rec)
		if err == nil && countFds(t) != before+1 {
			t.Errorf("MakePty left %d fds open, want 1 (the master)", countFds(t)-before)
		}
		unix.Close(hold[1])
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "is in use here") || try == 5 {
			t.Fatalf("MakePty of free /dev/pts/%d: %v", want, err)
		}
	}
	defer unix.Close(m)
	if got, _ := unix.IoctlGetUint32(m, unix.TIOCGPTN); got != want {
		t.Errorf("made /dev/pts/%d, want %d", got, want)
	}
	if lck, _ := kabi.TtyGetInt(m, unix.TIOCGPTLCK); lck != 0 {
		t.Errorf("made pty locked")
	}
	if pkt, _ := kabi.TtyGetInt(m, unix.TIOCGPKT); pkt == 0 {
		t.Errorf("made pty not in packet mode")
	}
	if ws, _ := kabi.TtyGetWinsize(m); ws.Col != 132 || ws.Row != 50 {
		t.Errorf("made pty window %dx%d, want 132x50", ws.Col, ws.Row)
	}
	if got, _ := kabi.TtyGetTermios(m); got.Lflag != tios.Lflag {
		t.Errorf("made pty lflag %#x, want %#x", got.Lflag, tios.Lflag)
	}
}

// countFds counts the test process's open fds.
func countFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
