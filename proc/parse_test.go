package proc

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantParseError(t *testing.T, err error, sentinel error) {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) || !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want a *ParseError wrapping %v", err, sentinel)
	}
}

func TestParseMapsSample(t *testing.T) {
	b := mustRead(t, "maps_sleep.txt")
	ms, err := ParseMaps(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != bytes.Count(b, []byte("\n")) {
		t.Fatalf("%d mappings", len(ms))
	}
	var special, heap int
	for i := range ms {
		m := &ms[i]
		if m.IsSpecial() {
			special++
		}
		if m.Path == "[heap]" {
			heap++
			if m.Prot() != unix.PROT_READ|unix.PROT_WRITE || m.Shared || !m.IsAnonymous() {
				t.Errorf("heap %+v", m)
			}
		}
		// Round trip through the kernel's format.
		line := strings.Split(string(b), "\n")[i]
		if got := m.String(); got != line {
			t.Errorf("format:\n got %q\nwant %q", got, line)
		}
	}
	if special != 4 || heap != 1 {
		t.Errorf("special %d heap %d", special, heap)
	}
	last := ms[len(ms)-1]
	if last.Path != "[vsyscall]" || !last.Exec || last.Read || last.Start != 0xffffffffff600000 {
		t.Errorf("vsyscall %+v", last)
	}
}

func TestParseMapsPathsAndErrors(t *testing.T) {
	in := "7f0000000000-7f0000001000 rw-s 00001000 00:05 1025                       /memfd:hello world (deleted)\n" +
		"7f0000001000-7f0000002000 ---p 00000000 00:00 0 \n"
	ms, err := ParseMaps(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].Path != "/memfd:hello world (deleted)" || !ms[0].Deleted() || !ms[0].Shared || ms[0].Offset != 0x1000 || ms[0].Minor != 5 {
		t.Errorf("%+v", ms[0])
	}
	if ms[1].Prot() != unix.PROT_NONE || ms[1].Path != "" || ms[1].Len() != 0x1000 {
		t.Errorf("%+v", ms[1])
	}
	for _, bad := range []string{
		"zz-1 rw-p 0 00:00 0\n",
		"1000-0 rw-p 0 00:00 0\n",
		"0-1000 rwzp 0 00:00 0\n",
		"0-1000 rw-p 0 0000 0\n",
		"0-1000 rw-p 0 00:00\n",
	} {
		_, err := ParseMaps(strings.NewReader("0-1000 r--p 0 00:00 0\n" + bad))
		wantParseError(t, err, ErrMalformed)
		if !strings.Contains(err.Error(), "maps line 2") {
			t.Errorf("error %q does not name the line", err)
		}
	}
	_, err = ParseMaps(strings.NewReader("0-1000 r--p 0 00:00 0 /" + strings.Repeat("a", maxMapsLine)))
	wantParseError(t, err, ErrTooLarge)
}

func TestParseSmapsSample(t *testing.T) {
	ms, err := ParseSmaps(bytes.NewReader(mustRead(t, "smaps_sleep.txt")))
	if err != nil {
		t.Fatal(err)
	}
	maps, err := ParseMaps(bytes.NewReader(mustRead(t, "maps_sleep.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != len(maps) {
		t.Fatalf("%d smaps entries, %d maps", len(ms), len(maps))
	}
	for i := range ms {
		m := &ms[i]
		if m.Size*1024 != m.Len() || len(m.VmFlags) == 0 || m.KernelPageSize != 4 {
			t.Errorf("%s: size %d kB len %d flags %v", m.Path, m.Size, m.Len(), m.VmFlags)
		}
		if m.Path == "[stack]" && (m.Rss == 0 || m.Anonymous == 0 || !contains(m.VmFlags, "gd")) {
			t.Errorf("stack %+v", m)
		}
	}
	_, err = ParseSmaps(strings.NewReader("Rss: 4 kB\n"))
	wantParseError(t, err, ErrMalformed)
	_, err = ParseSmaps(strings.NewReader("0-1000 r--p 0 00:00 0\nRss: x kB\n"))
	wantParseError(t, err, ErrMalformed)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestParseStat(t *testing.T) {
	s, err := ParseStat([]byte(statTricky))
	if err != nil {
		t.Fatal(err)
	}
	if s.Pid != 4242 || s.Comm != "a) (b c)" || s.State != 'S' || s.Ppid != 1 || s.TtyNr != 0 || s.Tpgid != -1 ||
		s.NumThreads != 3 || s.StartTime != 12345 || s.Rsslim != 18446744073709551615 || s.ExitSignal != 17 ||
		s.StartData != 4210000 || s.EnvEnd != 140730000002000 || s.ExitCode != 0 {
		t.Errorf("%+v", s)
	}
	if got := s.String() + "\n"; got != statTricky {
		t.Errorf("format:\n got %q\nwant %q", got, statTricky)
	}
	sample := mustRead(t, "stat_sleep.txt")
	s, err = ParseStat(sample)
	if err != nil {
		t.Fatal(err)
	}
	if s.String()+"\n" != string(sample) {
		t.Errorf("round trip of sample: %q", s.String())
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1", "x (a) " + statTricky[10:], strings.Replace(statTricky, " 17 ", " x ", 1)} {
		_, err := ParseStat([]byte(bad))
		wantParseError(t, err, ErrMalformed)
	}
}

func TestParseStatus(t *testing.T) {
	s, err := ParseStatus(bytes.NewReader(mustRead(t, "status_sleep.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if s.Pid == 0 || s.Tgid != s.Pid || s.State != 'S' || !s.HasUmask || s.Umask != 0o22 || s.Threads != 1 ||
		len(s.NSpid) != 1 || s.NSpid[0] != s.Pid || s.CapBnd == 0 || s.SigLimit == 0 || s.Other["VmRSS"] == "" {
		t.Errorf("%+v", s)
	}
	in := "Name:\ta b\nUmask:\t0077\nPid:\t5\nUid:\t1\t2\t3\t4\nGroups:\t10 20 \nNSpid:\t5\t1\nSigCgt:\t0000000000004a02\nSeccomp:\t2\nSeccomp_filters:\t1\nCoreDumping:\t1\n"
	s, err = ParseStatus(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "a b" || s.Umask != 0o77 || s.Uid != [4]uint32{1, 2, 3, 4} || len(s.Groups) != 2 || s.Groups[1] != 20 ||
		len(s.NSpid) != 2 || s.NSpid[1] != 1 || s.SigCgt != 0x4a02 || s.Seccomp != 2 || s.SeccompFilters != 1 || !s.CoreDumping {
		t.Errorf("%+v", s)
	}
	for _, bad := range []string{"Name:\tx\n", "Pid:\t1\n", in + "Uid:\t1 2\n", in + "SigBlk:\tzz\n", in + "noколон\n", in + "Umask:\t9\n"} {
		_, err := ParseStatus(strings.NewReader(bad))
		wantParseError(t, err, ErrMalformed)
	}
}

func TestParseFdInfoSamples(t *testing.T) {
	parse := func(s string) *FdInfo {
		t.Helper()
		fi, err := ParseFdInfo(strings.NewReader(s))
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	fi := parse(fdinfoEventfd)
	if fi.Flags != unix.O_CLOEXEC|unix.O_RDWR || fi.MntID != 17 || fi.Ino != 26 || fi.EventfdCount == nil || *fi.EventfdCount != 5 || !fi.EventfdSemaphore || fi.EventfdID != 2 {
		t.Errorf("eventfd %+v", fi)
	}
	fi = parse(fdinfoTimerfd)
	if tf := fi.Timerfd; tf == nil || tf.Clockid != 1 || tf.ValueSec != 99 || tf.ValueNsec != 999982071 || tf.IntervalSec != 1 || tf.IntervalNsec != 500 {
		t.Errorf("timerfd %+v", fi.Timerfd)
	}
	fi = parse(fdinfoSignalfd)
	if fi.Signalfd == nil || *fi.Signalfd != 1<<(unix.SIGUSR1-1)|1<<(unix.SIGUSR2-1) {
		t.Errorf("signalfd %+v", fi)
	}
	fi = parse(fdinfoInotify)
	if !fi.Inotify || len(fi.InotifyWatches) != 1 || !reflect.DeepEqual(fi.InotifyWatches[0], InotifyWatch{Wd: 1, Ino: 0x3c4a3, Sdev: 0xfe00000, Mask: unix.IN_CREATE,
		FhandleType: 1, Fhandle: []byte{0xa3, 0xc4, 0x03, 0, 0, 0, 0, 0}}) {
		t.Errorf("inotify %+v", fi)
	}
	if fi = parse(fdinfoFanotify); !fi.Fanotify {
		t.Errorf("fanotify %+v", fi)
	}
	fi = parse(fdinfoEpoll)
	want := []EpollTarget{{Tfd: 6, Events: 0x19, Data: 6, Ino: 0x1a, Sdev: 0x10}, {Tfd: 5, Events: 0x80000019, Data: 0x700000005, Ino: 0x1a, Sdev: 0x10}}
	if len(fi.Epoll) != 2 || fi.Epoll[0] != want[0] || fi.Epoll[1] != want[1] {
		t.Errorf("epoll %+v", fi.Epoll)
	}
	if fi = parse(fdinfoPidfd); fi.Raw["Pid"] != "3781" || fi.MntID != 4 {
		t.Errorf("pidfd %+v", fi)
	}
	if fi = parse(fdinfoUffd); fi.Raw["API"] != "aa:0:80000000000001ff" {
		t.Errorf("uffd %+v", fi)
	}
	for _, bad := range []string{"", "flags:\t02\n", fdinfoPipe + "eventfd-count: zz\n", fdinfoPipe + "tfd: 1 events: 2\n", fdinfoPipe + "it_value: (1 2)\n", fdinfoPipe + "inotify wd:1\n", "pos:\t0\nflags:\t9\n"} {
		_, err := ParseFdInfo(strings.NewReader(bad))
		wantParseError(t, err, ErrMalformed)
	}
}

func TestKind(t *testing.T) {
	for _, c := range []struct {
		target string
		kind   FdKind
		name   string
		ino    uint64
	}{
		{"/usr/bin/sleep", KindFile, "", 0},
		{"/memfd:hello world (deleted)", KindFile, "", 0},
		{"pipe:[8000]", KindPipe, "", 8000},
		{"socket:[7995]", KindSocket, "", 7995},
		{"anon_inode:[eventfd]", KindAnonInode, "eventfd", 0},
		{"anon_inode:inotify", KindAnonInode, "inotify", 0},
		{"net:[4026531840]", KindOther, "net", 4026531840},
		{"socket:[x]", KindUnknown, "", 0},
		{"", KindUnknown, "", 0},
	} {
		k, n, ino := Kind(c.target)
		if k != c.kind || n != c.name || ino != c.ino {
			t.Errorf("Kind(%q) = %v %q %d", c.target, k, n, ino)
		}
	}
}

func TestParseTimers(t *testing.T) {
	ts, err := ParseTimers(strings.NewReader(timersSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 || ts[0].Notify != "none" || ts[0].ClockID != unix.CLOCK_BOOTTIME || ts[1].SigevValue != 0x1234 ||
		ts[2] != (PosixTimer{ID: 0, Signal: 10, SigevValue: 0xdeadbeef, Notify: "signal", NotifyThreadID: true, NotifyPid: 4193, ClockID: 1}) {
		t.Errorf("%+v", ts)
	}
	var sb strings.Builder
	for i := range ts {
		sb.WriteString(ts[i].String())
	}
	if sb.String() != timersSample {
		t.Errorf("format %q", sb.String())
	}
	for _, bad := range []string{"ID: 1\n", "ID: 1\nsignal: 1/0\nnotify: bogus/pid.1\nClockID: 0\n", "signal: 1/0\n"} {
		_, err := ParseTimers(strings.NewReader(bad))
		wantParseError(t, err, ErrMalformed)
	}
}

func TestParseNetSockets(t *testing.T) {
	ss, err := ParseNetSockets(strings.NewReader(netUDPSample), unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 1 || ss[0].Local != netip.MustParseAddrPort("127.0.0.1:46058") || ss[0].Inode != 7995 || ss[0].State != 7 {
		t.Errorf("%+v", ss)
	}
	ss, err = ParseNetSockets(strings.NewReader(netUDP6Sample), unix.AF_INET6)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 1 || ss[0].Local != netip.MustParseAddrPort("[::1]:40000") || ss[0].UID != 1000 || ss[0].Inode != 8123 {
		t.Errorf("%+v", ss)
	}
	for _, name := range []string{"net_udp.txt", "net_tcp.txt"} {
		if _, err := ParseNetSockets(bytes.NewReader(mustRead(t, name)), unix.AF_INET); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseNetSockets(bytes.NewReader(mustRead(t, "net_tcp6.txt")), unix.AF_INET6); err != nil {
		t.Error(err)
	}
	_, err = ParseNetSockets(strings.NewReader(netUDPSample), unix.AF_INET6)
	wantParseError(t, err, ErrMalformed)
}

func TestParseAuxvAndPagemap(t *testing.T) {
	in := []AuxvEntry{{6, 4096}, {9, 0x401000}}
	b := FormatAuxv(in)
	got, err := ParseAuxv(append(b, make([]byte, 32)...))
	if err != nil || len(got) != 2 || got[1] != in[1] {
		t.Fatalf("%v %v", got, err)
	}
	if v, ok := AuxvValue(got, 6); !ok || v != 4096 {
		t.Error(v, ok)
	}
	_, err = ParseAuxv(b[:len(b)-16])
	wantParseError(t, err, ErrMalformed)
	_, err = ParseAuxv(b[:7])
	wantParseError(t, err, ErrMalformed)

	e := PagemapEntry(1<<63 | 1<<61 | 1<<56 | 1<<55 | 0x1234)
	if !e.Present() || e.Swapped() || !e.FileOrSharedAnon() || !e.Exclusive() || !e.SoftDirty() || e.UffdWP() || e.PFN() != 0x1234 || !e.Populated() {
		t.Errorf("%#x", uint64(e))
	}
	_, err = ParsePagemap(make([]byte, 9))
	wantParseError(t, err, ErrMalformed)
}

func TestParseChildrenPersonality(t *testing.T) {
	c, err := ParseChildren([]byte("12 34 "))
	if err != nil || len(c) != 2 || c[1] != 34 {
		t.Fatal(c, err)
	}
	if _, err := ParseChildren([]byte("1 x")); !errors.Is(err, ErrMalformed) {
		t.Error(err)
	}
	p, err := ParsePersonality([]byte("00040000\n"))
	if err != nil || p != 0x0040000 {
		t.Error(p, err)
	}
	if _, err := ParsePersonality([]byte("zz\n")); !errors.Is(err, ErrMalformed) {
		t.Error(err)
	}
}

// capReader records the largest read asked of it.
type capReader struct {
	r   io.Reader
	max int
}

func (c *capReader) Read(p []byte) (int, error) {
	c.max = max(c.max, len(p))
	return c.r.Read(p)
}

func TestSmallReadsSmaps(t *testing.T) {
	sample := mustRead(t, "smaps_sleep.txt")
	want, err := ParseSmaps(bytes.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	cr := &capReader{r: bytes.NewReader(sample)}
	got, err := ParseSmaps(smallReads{R: cr, N: smapsReadSize})
	if err != nil {
		t.Fatal(err)
	}
	if cr.max > smapsReadSize {
		t.Errorf("a read of %d bytes, want at most %d", cr.max, smapsReadSize)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsed in small reads:\n%+v\nwhole:\n%+v", got, want)
	}
}
